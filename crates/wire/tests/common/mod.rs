//! Shared by the property tests and the scapy cross-check: a GWLB frame builder that uses
//! only the crate's `Repr`s and setters, and a dissector that uses only its parsers.
//!
//! Both speak in "facts": `key=value` pairs with the same names as `scapy_frames.py`, so
//! that the Rust and the scapy view of a frame can be compared key by key.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::string::{String, ToString};
use std::vec::Vec;

use flowdog_wire::geneve::{self, AwsOptions};
use flowdog_wire::inner::{self, Fragment};
use flowdog_wire::{ethernet, ip_protocol, ipv4, ipv6, tcp, udp, Error};
use flowdog_wire::{EthernetAddress, EthernetFrame, GenevePacket, Icmpv4Packet, Icmpv6Packet};
use flowdog_wire::{Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

/// The upper layer of the inner packet.
#[derive(Debug, Clone)]
pub enum L4 {
    /// A TCP segment; its `payload_len` is taken from the inner payload.
    Tcp(tcp::Repr),
    /// A UDP datagram.
    Udp { src_port: u16, dst_port: u16 },
    /// An ICMP or ICMPv6 echo request, matching the inner IP version.
    Echo { ident: u16, seq_no: u16 },
}

/// Everything that varies in a GWLB frame.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    pub outer_ttl: u8,
    pub udp_src_port: u16,
    /// Whether the outer UDP checksum is filled in, or left 0 as gwlbtun sends it.
    pub udp_checksum: bool,
    pub vni: u32,
    pub vpc_endpoint_id: u64,
    pub attachment_id: u64,
    pub flow_cookie: u32,
    /// Options after the AWS ones: (class, type without the critical bit, critical, data).
    /// None of them is one of the three AWS options.
    pub extra_options: Vec<(u16, u8, bool, Vec<u8>)>,
    pub inner_src: IpAddr,
    pub inner_dst: IpAddr,
    pub inner_ttl: u8,
    pub l4: L4,
    pub payload: Vec<u8>,
}

fn v4(addr: IpAddr) -> Ipv4Addr {
    match addr {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("the spec mixes IP versions"),
    }
}

fn v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => panic!("the spec mixes IP versions"),
    }
}

impl FrameSpec {
    fn is_v6(&self) -> bool {
        self.inner_src.is_ipv6()
    }

    fn tcp_repr(&self) -> Option<tcp::Repr> {
        match &self.l4 {
            L4::Tcp(repr) => Some(tcp::Repr { payload_len: self.payload.len(), ..*repr }),
            _ => None,
        }
    }

    fn geneve_options(&self) -> Vec<u8> {
        let mut options = std::vec![0u8; geneve::AWS_OPTIONS_LEN];
        geneve::emit_aws_options(&mut options, self.vpc_endpoint_id, self.attachment_id, self.flow_cookie);
        for (class, type_, critical, data) in &self.extra_options {
            assert!(data.len().is_multiple_of(4) && data.len() <= 124);
            options.extend_from_slice(&class.to_be_bytes());
            options.push(type_ | if *critical { 0x80 } else { 0 });
            options.push((data.len() / 4) as u8);
            options.extend_from_slice(data);
        }
        options
    }

    fn critical(&self) -> bool {
        self.extra_options.iter().any(|o| o.2)
    }

    /// The upper-layer bytes, checksum included.
    fn l4_bytes(&self) -> (u8, Vec<u8>) {
        match &self.l4 {
            L4::Tcp(_) => {
                let repr = self.tcp_repr().unwrap();
                let mut out = std::vec![0u8; repr.buffer_len()];
                let mut packet = TcpPacket::new_unchecked(&mut out[..]);
                repr.emit(&mut packet);
                packet.payload_mut().copy_from_slice(&self.payload);
                match (self.inner_src, self.inner_dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => packet.fill_checksum_v4(s, d),
                    (s, d) => packet.fill_checksum_v6(&v6(s), &v6(d)),
                }
                (ip_protocol::TCP, out)
            }
            L4::Udp { src_port, dst_port } => {
                let repr = udp::Repr { src_port: *src_port, dst_port: *dst_port, payload_len: self.payload.len() };
                let mut out = std::vec![0u8; repr.buffer_len()];
                let mut packet = UdpPacket::new_unchecked(&mut out[..]);
                repr.emit(&mut packet);
                packet.payload_mut().copy_from_slice(&self.payload);
                match (self.inner_src, self.inner_dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => packet.fill_checksum_v4(s, d),
                    (s, d) => packet.fill_checksum_v6(&v6(s), &v6(d)),
                }
                (ip_protocol::UDP, out)
            }
            L4::Echo { ident, seq_no } => {
                let mut out = std::vec![0u8; 8 + self.payload.len()];
                out[8..].copy_from_slice(&self.payload);
                if self.is_v6() {
                    let mut packet = Icmpv6Packet::new_unchecked(&mut out[..]);
                    packet.set_msg_type(flowdog_wire::icmpv6::ECHO_REQUEST);
                    packet.set_code(0);
                    packet.set_echo_ident(*ident);
                    packet.set_echo_seq_no(*seq_no);
                    packet.fill_checksum(&v6(self.inner_src), &v6(self.inner_dst));
                    (ip_protocol::ICMPV6, out)
                } else {
                    let mut packet = Icmpv4Packet::new_unchecked(&mut out[..]);
                    packet.set_msg_type(flowdog_wire::icmpv4::ECHO_REQUEST);
                    packet.set_code(0);
                    packet.set_echo_ident(*ident);
                    packet.set_echo_seq_no(*seq_no);
                    packet.fill_checksum();
                    (ip_protocol::ICMP, out)
                }
            }
        }
    }

    fn inner_bytes(&self) -> Vec<u8> {
        let (protocol, l4) = self.l4_bytes();
        if self.is_v6() {
            let repr = ipv6::Repr {
                src_addr: v6(self.inner_src),
                dst_addr: v6(self.inner_dst),
                next_header: protocol,
                payload_len: l4.len(),
                hop_limit: self.inner_ttl,
            };
            let mut out = std::vec![0u8; repr.buffer_len()];
            let mut packet = Ipv6Packet::new_unchecked(&mut out[..]);
            repr.emit(&mut packet);
            packet.payload_mut().copy_from_slice(&l4);
            out
        } else {
            let repr = ipv4::Repr {
                src_addr: v4(self.inner_src),
                dst_addr: v4(self.inner_dst),
                protocol,
                payload_len: l4.len(),
                ttl: self.inner_ttl,
            };
            let mut out = std::vec![0u8; repr.buffer_len()];
            let mut packet = Ipv4Packet::new_unchecked(&mut out[..]);
            repr.emit(&mut packet);
            packet.payload_mut().copy_from_slice(&l4);
            out
        }
    }

    /// Builds the whole frame with the crate's emitters.
    pub fn build(&self) -> Vec<u8> {
        let inner = self.inner_bytes();
        let options = self.geneve_options();
        let geneve_repr = geneve::Repr {
            protocol: if self.is_v6() { 0x86dd } else { 0x0800 },
            vni: self.vni,
            oam: false,
            critical: self.critical(),
            options: &options,
        };
        let udp_repr = udp::Repr {
            src_port: self.udp_src_port,
            dst_port: geneve::UDP_PORT,
            payload_len: geneve_repr.buffer_len() + inner.len(),
        };
        let ip_repr = ipv4::Repr {
            src_addr: self.outer_src,
            dst_addr: self.outer_dst,
            protocol: ip_protocol::UDP,
            payload_len: udp_repr.buffer_len(),
            ttl: self.outer_ttl,
        };
        let eth_repr = ethernet::Repr {
            src_addr: EthernetAddress(self.eth_src),
            dst_addr: EthernetAddress(self.eth_dst),
            ethertype: flowdog_wire::EtherType::IPV4,
        };

        let mut frame = std::vec![0u8; eth_repr.buffer_len() + ip_repr.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth_repr.emit(&mut eth);
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip_repr.emit(&mut ip);
        let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
        udp_repr.emit(&mut udp);
        let mut gnv = GenevePacket::new_unchecked(udp.payload_mut());
        geneve_repr.emit(&mut gnv);
        gnv.payload_mut().copy_from_slice(&inner);
        if self.udp_checksum {
            udp.fill_checksum_v4(self.outer_src, self.outer_dst);
        }
        frame
    }

    /// What a correct dissector must find in [`FrameSpec::build`]'s output.
    pub fn facts(&self) -> Facts {
        let mut f = Facts::default();
        let inner_len = self.inner_bytes().len();
        let options = self.geneve_options();
        let udp_len = 8 + 8 + options.len() + inner_len;
        f.put("eth.dst", EthernetAddress(self.eth_dst));
        f.put("eth.src", EthernetAddress(self.eth_src));
        f.put("eth.type", 0x0800);
        f.put("ip.src", self.outer_src);
        f.put("ip.dst", self.outer_dst);
        f.put("ip.ttl", self.outer_ttl);
        f.put("ip.len", 20 + udp_len);
        f.put("ip.id", 0);
        f.put("ip.df", 0);
        f.put("ip.csum", 1);
        f.put("udp.sport", self.udp_src_port);
        f.put("udp.dport", geneve::UDP_PORT);
        f.put("udp.len", udp_len);
        f.put("udp.csum", 1);
        f.put("gnv.ver", 0);
        f.put("gnv.optlen", options.len() / 4);
        f.put("gnv.oam", 0);
        f.put("gnv.crit", u8::from(self.critical()));
        f.put("gnv.proto", if self.is_v6() { 0x86dd } else { 0x0800 });
        f.put("gnv.vni", self.vni);
        f.put("gnv.nopts", 3 + self.extra_options.len());
        f.put("aws.vpce", self.vpc_endpoint_id);
        f.put("aws.attach", self.attachment_id);
        f.put("aws.cookie", self.flow_cookie);
        f.put("aws.unknown", self.extra_options.len());

        let (protocol, l4) = self.l4_bytes();
        let l4_offset = if self.is_v6() { 40 } else { 20 };
        f.put("in.ver", if self.is_v6() { 6 } else { 4 });
        f.put("in.src", self.inner_src);
        f.put("in.dst", self.inner_dst);
        f.put("in.proto", protocol);
        f.put("in.l4off", l4_offset);
        f.put("in.len", inner_len);
        f.put("in.frag", "none");
        if self.is_v6() {
            f.put("in6.tc", 0);
            f.put("in6.flow", 0);
            f.put("in6.hlim", self.inner_ttl);
        } else {
            f.put("in4.csum", 1);
            f.put("in4.id", 0);
            f.put("in4.df", 0);
            f.put("in4.mf", 0);
            f.put("in4.fragoff", 0);
            f.put("in4.ttl", self.inner_ttl);
        }
        match &self.l4 {
            L4::Tcp(_) => {
                let r = self.tcp_repr().unwrap();
                f.put("in.sport", r.src_port);
                f.put("in.dport", r.dst_port);
                f.put("in.flags", r.flags);
                f.put("tcp.seq", r.seq_number);
                f.put("tcp.ack", r.ack_number);
                f.put("tcp.flags", r.flags);
                f.put("tcp.win", r.window_len);
                f.put("tcp.hlen", r.header_len());
                f.put("tcp.mss", opt(r.max_seg_size));
                f.put("tcp.ws", opt(r.window_scale));
                f.put("tcp.sackok", u8::from(r.sack_permitted));
                f.put("tcp.ts", opt(r.timestamp.map(|(a, b)| format!("{a},{b}"))));
                f.put("tcp.sack", "none");
                f.put("tcp.csum", 1);
                f.put("tcp.plen", r.payload_len);
            }
            L4::Udp { src_port, dst_port } => {
                f.put("in.sport", src_port);
                f.put("in.dport", dst_port);
                f.put("in.flags", 0);
                f.put("iudp.len", l4.len());
                f.put("iudp.csum", 1);
            }
            L4::Echo { ident, seq_no } => {
                f.put("in.sport", 0);
                f.put("in.dport", 0);
                f.put("in.flags", 0);
                f.put("icmp.type", if self.is_v6() { 128 } else { 8 });
                f.put("icmp.code", 0);
                f.put("icmp.id", ident);
                f.put("icmp.seq", seq_no);
                f.put("icmp.csum", 1);
            }
        }
        f
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// Named fields of a frame, as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts(pub BTreeMap<String, String>);

impl Facts {
    pub fn put(&mut self, key: &str, value: impl ToString) {
        self.0.insert(key.to_string(), value.to_string());
    }

    fn err(&mut self, layer: &str, error: Error) {
        self.put(&format!("{layer}.err"), format!("{error:?}").to_lowercase());
    }

    /// Parses `key=value` tokens separated by spaces.
    pub fn from_line(line: &str) -> Facts {
        let mut f = Facts::default();
        for token in line.split_whitespace() {
            let (key, value) = token.split_once('=').unwrap_or_else(|| panic!("token without '=': {token}"));
            f.put(key, value);
        }
        f
    }

    pub fn to_line(&self) -> String {
        let tokens: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tokens.join(" ")
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The keys of `expected` whose value here differs, as readable lines.
    pub fn mismatches(&self, expected: &Facts) -> Vec<String> {
        expected
            .0
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "name" | "hex"))
            .filter(|(k, v)| self.get(k) != Some(v.as_str()))
            .map(|(k, v)| format!("{k}: expected {v}, got {}", self.get(k).unwrap_or("nothing")))
            .collect()
    }
}

/// Walks a GWLB frame with the crate's parsers and records what it finds.
///
/// A layer that fails records `<layer>.err` and nothing below it.
pub fn dissect(bytes: &[u8]) -> Facts {
    let mut f = Facts::default();
    let frame = match EthernetFrame::new_checked(bytes) {
        Ok(frame) => frame,
        Err(e) => {
            f.err("eth", e);
            return f;
        }
    };
    f.put("eth.dst", frame.dst_addr());
    f.put("eth.src", frame.src_addr());
    f.put("eth.type", frame.ethertype().0);

    let ip = match Ipv4Packet::new_checked(frame.payload()) {
        Ok(ip) => ip,
        Err(e) => {
            f.err("ip", e);
            return f;
        }
    };
    f.put("ip.src", ip.src_addr());
    f.put("ip.dst", ip.dst_addr());
    f.put("ip.ttl", ip.ttl());
    f.put("ip.len", ip.total_len());
    f.put("ip.id", ip.ident());
    f.put("ip.df", u8::from(ip.dont_frag()));
    f.put("ip.csum", u8::from(ip.verify_checksum()));

    let udp = match UdpPacket::new_checked(ip.payload()) {
        Ok(udp) => udp,
        Err(e) => {
            f.err("udp", e);
            return f;
        }
    };
    f.put("udp.sport", udp.src_port());
    f.put("udp.dport", udp.dst_port());
    f.put("udp.len", udp.len());
    f.put("udp.csum", u8::from(udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr())));

    let gnv = match GenevePacket::new_checked(udp.payload()) {
        Ok(gnv) => gnv,
        Err(e) => {
            f.err("gnv", e);
            return f;
        }
    };
    f.put("gnv.ver", gnv.version());
    f.put("gnv.optlen", gnv.options_len() / 4);
    f.put("gnv.oam", u8::from(gnv.oam()));
    f.put("gnv.crit", u8::from(gnv.critical()));
    f.put("gnv.proto", gnv.protocol());
    f.put("gnv.vni", gnv.vni());
    f.put("gnv.nopts", gnv.options_iter().filter(Result::is_ok).count());
    match AwsOptions::parse(gnv.options()) {
        Ok(aws) => {
            f.put("aws.vpce", aws.vpc_endpoint_id);
            f.put("aws.attach", aws.attachment_id);
            f.put("aws.cookie", aws.flow_cookie);
            f.put("aws.unknown", aws.unknown);
        }
        Err(e) => f.err("aws", e),
    }
    dissect_inner(&mut f, gnv.protocol(), gnv.payload());
    f
}

fn dissect_inner(f: &mut Facts, protocol: u16, packet: &[u8]) {
    let summary = match inner::summarize(protocol, packet) {
        Ok(summary) => summary,
        Err(e) => {
            f.err("in", e);
            return;
        }
    };
    f.put("in.ver", summary.ip_version);
    f.put("in.src", summary.src_addr());
    f.put("in.dst", summary.dst_addr());
    f.put("in.proto", summary.protocol);
    f.put("in.l4off", summary.l4_offset);
    f.put("in.len", summary.total_len);
    f.put(
        "in.frag",
        match summary.fragment {
            Fragment::None => "none",
            Fragment::First => "first",
            Fragment::Later => "later",
        },
    );
    f.put("in.sport", summary.src_port);
    f.put("in.dport", summary.dst_port);
    f.put("in.flags", summary.tcp_flags);

    let (src, dst) = (summary.src_addr(), summary.dst_addr());
    if summary.ip_version == 4 {
        let ip = Ipv4Packet::new_checked(packet).unwrap();
        f.put("in4.csum", u8::from(ip.verify_checksum()));
        f.put("in4.id", ip.ident());
        f.put("in4.df", u8::from(ip.dont_frag()));
        f.put("in4.mf", u8::from(ip.more_frags()));
        f.put("in4.fragoff", ip.frag_offset());
        f.put("in4.ttl", ip.ttl());
    } else {
        let ip = Ipv6Packet::new_checked(packet).unwrap();
        f.put("in6.tc", ip.traffic_class());
        f.put("in6.flow", ip.flow_label());
        f.put("in6.hlim", ip.hop_limit());
        if let Some(frag) = ip.upper_layer().unwrap().fragment {
            f.put("in6.fragoff", frag.offset);
            f.put("in6.more", u8::from(frag.more));
            f.put("in6.ident", frag.ident);
        }
    }
    if summary.fragment != Fragment::None {
        return;
    }
    let l4 = &packet[summary.l4_offset..summary.total_len];
    match summary.protocol {
        ip_protocol::TCP => dissect_tcp(f, l4, src, dst),
        ip_protocol::UDP => {
            let datagram = match UdpPacket::new_checked(l4) {
                Ok(d) => d,
                Err(e) => return f.err("iudp", e),
            };
            f.put("iudp.len", datagram.len());
            let ok = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => datagram.verify_checksum_v4(s, d),
                (s, d) => datagram.verify_checksum_v6(&v6(s), &v6(d)),
            };
            f.put("iudp.csum", u8::from(ok));
        }
        ip_protocol::ICMP => {
            let Ok(icmp) = Icmpv4Packet::new_checked(l4) else {
                return f.put("icmp.err", "truncated");
            };
            f.put("icmp.type", icmp.msg_type());
            f.put("icmp.code", icmp.code());
            f.put("icmp.id", icmp.echo_ident());
            f.put("icmp.seq", icmp.echo_seq_no());
            f.put("icmp.csum", u8::from(icmp.verify_checksum()));
        }
        ip_protocol::ICMPV6 => {
            let Ok(icmp) = Icmpv6Packet::new_checked(l4) else {
                return f.put("icmp.err", "truncated");
            };
            f.put("icmp.type", icmp.msg_type());
            f.put("icmp.code", icmp.code());
            f.put("icmp.id", icmp.echo_ident());
            f.put("icmp.seq", icmp.echo_seq_no());
            f.put("icmp.csum", u8::from(icmp.verify_checksum(&v6(src), &v6(dst))));
        }
        _ => {}
    }
}

fn dissect_tcp(f: &mut Facts, l4: &[u8], src: IpAddr, dst: IpAddr) {
    let segment = match TcpPacket::new_checked(l4) {
        Ok(s) => s,
        Err(e) => return f.err("tcp", e),
    };
    f.put("tcp.seq", segment.seq_number());
    f.put("tcp.ack", segment.ack_number());
    f.put("tcp.flags", segment.flags());
    f.put("tcp.win", segment.window_len());
    f.put("tcp.hlen", segment.header_len());
    f.put("tcp.plen", segment.payload().len());
    let ok = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => segment.verify_checksum_v4(s, d),
        (s, d) => segment.verify_checksum_v6(&v6(s), &v6(d)),
    };
    f.put("tcp.csum", u8::from(ok));
    match tcp::Repr::parse(&segment) {
        Ok(r) => {
            f.put("tcp.mss", opt(r.max_seg_size));
            f.put("tcp.ws", opt(r.window_scale));
            f.put("tcp.sackok", u8::from(r.sack_permitted));
            f.put("tcp.ts", opt(r.timestamp.map(|(a, b)| format!("{a},{b}"))));
        }
        Err(e) => f.err("tcpopt", e),
    }
    let mut sack = Vec::new();
    for option in segment.options_iter().flatten() {
        if let tcp::TcpOption::SackRange(blocks) = option {
            sack.extend(blocks.iter().flatten().map(|(l, r)| format!("{l}-{r}")));
        }
    }
    f.put("tcp.sack", if sack.is_empty() { "none".to_string() } else { sack.join(";") });
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit")).collect()
}
