//! Entry points for the fuzz target in `fuzz/` and the no-panic property tests.
//!
//! Each function takes arbitrary bytes, goes through `new_checked`, calls every getter, and
//! walks down to the next layer. Where a `Repr` parses, it is emitted again and re-parsed,
//! and the assertions check that nothing was lost. Any panic here is a bug in this crate.

use core::hint::black_box;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::geneve::AwsOptions;
use crate::{arp, ethernet, geneve, inner, ip_protocol, ipv4, ipv6, tcp, udp};
use crate::{ArpPacket, EtherType, EthernetFrame, GenevePacket, Icmpv4Packet, Icmpv6Packet};
use crate::{Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

/// The addresses a transport checksum is computed with.
#[derive(Clone, Copy)]
enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// Parses an Ethernet frame and everything in it.
pub fn parse_frame(data: &[u8]) {
    let Ok(frame) = EthernetFrame::new_checked(data) else {
        return;
    };
    black_box((frame.dst_addr(), frame.src_addr(), frame.ethertype()));
    black_box(frame.dst_addr().is_multicast() | frame.dst_addr().is_broadcast());
    if let Ok(repr) = ethernet::Repr::parse(&frame) {
        let mut out = [0u8; ethernet::HEADER_LEN];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
        assert_eq!(&out[..], &data[..ethernet::HEADER_LEN]);
    }
    match frame.ethertype() {
        EtherType::ARP => parse_arp(frame.payload()),
        EtherType::IPV4 => parse_ipv4(frame.payload()),
        EtherType::IPV6 => parse_ipv6(frame.payload()),
        _ => {}
    }
}

/// Parses an ARP packet.
pub fn parse_arp(data: &[u8]) {
    let Ok(packet) = ArpPacket::new_checked(data) else {
        return;
    };
    black_box((packet.hardware_type(), packet.protocol_type()));
    black_box((packet.hardware_len(), packet.protocol_len(), packet.operation()));
    black_box((packet.source_hardware_addr(), packet.source_protocol_addr()));
    black_box((packet.target_hardware_addr(), packet.target_protocol_addr()));
    if let Ok(repr) = arp::Repr::parse(&packet) {
        let mut out = [0u8; arp::PACKET_LEN];
        repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
        assert_eq!(&out[..], &data[..arp::PACKET_LEN]);
    }
}

/// Parses an IPv4 packet and its UDP (and so Geneve), TCP or ICMP payload.
pub fn parse_ipv4(data: &[u8]) {
    let Ok(packet) = Ipv4Packet::new_checked(data) else {
        return;
    };
    black_box((packet.version(), packet.header_len(), packet.dscp_ecn()));
    black_box((packet.total_len(), packet.ident(), packet.dont_frag()));
    black_box((packet.more_frags(), packet.frag_offset(), packet.is_fragment()));
    black_box((packet.ttl(), packet.protocol(), packet.checksum()));
    black_box((packet.src_addr(), packet.dst_addr(), packet.options()));
    black_box(packet.verify_checksum());
    if let Ok(repr) = ipv4::Repr::parse(&packet) {
        let mut out = [0u8; ipv4::HEADER_LEN];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
        let emitted = Ipv4Packet::new_unchecked(&out[..]);
        assert!(emitted.verify_checksum());
        assert_eq!(usize::from(emitted.total_len()), repr.buffer_len());
        assert_eq!((emitted.src_addr(), emitted.dst_addr()), (repr.src_addr, repr.dst_addr));
    }
    if packet.frag_offset() != 0 {
        return;
    }
    let addrs = Addrs::V4(packet.src_addr(), packet.dst_addr());
    match packet.protocol() {
        ip_protocol::UDP => parse_udp(packet.payload(), addrs),
        ip_protocol::TCP => parse_tcp(packet.payload(), addrs),
        ip_protocol::ICMP => parse_icmpv4(packet.payload()),
        _ => {}
    }
}

/// Parses an IPv6 packet, walks its extension headers and parses what follows.
pub fn parse_ipv6(data: &[u8]) {
    let Ok(packet) = Ipv6Packet::new_checked(data) else {
        return;
    };
    black_box((packet.version(), packet.traffic_class(), packet.flow_label()));
    black_box((packet.payload_len(), packet.next_header(), packet.hop_limit()));
    black_box((packet.src_addr(), packet.dst_addr(), packet.payload()));
    if let Ok(repr) = ipv6::Repr::parse(&packet) {
        let mut out = [0u8; ipv6::HEADER_LEN];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
        assert_eq!(&out[4..], &data[4..ipv6::HEADER_LEN]);
    }
    let Ok(upper) = packet.upper_layer() else {
        return;
    };
    assert!(upper.offset <= data.len());
    if matches!(upper.fragment, Some(f) if f.offset != 0) {
        return;
    }
    let upper_data = &data[upper.offset..ipv6::HEADER_LEN + usize::from(packet.payload_len())];
    let addrs = Addrs::V6(packet.src_addr(), packet.dst_addr());
    match upper.protocol {
        ip_protocol::UDP => parse_udp(upper_data, addrs),
        ip_protocol::TCP => parse_tcp(upper_data, addrs),
        ip_protocol::ICMPV6 => parse_icmpv6(upper_data, addrs),
        _ => {}
    }
}

fn parse_udp(data: &[u8], addrs: Addrs) {
    let Ok(packet) = UdpPacket::new_checked(data) else {
        return;
    };
    black_box((packet.src_port(), packet.dst_port(), packet.len()));
    black_box((packet.is_empty(), packet.checksum(), packet.payload()));
    black_box(match addrs {
        Addrs::V4(src, dst) => packet.verify_checksum_v4(src, dst),
        Addrs::V6(src, dst) => packet.verify_checksum_v6(&src, &dst),
    });
    if let Ok(repr) = udp::Repr::parse(&packet) {
        assert_eq!(repr.buffer_len(), usize::from(packet.len()));
    }
    // Any UDP payload is tried as Geneve, not only port 6081, so the fuzzer reaches it sooner.
    parse_geneve(packet.payload());
}

/// Parses a Geneve header, its options (as AWS options too) and the inner packet.
pub fn parse_geneve(data: &[u8]) {
    let Ok(packet) = GenevePacket::new_checked(data) else {
        return;
    };
    black_box((packet.version(), packet.options_len(), packet.header_len()));
    black_box((packet.oam(), packet.critical(), packet.protocol(), packet.vni()));
    black_box((packet.options(), packet.payload()));
    for option in packet.options_iter().flatten() {
        black_box((option.class, option.type_, option.critical, option.data));
    }
    if let Ok(aws) = AwsOptions::parse(packet.options()) {
        let mut out = [0u8; geneve::AWS_OPTIONS_LEN];
        geneve::emit_aws_options(&mut out, aws.vpc_endpoint_id, aws.attachment_id, aws.flow_cookie);
        let again = AwsOptions::parse(&out);
        assert_eq!(again, Ok(AwsOptions { unknown: 0, ..aws }));
    }
    if let Ok(repr) = geneve::Repr::parse(&packet) {
        let mut out = [0u8; geneve::BASE_LEN + geneve::MAX_OPTIONS_LEN];
        let out = &mut out[..repr.buffer_len()];
        repr.emit(&mut GenevePacket::new_unchecked(&mut *out));
        let emitted = GenevePacket::new_checked(&*out).map(|p| geneve::Repr::parse(&p));
        assert_eq!(emitted, Ok(Ok(repr)));
    }
    parse_inner(packet.protocol(), packet.payload());
}

/// Summarizes an inner packet and, for TCP, parses its header and options.
pub fn parse_inner(protocol_type: u16, data: &[u8]) {
    let Ok(summary) = inner::summarize(protocol_type, data) else {
        return;
    };
    black_box((summary.src_addr(), summary.dst_addr()));
    assert!(summary.l4_offset <= summary.total_len && summary.total_len <= data.len());
    if summary.protocol == ip_protocol::TCP && summary.fragment != inner::Fragment::Later {
        let l4 = &data[summary.l4_offset..summary.total_len];
        let addrs = if summary.ip_version == 4 {
            let src = [summary.src[0], summary.src[1], summary.src[2], summary.src[3]];
            let dst = [summary.dst[0], summary.dst[1], summary.dst[2], summary.dst[3]];
            Addrs::V4(src.into(), dst.into())
        } else {
            Addrs::V6(summary.src.into(), summary.dst.into())
        };
        parse_tcp(l4, addrs);
    }
}

fn parse_tcp(data: &[u8], addrs: Addrs) {
    let Ok(packet) = TcpPacket::new_checked(data) else {
        return;
    };
    black_box((packet.src_port(), packet.dst_port(), packet.seq_number()));
    black_box((packet.ack_number(), packet.header_len(), packet.flags()));
    black_box((packet.window_len(), packet.checksum(), packet.urgent_at()));
    black_box((packet.options(), packet.payload()));
    black_box(match addrs {
        Addrs::V4(src, dst) => packet.verify_checksum_v4(src, dst),
        Addrs::V6(src, dst) => packet.verify_checksum_v6(&src, &dst),
    });
    for option in packet.options_iter().flatten() {
        let mut out = [0u8; 256];
        let len = option.emit(&mut out);
        let mut again = tcp::TcpOptions::new(&out[..len]);
        assert_eq!(again.next(), Some(Ok(option)));
    }
    if let Ok(repr) = tcp::Repr::parse(&packet) {
        let mut out = [0u8; tcp::MAX_HEADER_LEN];
        let out = &mut out[..repr.header_len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut *out));
        let emitted = TcpPacket::new_checked(&*out).map(|p| tcp::Repr::parse(&p));
        assert_eq!(emitted, Ok(Ok(tcp::Repr { payload_len: 0, ..repr })));
    }
}

fn parse_icmpv4(data: &[u8]) {
    let Ok(packet) = Icmpv4Packet::new_checked(data) else {
        return;
    };
    black_box((packet.msg_type(), packet.code(), packet.checksum()));
    black_box((packet.echo_ident(), packet.echo_seq_no(), packet.data()));
    black_box(packet.verify_checksum());
}

fn parse_icmpv6(data: &[u8], addrs: Addrs) {
    let Ok(packet) = Icmpv6Packet::new_checked(data) else {
        return;
    };
    black_box((packet.msg_type(), packet.code(), packet.checksum()));
    black_box((packet.echo_ident(), packet.echo_seq_no(), packet.data()));
    if let Addrs::V6(src, dst) = addrs {
        black_box(packet.verify_checksum(&src, &dst));
    }
}
