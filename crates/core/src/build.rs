//! Builds GWLB frames as GWLB sends them: outer Ethernet / IPv4 / UDP 6081 / Geneve with the
//! three AWS options / an inner IPv4 or IPv6 packet (TCP, UDP or ICMP echo). Used by the
//! traffic generator (`flowdog gen pcap`), the benches and the tests. Writes into the caller's
//! buffer; allocates nothing.

use core::net::{IpAddr, Ipv4Addr};
use flowdog_wire::{
    ethernet, geneve, icmpv4, icmpv6, ip_protocol, ipv4, ipv6, tcp, udp, EtherType, EthernetFrame, GenevePacket,
    Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

/// The inner packet.
#[derive(Debug, Clone, Copy)]
pub struct Inner {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP, UDP, ICMP (with IPv4) or ICMPv6 (with IPv6): the latter two as echo requests.
    pub protocol: u8,
    /// Ports; for ICMP echo, `src_port` is the identifier and `dst_port` the sequence number.
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Total length of the inner IP packet (grown to the minimum the headers need).
    pub size: usize,
}

/// One GWLB frame.
#[derive(Debug, Clone, Copy)]
pub struct GwlbFrame {
    pub gwlb_mac: [u8; 6],
    pub appliance_mac: [u8; 6],
    pub gwlb_ip: Ipv4Addr,
    pub appliance_ip: Ipv4Addr,
    pub outer_src_port: u16,
    pub outer_ttl: u8,
    pub vpc_endpoint_id: u64,
    pub attachment_id: u64,
    pub flow_cookie: u32,
    pub inner: Inner,
}

/// Outer Ethernet + IPv4 + UDP + Geneve with the AWS options.
pub const ENCAP_LEN: usize = 14 + OUTER_LEN;

/// The headers GWLB puts in front of an inner packet, Ethernet excluded: outer IPv4, UDP to
/// 6081 and Geneve with the three AWS options.
#[derive(Debug, Clone, Copy)]
pub struct Encap {
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub ttl: u8,
    pub vpc_endpoint_id: u64,
    pub attachment_id: u64,
    pub flow_cookie: u32,
}

/// Outer IPv4 + UDP + Geneve with the AWS options: 68 bytes (gwlb-facts.md §6).
pub const OUTER_LEN: usize = 20 + 8 + 8 + geneve::AWS_OPTIONS_LEN;

impl Encap {
    /// Writes the headers into `buf` (exactly [`OUTER_LEN`] bytes) for an inner packet of
    /// `inner_len` bytes whose Geneve protocol type is `protocol`. The UDP checksum is 0 (none,
    /// which IPv4 allows); a caller that has the payload in place may fill it afterwards.
    pub fn emit(&self, buf: &mut [u8], protocol: u16, inner_len: usize) {
        let buf = &mut buf[..OUTER_LEN];
        let udp_len = 8 + 8 + geneve::AWS_OPTIONS_LEN + inner_len;
        ipv4::Repr {
            src_addr: self.src_ip,
            dst_addr: self.dst_ip,
            protocol: ip_protocol::UDP,
            payload_len: udp_len,
            ttl: self.ttl,
        }
        .emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        let mut opts = [0u8; geneve::AWS_OPTIONS_LEN];
        geneve::emit_aws_options(&mut opts, self.vpc_endpoint_id, self.attachment_id, self.flow_cookie);
        let g = geneve::Repr { protocol, vni: 0, oam: false, critical: false, options: &opts };
        g.emit(&mut GenevePacket::new_unchecked(&mut buf[28..]));
        let mut u = UdpPacket::new_unchecked(&mut buf[20..]);
        udp::Repr { src_port: self.src_port, dst_port: geneve::UDP_PORT, payload_len: udp_len - 8 }.emit(&mut u);
        u.set_checksum(0);
    }
}

impl Inner {
    fn header_len(&self) -> usize {
        let ip = if self.src.is_ipv4() { 20 } else { 40 };
        ip + match self.protocol {
            ip_protocol::TCP => 20,
            _ => 8,
        }
    }

    /// The inner packet's length once built.
    pub fn len(&self) -> usize {
        self.size.max(self.header_len())
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl GwlbFrame {
    /// The whole frame's length.
    pub fn len(&self) -> usize {
        ENCAP_LEN + self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the frame into `buf` and returns its length. Panics if `buf` is too short
    /// (a caller bug: size the buffer with [`GwlbFrame::len`]).
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let len = self.len();
        let buf = &mut buf[..len];
        let inner_len = self.inner.len();
        ethernet::Repr {
            src_addr: ethernet::Address(self.gwlb_mac),
            dst_addr: ethernet::Address(self.appliance_mac),
            ethertype: EtherType::IPV4,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut buf[..14]));
        let protocol = if self.inner.src.is_ipv4() { EtherType::IPV4.0 } else { EtherType::IPV6.0 };
        Encap {
            src_ip: self.gwlb_ip,
            dst_ip: self.appliance_ip,
            src_port: self.outer_src_port,
            ttl: self.outer_ttl,
            vpc_endpoint_id: self.vpc_endpoint_id,
            attachment_id: self.attachment_id,
            flow_cookie: self.flow_cookie,
        }
        .emit(&mut buf[14..14 + OUTER_LEN], protocol, inner_len);
        self.inner.emit(&mut buf[ENCAP_LEN..]);
        let mut u = UdpPacket::new_unchecked(&mut buf[34..]);
        u.fill_checksum_v4(self.gwlb_ip, self.appliance_ip);
        len
    }
}

impl Inner {
    /// Writes the inner IP packet into `buf` (exactly [`Inner::len`] bytes).
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let len = self.len();
        let buf = &mut buf[..len];
        let ip_len = if self.src.is_ipv4() { 20 } else { 40 };
        let l4_len = len - ip_len;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                ipv4::Repr { src_addr: s, dst_addr: d, protocol: self.protocol, payload_len: l4_len, ttl: 64 }
                    .emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                ipv6::Repr { src_addr: s, dst_addr: d, next_header: self.protocol, payload_len: l4_len, hop_limit: 64 }
                    .emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]))
            }
            _ => panic!("inner source and destination must be the same IP version"),
        }
        let l4 = &mut buf[ip_len..];
        match self.protocol {
            ip_protocol::TCP => {
                let r = tcp::Repr {
                    src_port: self.src_port,
                    dst_port: self.dst_port,
                    flags: self.tcp_flags,
                    seq_number: self.seq,
                    ack_number: self.ack,
                    window_len: 64240,
                    max_seg_size: None,
                    window_scale: None,
                    sack_permitted: false,
                    timestamp: None,
                    payload_len: l4_len - 20,
                };
                let mut t = TcpPacket::new_unchecked(&mut l4[..]);
                r.emit(&mut t);
                fill_payload(t.payload_mut());
                match (self.src, self.dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => t.fill_checksum_v4(s, d),
                    (IpAddr::V6(s), IpAddr::V6(d)) => t.fill_checksum_v6(&s, &d),
                    _ => unreachable!("checked above"),
                }
            }
            ip_protocol::UDP => {
                let mut u = UdpPacket::new_unchecked(&mut l4[..]);
                udp::Repr { src_port: self.src_port, dst_port: self.dst_port, payload_len: l4_len - 8 }.emit(&mut u);
                fill_payload(u.payload_mut());
                match (self.src, self.dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => u.fill_checksum_v4(s, d),
                    (IpAddr::V6(s), IpAddr::V6(d)) => u.fill_checksum_v6(&s, &d),
                    _ => unreachable!("checked above"),
                }
            }
            _ => {
                // ICMP echo request: type, code, checksum, identifier, sequence number, data.
                fill_payload(&mut l4[8..]);
                l4[4..6].copy_from_slice(&self.src_port.to_be_bytes());
                l4[6..8].copy_from_slice(&self.dst_port.to_be_bytes());
                match (self.src, self.dst) {
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        let mut p = icmpv6::Packet::new_unchecked(&mut l4[..]);
                        p.set_msg_type(icmpv6::ECHO_REQUEST);
                        p.set_code(0);
                        p.fill_checksum(&s, &d);
                    }
                    _ => {
                        let mut p = icmpv4::Packet::new_unchecked(&mut l4[..]);
                        p.set_msg_type(icmpv4::ECHO_REQUEST);
                        p.set_code(0);
                        p.fill_checksum();
                    }
                }
            }
        }
        len
    }
}

fn fill_payload(p: &mut [u8]) {
    for (i, b) in p.iter_mut().enumerate() {
        *b = b"flowdog-"[i % 8];
    }
}

/// A one-worker fast path for [`looped_frames`] (the same `ip` and `mac`), with allow-all policy,
/// timeouts that never expire and room for 262 144 flows: what the benches and profiles run.
pub fn looped_fast_path(ip: Ipv4Addr, mac: [u8; 6]) -> crate::FastPath {
    crate::FastPath::new(
        crate::FastPathConfig {
            ip,
            mac,
            outer_ttl: 64,
            worker: 0,
            workers: 1,
            verify_ipv4_checksum: true,
            control: false,
        },
        crate::Policy::default(),
        crate::FlowTableConfig { capacity: 262_144, tcp_idle: u64::MAX / 4, other_idle: u64::MAX / 4, closed: 1 },
    )
}

/// Frames of `flows` flows (80% IPv4, 20% IPv6; TCP and UDP alternating; inner packets of
/// `size` bytes) for benches and profiling. The GWLB and the appliance share one MAC and one IP
/// (`ip`, `mac`), so a frame the fast path turns around is valid input again and a bench can
/// loop over the same buffers without copying them.
pub fn looped_frames(flows: u32, size: usize, ip: Ipv4Addr, mac: [u8; 6]) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|i| {
            let (src, dst): (IpAddr, IpAddr) = if i % 5 == 4 {
                let s = core::net::Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, (i >> 16) as u16, i as u16);
                (s.into(), core::net::Ipv6Addr::LOCALHOST.into())
            } else {
                (Ipv4Addr::from(0xc612_0000 + i).into(), Ipv4Addr::new(198, 19, 0, 1).into())
            };
            let f = GwlbFrame {
                gwlb_mac: mac,
                appliance_mac: mac,
                gwlb_ip: ip,
                appliance_ip: ip,
                outer_src_port: 1024 + (i % 60000) as u16,
                outer_ttl: 64,
                vpc_endpoint_id: 1,
                attachment_id: 0,
                flow_cookie: i,
                inner: Inner {
                    src,
                    dst,
                    protocol: if i % 2 == 0 { ip_protocol::TCP } else { ip_protocol::UDP },
                    src_port: 1024 + (i % 50000) as u16,
                    dst_port: 443,
                    tcp_flags: 0x10,
                    seq: 1,
                    ack: 1,
                    size,
                },
            };
            let mut b = vec![0u8; f.len()];
            f.emit(&mut b);
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowdog_wire::geneve::AwsOptions;
    use flowdog_wire::inner::summarize;

    #[test]
    fn built_frames_parse_back() {
        for (src, dst, proto) in [
            ("198.18.0.10", "198.19.0.20", ip_protocol::TCP),
            ("198.18.0.10", "198.19.0.20", ip_protocol::UDP),
            ("198.18.0.10", "198.19.0.20", ip_protocol::ICMP),
            ("2001:db8::1", "2001:db8::2", ip_protocol::TCP),
            ("2001:db8::1", "2001:db8::2", ip_protocol::ICMPV6),
        ] {
            let f = GwlbFrame {
                gwlb_mac: [2, 0, 0, 0, 0, 1],
                appliance_mac: [2, 0, 0, 0, 0, 2],
                gwlb_ip: "198.18.0.1".parse().unwrap(),
                appliance_ip: "198.18.0.2".parse().unwrap(),
                outer_src_port: 4242,
                outer_ttl: 64,
                vpc_endpoint_id: 0x0123456789abcdef,
                attachment_id: 0,
                flow_cookie: 0xdeadbeef,
                inner: Inner {
                    src: src.parse().unwrap(),
                    dst: dst.parse().unwrap(),
                    protocol: proto,
                    src_port: 40000,
                    dst_port: 80,
                    tcp_flags: 0x18,
                    seq: 1,
                    ack: 2,
                    size: 200,
                },
            };
            let mut buf = [0u8; 512];
            let n = f.emit(&mut buf);
            assert_eq!(n, ENCAP_LEN + 200);
            let eth = EthernetFrame::new_checked(&buf[..n]).unwrap();
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(u.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
            let g = GenevePacket::new_checked(u.payload()).unwrap();
            let o = AwsOptions::parse(g.options()).unwrap();
            assert_eq!((o.vpc_endpoint_id, o.flow_cookie), (0x0123456789abcdef, 0xdeadbeef));
            let s = summarize(g.protocol(), g.payload()).unwrap();
            assert_eq!(s.protocol, proto);
            assert_eq!(s.total_len, 200);
        }
    }
}
