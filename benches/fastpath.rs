//! Per-packet cost of the sans-IO fast path: parse (outer Ethernet/IPv4/UDP/Geneve, the AWS
//! options, the inner 5-tuple), flow-table lookup and the in-place return rewrite, for 1, 1 000
//! and 100 000 flows. No DPDK: frames sit in memory, so this is the CPU cost per packet without the PMD.
//!
//! The frames use the same MAC and IP for the GWLB and the appliance, so turning a frame around
//! leaves it a valid input for the next round and the bench needs no copy per packet.
//!
//! Run: `cargo bench --bench fastpath`. Figures are in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowdog_core::build::{looped_fast_path, looped_frames};
use flowdog_core::Verdict;
use flowdog_wire::geneve::AwsOptions;
use flowdog_wire::{inner, EthernetFrame, GenevePacket, Ipv4Packet, UdpPacket};
use std::hint::black_box;
use std::net::Ipv4Addr;

const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn frames(flows: u32, size: usize) -> Vec<Vec<u8>> {
    looped_frames(flows, size, ADDR, MAC)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fastpath");
    for flows in [1u32, 1_000, 100_000] {
        let mut fr = frames(flows, 64);
        let mut fp = looped_fast_path(ADDR, MAC);
        g.throughput(Throughput::Elements(fr.len() as u64));
        g.bench_with_input(BenchmarkId::new("handle", flows), &flows, |b, _| {
            let mut now = 0u64;
            b.iter(|| {
                now += 1;
                for f in fr.iter_mut() {
                    let v = fp.handle(f, now, false);
                    debug_assert_eq!(v, Verdict::Transmit);
                    black_box(v);
                }
            })
        });
        assert_eq!(fp.counters.total_drops(), 0, "the bench frames must stay valid");
        let fr = frames(flows, 64);
        g.bench_with_input(BenchmarkId::new("parse_only", flows), &flows, |b, _| {
            b.iter(|| {
                for f in fr.iter() {
                    let eth = EthernetFrame::new_checked(&f[..]).unwrap();
                    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                    let gen = GenevePacket::new_checked(udp.payload()).unwrap();
                    let aws = AwsOptions::parse(gen.options()).unwrap();
                    black_box((aws, inner::summarize(gen.protocol(), gen.payload()).unwrap()));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
