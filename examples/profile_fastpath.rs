//! Runs the sans-IO fast path over in-memory frames, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/profile_fastpath 1000 200`
//! (flows, rounds). Prints packets handled and drops (which must be 0).

use flowdog_core::build::{GwlbFrame, Inner};
use flowdog_core::{FastPath, FastPathConfig, FlowTableConfig, Policy};
use std::net::{IpAddr, Ipv4Addr};

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let addr = Ipv4Addr::new(198, 18, 0, 2);
    let mac = [2, 0, 0, 0, 0, 2];
    let mut frames: Vec<Vec<u8>> = (0..flows)
        .map(|i| {
            let f = GwlbFrame {
                gwlb_mac: mac,
                appliance_mac: mac,
                gwlb_ip: addr,
                appliance_ip: addr,
                outer_src_port: 1024 + (i % 60000) as u16,
                outer_ttl: 64,
                vpc_endpoint_id: 1,
                attachment_id: 0,
                flow_cookie: i,
                inner: Inner {
                    src: IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)),
                    dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
                    protocol: if i % 2 == 0 { 6 } else { 17 },
                    src_port: 1024 + (i % 50000) as u16,
                    dst_port: 443,
                    tcp_flags: 0x10,
                    seq: 1,
                    ack: 1,
                    size: 64,
                },
            };
            let mut b = vec![0u8; f.len()];
            f.emit(&mut b);
            b
        })
        .collect();
    let mut fp = FastPath::new(
        FastPathConfig { ip: addr, mac, outer_ttl: 64, worker: 0, workers: 1, verify_ipv4_checksum: true },
        Policy::default(),
        FlowTableConfig { capacity: 262_144, tcp_idle: u64::MAX / 4, other_idle: u64::MAX / 4, closed: 1 },
    );
    for r in 0..rounds {
        for f in frames.iter_mut() {
            std::hint::black_box(fp.handle(f, r as u64, false));
        }
    }
    println!("handled {} packets, {} drops", flows as u64 * rounds as u64, fp.counters.total_drops());
}
