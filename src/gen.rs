//! `flowdog gen pcap`: GWLB-style traffic for replay (pktgen-dpdk on AWS, testpmd's net_pcap here).
//!
//! Every flow gets a per-flow outer UDP source port (as GWLB hashes the inner flow), the three
//! AWS options with a random per-flow cookie (the same both ways), and inner TCP or UDP packets
//! in both directions. Frames go client→server, server→client, round-robin over the flows, so
//! a replay touches every flow early and keeps touching all of them.

use crate::pcap::{PcapWriter, LINKTYPE_ETHERNET};
use anyhow::{bail, Context, Result};
use flowdog_core::build::{GwlbFrame, Inner};
use flowdog_wire::ip_protocol;
use flowdog_wire::tcp::flags;
use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSpec {
    pub flows: u32,
    /// Inner packet size in bytes (IP header included).
    pub size: usize,
    /// Fraction of flows with an IPv6 inner packet, 0.0–1.0.
    pub ipv6_share: f64,
    /// Fraction of flows that are UDP; the rest are TCP.
    pub udp_share: f64,
    /// Frames per flow, alternating direction (at least 2: one each way).
    pub packets_per_flow: u32,
    pub gwlb_ip: Ipv4Addr,
    pub appliance_ip: Ipv4Addr,
    pub gwlb_mac: [u8; 6],
    pub appliance_mac: [u8; 6],
    pub vpc_endpoint_id: u64,
    pub seed: u64,
}

/// splitmix64: deterministic, so the same command writes the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Flow {
    client: IpAddr,
    server: IpAddr,
    client_port: u16,
    server_port: u16,
    protocol: u8,
    cookie: u32,
    outer_port_c2s: u16,
    outer_port_s2c: u16,
}

fn make_flow(i: u32, spec: &GenSpec, rng: &mut Rng) -> Flow {
    let v6 = rng.unit() < spec.ipv6_share;
    let udp = rng.unit() < spec.udp_share;
    // Clients in 198.18.128.0/17, servers in 198.19.0.0/16 (RFC 2544 benchmarking space);
    // IPv6 in 2001:db8::/32 (documentation space). Nothing here routes anywhere.
    let (client, server) = if v6 {
        let c = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, (i >> 16) as u16, i as u16);
        let s = Ipv6Addr::new(0x2001, 0xdb8, 0x5, 0, 0, 0, 0, (i % 251) as u16 + 1);
        (IpAddr::V6(c), IpAddr::V6(s))
    } else {
        let c = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + (i % 32_000) + 1);
        let s = Ipv4Addr::new(198, 19, (i % 250) as u8, 10);
        (IpAddr::V4(c), IpAddr::V4(s))
    };
    let client_port = 1024 + ((i / 32_000) % 60_000) as u16 + (i % 7) as u16;
    let (protocol, server_port) = if udp {
        (ip_protocol::UDP, [53u16, 123, 5001][i as usize % 3])
    } else {
        (ip_protocol::TCP, [80u16, 443][i as usize % 2])
    };
    let h = rng.next();
    Flow {
        client,
        server,
        client_port,
        server_port,
        protocol,
        cookie: h as u32,
        // GWLB picks the outer source port per flow and direction from a hash; the gateway's
        // exact choice is undocumented, so the generator spreads it the same way.
        outer_port_c2s: 1024 + ((h >> 32) as u16 % 64_000),
        outer_port_s2c: 1024 + ((h >> 48) as u16 % 64_000),
    }
}

/// Writes the pcap; returns how many frames it wrote.
pub fn write_pcap(spec: &GenSpec, out: &Path) -> Result<u64> {
    if spec.flows == 0 {
        bail!("--flows: must be at least 1");
    }
    if !(0.0..=1.0).contains(&spec.ipv6_share) {
        bail!("--ipv6-share: {} is outside 0.0..=1.0", spec.ipv6_share);
    }
    if spec.size > 8500 {
        bail!("--size: {} exceeds GWLB's 8500-byte inner MTU", spec.size);
    }
    let file = std::fs::File::create(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut w = PcapWriter::new(BufWriter::with_capacity(1 << 20, file), LINKTYPE_ETHERNET)?;
    let mut rng = Rng(spec.seed ^ 0x0066_6c6f_7764_6f67);
    let flows: Vec<Flow> = (0..spec.flows).map(|i| make_flow(i, spec, &mut rng)).collect();
    let mut buf = vec![0u8; 9216];
    let mut n = 0u64;
    for round in 0..spec.packets_per_flow.max(2) {
        for f in &flows {
            let c2s = round % 2 == 0;
            let seq_base = f.cookie;
            let (src, dst, sp, dp, outer) = if c2s {
                (f.client, f.server, f.client_port, f.server_port, f.outer_port_c2s)
            } else {
                (f.server, f.client, f.server_port, f.client_port, f.outer_port_s2c)
            };
            let frame = GwlbFrame {
                gwlb_mac: spec.gwlb_mac,
                appliance_mac: spec.appliance_mac,
                gwlb_ip: spec.gwlb_ip,
                appliance_ip: spec.appliance_ip,
                outer_src_port: outer,
                outer_ttl: 64,
                vpc_endpoint_id: spec.vpc_endpoint_id,
                attachment_id: 0,
                flow_cookie: f.cookie,
                inner: Inner {
                    src,
                    dst,
                    protocol: f.protocol,
                    src_port: sp,
                    dst_port: dp,
                    tcp_flags: if c2s { flags::PSH | flags::ACK } else { flags::ACK },
                    seq: seq_base.wrapping_add(round),
                    ack: seq_base.wrapping_add(round),
                    size: spec.size,
                },
            };
            let len = frame.emit(&mut buf);
            // One frame per microsecond.
            w.write(std::time::Duration::from_micros(n), &buf[..len])?;
            n += 1;
        }
    }
    w.flush().with_context(|| format!("{}: write failed", out.display()))?;
    Ok(n)
}
