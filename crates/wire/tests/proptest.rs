//! Property tests: every `Repr` survives emit then parse, whole GWLB frames built with the
//! emitters dissect to what was built, no input makes a checked view panic, and incremental
//! checksum updates agree with a full recomputation.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{FrameSpec, L4};
use flowdog_wire::geneve::{self, AwsOptions};
use flowdog_wire::{arp, checksum, ethernet, fuzzing, ipv4, ipv6, tcp, udp};
use flowdog_wire::{ArpPacket, EthernetAddress, EthernetFrame, GenevePacket};
use flowdog_wire::{Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};
use proptest::prelude::*;

fn mac() -> impl Strategy<Value = EthernetAddress> {
    any::<[u8; 6]>().prop_map(EthernetAddress)
}

fn ipv4_addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

fn ipv6_addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..=1500, Just(9001 - 68)]
}

fn tcp_repr() -> impl Strategy<Value = tcp::Repr> {
    (
        (any::<u16>(), any::<u16>(), any::<u8>(), any::<u32>(), any::<u32>()),
        (any::<u16>(), any::<Option<u16>>(), any::<Option<u8>>(), any::<bool>()),
        (any::<Option<(u32, u32)>>(), payload_len()),
    )
        .prop_map(|((sp, dp, flags, seq, ack), (win, mss, ws, sack), (ts, len))| tcp::Repr {
            src_port: sp,
            dst_port: dp,
            flags,
            seq_number: seq,
            ack_number: ack,
            window_len: win,
            max_seg_size: mss,
            window_scale: ws,
            sack_permitted: sack,
            timestamp: ts,
            payload_len: len,
        })
}

/// Options that are not one of the three AWS ones: (class, type, critical, data).
fn extra_option() -> impl Strategy<Value = (u16, u8, bool, Vec<u8>)> {
    let class = prop_oneof![Just(geneve::AWS_OPTION_CLASS), any::<u16>()];
    (class, 4u8..=127, any::<bool>(), 0usize..=31).prop_flat_map(|(class, type_, critical, words)| {
        proptest::collection::vec(any::<u8>(), words * 4).prop_map(move |data| (class, type_, critical, data))
    })
}

/// Extra options that fit next to the 32 bytes of AWS options in 252 bytes.
fn extra_options() -> impl Strategy<Value = Vec<(u16, u8, bool, Vec<u8>)>> {
    proptest::collection::vec(extra_option(), 0..4).prop_map(|mut options| {
        while options.iter().map(|o| 4 + o.3.len()).sum::<usize>() > geneve::MAX_OPTIONS_LEN - 32 {
            options.pop();
        }
        options
    })
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    let inner_addrs = prop_oneof![
        (ipv4_addr(), ipv4_addr()).prop_map(|(s, d)| (IpAddr::V4(s), IpAddr::V4(d))),
        (ipv6_addr(), ipv6_addr()).prop_map(|(s, d)| (IpAddr::V6(s), IpAddr::V6(d))),
    ];
    let l4 = prop_oneof![
        tcp_repr().prop_map(L4::Tcp),
        (any::<u16>(), any::<u16>()).prop_map(|(s, d)| L4::Udp { src_port: s, dst_port: d }),
        (any::<u16>(), any::<u16>()).prop_map(|(i, s)| L4::Echo { ident: i, seq_no: s }),
    ];
    (
        (mac(), mac(), ipv4_addr(), ipv4_addr(), any::<u8>()),
        (any::<u16>(), any::<bool>(), 0u32..1 << 24),
        (any::<u64>(), any::<u64>(), any::<u32>(), extra_options()),
        (inner_addrs, any::<u8>(), l4, proptest::collection::vec(any::<u8>(), 0..200)),
    )
        .prop_map(
            |(
                (eth_src, eth_dst, outer_src, outer_dst, outer_ttl),
                (udp_src_port, udp_checksum, vni),
                (vpc_endpoint_id, attachment_id, flow_cookie, extra_options),
                ((inner_src, inner_dst), inner_ttl, l4, payload),
            )| FrameSpec {
                eth_src: eth_src.0,
                eth_dst: eth_dst.0,
                outer_src,
                outer_dst,
                outer_ttl,
                udp_src_port,
                udp_checksum,
                vni,
                vpc_endpoint_id,
                attachment_id,
                flow_cookie,
                extra_options,
                inner_src,
                inner_dst,
                inner_ttl,
                l4,
                payload,
            },
        )
}

proptest! {
    #[test]
    fn ethernet_round_trip(src in mac(), dst in mac(), ethertype in any::<u16>()) {
        let repr = ethernet::Repr { src_addr: src, dst_addr: dst, ethertype: ethertype.into() };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(ethernet::Repr::parse(&frame).unwrap(), repr);
    }

    #[test]
    fn arp_round_trip(
        op in any::<u16>(), sha in mac(), spa in ipv4_addr(), tha in mac(), tpa in ipv4_addr()
    ) {
        let repr = arp::Repr::EthernetIpv4 {
            operation: op.into(),
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_hardware_addr: tha,
            target_protocol_addr: tpa,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        let packet = ArpPacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(arp::Repr::parse(&packet).unwrap(), repr);
    }

    #[test]
    fn ipv4_round_trip(
        src in ipv4_addr(), dst in ipv4_addr(), protocol in any::<u8>(), ttl in any::<u8>(),
        len in prop_oneof![payload_len(), Just(65535 - 20)],
    ) {
        let repr = ipv4::Repr { src_addr: src, dst_addr: dst, protocol, payload_len: len, ttl };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert!(packet.verify_checksum());
        prop_assert!(!packet.dont_frag() && packet.ident() == 0);
        prop_assert_eq!(ipv4::Repr::parse(&packet).unwrap(), repr);
    }

    #[test]
    fn ipv6_round_trip(
        src in ipv6_addr(), dst in ipv6_addr(), next_header in any::<u8>(), hop_limit in any::<u8>(),
        len in prop_oneof![payload_len(), Just(65535)],
    ) {
        let repr = ipv6::Repr { src_addr: src, dst_addr: dst, next_header, payload_len: len, hop_limit };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        let packet = Ipv6Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(ipv6::Repr::parse(&packet).unwrap(), repr);
    }

    #[test]
    fn udp_round_trip(
        sp in any::<u16>(), dp in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..300),
        src in ipv4_addr(), dst in ipv4_addr(), src6 in ipv6_addr(), dst6 in ipv6_addr(),
    ) {
        let repr = udp::Repr { src_port: sp, dst_port: dp, payload_len: payload.len() };
        let mut buf = vec![0u8; repr.buffer_len()];
        let mut packet = UdpPacket::new_unchecked(&mut buf[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(&payload);
        packet.fill_checksum_v4(src, dst);
        prop_assert!(packet.checksum() != 0);
        prop_assert!(packet.verify_checksum_v4(src, dst));
        packet.fill_checksum_v6(&src6, &dst6);
        prop_assert!(packet.verify_checksum_v6(&src6, &dst6));
        let packet = UdpPacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(packet.payload(), &payload[..]);
        prop_assert_eq!(udp::Repr::parse(&packet).unwrap(), repr);
    }

    #[test]
    fn tcp_round_trip(repr in tcp_repr(), src in ipv4_addr(), dst in ipv4_addr()) {
        let mut buf = vec![0u8; repr.buffer_len()];
        let mut packet = TcpPacket::new_unchecked(&mut buf[..]);
        repr.emit(&mut packet);
        packet.fill_checksum_v4(src, dst);
        let packet = TcpPacket::new_checked(&buf[..]).unwrap();
        prop_assert!(packet.verify_checksum_v4(src, dst));
        prop_assert_eq!(tcp::Repr::parse(&packet).unwrap(), repr);
    }

    #[test]
    fn tcp_option_round_trip(
        choice in 0..7, a in any::<u32>(), b in any::<u32>(), n in 0usize..=3,
        kind in 9u8..=255, data in proptest::collection::vec(any::<u8>(), 0..38),
    ) {
        let blocks = [Some((a, b)), Some((b, a)), Some((a ^ b, b))];
        let mut sack = [None; 3];
        sack[..n.max(1)].copy_from_slice(&blocks[..n.max(1)]);
        let option = match choice {
            0 => tcp::TcpOption::NoOperation,
            1 => tcp::TcpOption::MaxSegmentSize(a as u16),
            2 => tcp::TcpOption::WindowScale(a as u8),
            3 => tcp::TcpOption::SackPermitted,
            4 => tcp::TcpOption::SackRange(sack),
            5 => tcp::TcpOption::Timestamp { tsval: a, tsecr: b },
            _ => tcp::TcpOption::Unknown { kind, data: &data },
        };
        let mut buf = [0u8; 40];
        let len = option.emit(&mut buf);
        prop_assert_eq!(len, option.buffer_len());
        let mut options = tcp::TcpOptions::new(&buf[..len]);
        prop_assert_eq!(options.next(), Some(Ok(option)));
        prop_assert_eq!(options.next(), None);
    }

    #[test]
    fn geneve_round_trip(
        protocol in any::<u16>(), vni in 0u32..1 << 24, oam in any::<bool>(), critical in any::<bool>(),
        extra in extra_options(),
    ) {
        let mut options = Vec::new();
        for (class, type_, crit, data) in &extra {
            options.extend_from_slice(&class.to_be_bytes());
            options.push(type_ | if *crit { 0x80 } else { 0 });
            options.push((data.len() / 4) as u8);
            options.extend_from_slice(data);
        }
        let repr = geneve::Repr { protocol, vni, oam, critical, options: &options };
        let mut buf = vec![0u8; repr.buffer_len() + 3];
        repr.emit(&mut GenevePacket::new_unchecked(&mut buf[..]));
        let packet = GenevePacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(packet.payload().len(), 3);
        prop_assert_eq!(geneve::Repr::parse(&packet).unwrap(), repr);
        let parsed: Vec<_> = packet.options_iter().map(Result::unwrap).collect();
        prop_assert_eq!(parsed.len(), extra.len());
        for (option, (class, type_, crit, data)) in parsed.iter().zip(&extra) {
            prop_assert_eq!((option.class, option.type_, option.critical), (*class, *type_, *crit));
            prop_assert_eq!(option.data, &data[..]);
        }
    }

    #[test]
    fn aws_options_in_any_order(
        vpce in any::<u64>(), attach in any::<u64>(), cookie in any::<u32>(),
        extra in extra_options(), order in Just((0..6).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        let mut aws = [0u8; geneve::AWS_OPTIONS_LEN];
        geneve::emit_aws_options(&mut aws, vpce, attach, cookie);
        let mut tlvs: Vec<Vec<u8>> = vec![aws[..12].to_vec(), aws[12..24].to_vec(), aws[24..].to_vec()];
        for (class, type_, crit, data) in &extra {
            let mut tlv = class.to_be_bytes().to_vec();
            tlv.push(type_ | if *crit { 0x80 } else { 0 });
            tlv.push((data.len() / 4) as u8);
            tlv.extend_from_slice(data);
            tlvs.push(tlv);
        }
        let mut options = Vec::new();
        for i in order.into_iter().filter(|&i| i < tlvs.len()) {
            options.extend_from_slice(&tlvs[i]);
        }
        let expected = AwsOptions {
            vpc_endpoint_id: vpce,
            attachment_id: attach,
            flow_cookie: cookie,
            unknown: extra.len() as u8,
        };
        prop_assert_eq!(AwsOptions::parse(&options), Ok(expected));
    }

    #[test]
    fn gwlb_frames_dissect_to_what_was_built(spec in frame_spec()) {
        let frame = spec.build();
        let mismatches = common::dissect(&frame).mismatches(&spec.facts());
        prop_assert!(mismatches.is_empty(), "{:?}\n{}", mismatches, common::hex(&frame));
    }

    #[test]
    fn checked_views_never_panic_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400), protocol in any::<u16>(),
    ) {
        fuzzing::parse_frame(&bytes);
        fuzzing::parse_arp(&bytes);
        fuzzing::parse_ipv4(&bytes);
        fuzzing::parse_ipv6(&bytes);
        fuzzing::parse_geneve(&bytes);
        fuzzing::parse_inner(0x0800, &bytes);
        fuzzing::parse_inner(0x86dd, &bytes);
        fuzzing::parse_inner(protocol, &bytes);
    }

    #[test]
    fn checked_views_never_panic_on_damaged_frames(
        spec in frame_spec(),
        damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut frame = spec.build();
        let len = frame.len();
        for (at, value) in damage {
            frame[at % len] = value;
        }
        fuzzing::parse_frame(&frame);
        frame.truncate(cut % (len + 1));
        fuzzing::parse_frame(&frame);
        let _ = common::dissect(&frame);
    }

    #[test]
    fn update16_matches_recompute(
        mut words in proptest::collection::vec(any::<u16>(), 1..64), at in any::<usize>(), new in any::<u16>(),
    ) {
        // A fixed nonzero word, like an IP version nibble, keeps the data from summing to zero,
        // the one case where 0x0000 and 0xffff both mean zero.
        words.insert(0, 0x4500);
        let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        let before = !checksum::data(&bytes(&words));
        let at = 1 + at % (words.len() - 1);
        let old = words[at];
        words[at] = new;
        prop_assert_eq!(checksum::update16(before, old, new), !checksum::data(&bytes(&words)));
    }

    #[test]
    fn update32_matches_recompute(
        mut data in proptest::collection::vec(any::<u8>(), 8..128), at in any::<usize>(), new in any::<[u8; 4]>(),
    ) {
        data[0] = 0x45;
        let at = 2 + 2 * (at % ((data.len() - 6) / 2));
        let before = !checksum::data(&data);
        let old = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        data[at..at + 4].copy_from_slice(&new);
        prop_assert_eq!(checksum::update32(before, old, new), !checksum::data(&data));
    }

    #[test]
    fn sums_combine(a in proptest::collection::vec(any::<u8>(), 0..100), b in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut even = a.clone();
        if even.len() % 2 == 1 {
            even.pop();
        }
        let whole: Vec<u8> = even.iter().chain(&b).copied().collect();
        prop_assert_eq!(checksum::combine(&[checksum::data(&even), checksum::data(&b)]), checksum::data(&whole));
    }
}
