//! Entry points for the fuzz target in `fuzz/` and the no-panic property tests.
//!
//! Each function takes arbitrary bytes, goes through `new_checked`, calls every getter, and
//! walks down to the next layer. Where a `Repr` parses, it is emitted again and re-parsed,
//! and the assertions check that nothing was lost. Any panic here is a bug in this crate.

use core::hint::black_box;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::geneve::AwsOptions;
use crate::websocket::{self, Event, FrameHeader, Opcode, Role, Validator};
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

/// Reads a byte stream of WebSocket frames: parses each header, feeds it to a [`Validator`],
/// and unmasks the payload bytes that are present.
///
/// The first byte picks the sender's role and where to cut the payload for chunked unmasking;
/// the rest is the stream.
/// Every header that parses is emitted again, which must give back the same bytes, and every
/// shorter prefix of it must parse as incomplete.
pub fn websocket(data: &[u8]) {
    let Some((&control, mut stream)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 { Role::Client } else { Role::Server };
    let mut validator = Validator::new(role);
    loop {
        let (header, header_len) = match FrameHeader::parse(stream) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return,
            Err(error) => {
                black_box(error);
                return;
            }
        };
        assert_eq!(header_len, header.header_len());
        let mut out = [0u8; websocket::MAX_HEADER_LEN];
        assert_eq!(header.emit(&mut out), Ok(header_len));
        assert_eq!(&out[..header_len], &stream[..header_len]);
        assert_eq!(FrameHeader::parse(&out[..header_len]), Ok(Some((header, header_len))));
        for end in 0..header_len {
            assert_eq!(FrameHeader::parse(&out[..end]), Ok(None));
        }

        // The validator keeps being fed after an error, which must leave its state alone.
        let was_closed = validator.is_closed();
        match validator.frame(&header) {
            Ok(Event::MessageStart { opcode, fin }) => {
                assert!(matches!(opcode, Opcode::Text | Opcode::Binary));
                assert_eq!((opcode, fin), (header.opcode, header.fin));
                assert_eq!(validator.open_message(), if fin { None } else { Some(opcode) });
            }
            Ok(Event::MessageContinue { fin }) => {
                assert_eq!((header.opcode, header.fin), (Opcode::Continuation, fin));
            }
            Ok(Event::Control(opcode)) => {
                assert!(opcode.is_control() && opcode == header.opcode);
                assert_eq!(validator.is_closed(), opcode == Opcode::Close);
            }
            Err(error) => {
                assert_eq!(was_closed, error == websocket::Error::FrameAfterClose);
                assert_eq!(validator.is_closed(), was_closed);
            }
        }

        let body = &stream[header_len..];
        let present = usize::try_from(header.payload_len).map_or(body.len(), |len| len.min(body.len()));
        let (payload, rest) = body.split_at(present);
        if let Some(key) = header.mask {
            unmask_in_chunks(key, payload, usize::from(control >> 1));
        }
        let complete = present as u64 == header.payload_len;
        if header.opcode == Opcode::Close && complete {
            // A Close payload is at most 125 bytes: `parse` checked it.
            let mut buf = [0u8; websocket::MAX_CONTROL_PAYLOAD_LEN];
            let body = &mut buf[..present];
            body.copy_from_slice(payload);
            if let Some(key) = header.mask {
                websocket::apply_mask(key, 0, body);
            }
            match websocket::close_payload(body) {
                Ok(Some((code, reason))) => {
                    assert!(matches!(code, 1000..=4999));
                    assert!(core::str::from_utf8(reason).is_ok());
                    assert_eq!(reason.len() + 2, present);
                }
                Ok(None) => assert_eq!(present, 0),
                Err(error) => {
                    black_box(error);
                }
            }
        }
        if !complete {
            return;
        }
        stream = rest;
    }
}

/// Unmasks `payload` in pieces that fit a stack buffer, each whole and cut in two at `cut`,
/// and checks both against unmasking one byte at a time.
fn unmask_in_chunks(key: [u8; 4], payload: &[u8], cut: usize) {
    // An odd size, so that the pieces start at every offset modulo 4.
    const CHUNK: usize = 251;
    let mut whole = [0u8; CHUNK];
    let mut split = [0u8; CHUNK];
    for (index, piece) in payload.chunks(CHUNK).enumerate() {
        let offset = (index * CHUNK) as u64;
        let whole = &mut whole[..piece.len()];
        let split = &mut split[..piece.len()];
        whole.copy_from_slice(piece);
        split.copy_from_slice(piece);
        websocket::apply_mask(key, offset, whole);
        let (first, second) = split.split_at_mut(cut % (piece.len() + 1));
        let second_offset = offset + first.len() as u64;
        websocket::apply_mask(key, offset, first);
        websocket::apply_mask(key, second_offset, second);
        assert_eq!(whole, split);
        for (i, (&masked, &plain)) in piece.iter().zip(whole.iter()).enumerate() {
            let position = offset + i as u64;
            assert_eq!(masked ^ key[(position % 4) as usize], plain, "payload byte {position}");
        }
        websocket::apply_mask(key, offset, whole);
        assert_eq!(&*whole, piece);
    }
}
