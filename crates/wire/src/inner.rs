//! A one-call summary of the inner packet that GWLB carries in Geneve.
//!
//! The inner packet is a bare IPv4 or IPv6 packet (Geneve protocol type 0x0800 or 0x86DD);
//! the summary gives the flow table what it needs to find a flow without parsing again.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ethernet::EtherType;
use crate::{ip_protocol, tcp, udp, Error, Ipv4Packet, Ipv6Packet, Result, TcpPacket};

/// Where a packet sits in its fragment train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fragment {
    /// Not a fragment (an IPv6 atomic fragment, offset 0 without more fragments, counts here).
    #[default]
    None,
    /// The first fragment: it holds the upper-layer header.
    First,
    /// A later fragment: it holds no upper-layer header, so there are no ports.
    Later,
}

/// The fields of an inner packet that identify its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Summary {
    /// 4 or 6.
    pub ip_version: u8,
    /// The source address; an IPv4 address fills the first 4 bytes and the rest is zero.
    pub src: [u8; 16],
    /// The destination address, laid out like `src`.
    pub dst: [u8; 16],
    /// The upper-layer protocol, past any IPv6 extension headers.
    pub protocol: u8,
    /// The TCP or UDP source port; 0 for other protocols (ICMP included) and later fragments.
    pub src_port: u16,
    /// The TCP or UDP destination port; 0 when `src_port` is.
    pub dst_port: u16,
    /// The TCP flags; 0 if not TCP or a later fragment.
    pub tcp_flags: u8,
    /// The fragment state.
    pub fragment: Fragment,
    /// The offset of the upper-layer header from the start of the inner packet.
    pub l4_offset: usize,
    /// The inner packet length from its header (IPv4 total length, or 40 + IPv6 payload length).
    pub total_len: usize,
}

impl Summary {
    /// The source address.
    pub fn src_addr(&self) -> IpAddr {
        address(self.ip_version, &self.src)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> IpAddr {
        address(self.ip_version, &self.dst)
    }
}

fn address(ip_version: u8, bytes: &[u8; 16]) -> IpAddr {
    if ip_version == 4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

/// Summarizes an inner packet whose Geneve protocol type is `protocol_type`.
///
/// Errors: a protocol type other than IPv4 or IPv6 is [`Error::Unsupported`]; the IP header
/// errors are those of [`Ipv4Packet::new_checked`], [`Ipv6Packet::new_checked`] and
/// [`Ipv6Packet::upper_layer`]; a TCP or UDP header cut short in an unfragmented packet or a
/// first fragment is [`Error::Truncated`].
#[inline]
pub fn summarize(protocol_type: u16, packet: &[u8]) -> Result<Summary> {
    let mut summary = match EtherType(protocol_type) {
        EtherType::IPV4 => summarize_v4(packet)?,
        EtherType::IPV6 => summarize_v6(packet)?,
        _ => return Err(Error::Unsupported),
    };
    if summary.fragment != Fragment::Later {
        // Both lengths were checked against the packet by the IP parsers.
        let l4 = &packet[summary.l4_offset..summary.total_len];
        read_ports(&mut summary, l4)?;
    }
    Ok(summary)
}

#[inline]
fn summarize_v4(packet: &[u8]) -> Result<Summary> {
    let ip = Ipv4Packet::new_checked(packet)?;
    let mut src = [0; 16];
    src[..4].copy_from_slice(&ip.src_addr().octets());
    let mut dst = [0; 16];
    dst[..4].copy_from_slice(&ip.dst_addr().octets());
    let fragment = if ip.frag_offset() != 0 {
        Fragment::Later
    } else if ip.more_frags() {
        Fragment::First
    } else {
        Fragment::None
    };
    Ok(Summary {
        ip_version: 4,
        src,
        dst,
        protocol: ip.protocol(),
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        fragment,
        l4_offset: ip.header_len(),
        total_len: usize::from(ip.total_len()),
    })
}

#[inline]
fn summarize_v6(packet: &[u8]) -> Result<Summary> {
    let ip = Ipv6Packet::new_checked(packet)?;
    let upper = ip.upper_layer()?;
    let fragment = match upper.fragment {
        None => Fragment::None,
        Some(f) if f.offset != 0 => Fragment::Later,
        Some(f) if f.more => Fragment::First,
        Some(_) => Fragment::None,
    };
    Ok(Summary {
        ip_version: 6,
        src: ip.src_addr().octets(),
        dst: ip.dst_addr().octets(),
        protocol: upper.protocol,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        fragment,
        l4_offset: upper.offset,
        total_len: crate::ipv6::HEADER_LEN + usize::from(ip.payload_len()),
    })
}

/// Reads the ports (and TCP flags) from the start of the upper-layer data.
///
/// Only the fixed header is needed: in a first fragment the rest of the segment, and even the
/// UDP length it declares, lie in later fragments.
#[inline]
fn read_ports(summary: &mut Summary, l4: &[u8]) -> Result<()> {
    match summary.protocol {
        ip_protocol::TCP => {
            if l4.len() < tcp::HEADER_LEN {
                return Err(Error::Truncated);
            }
            let segment = TcpPacket::new_unchecked(l4);
            summary.src_port = segment.src_port();
            summary.dst_port = segment.dst_port();
            summary.tcp_flags = segment.flags();
        }
        ip_protocol::UDP => {
            if l4.len() < udp::HEADER_LEN {
                return Err(Error::Truncated);
            }
            let datagram = crate::UdpPacket::new_unchecked(l4);
            summary.src_port = datagram.src_port();
            summary.dst_port = datagram.dst_port();
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geneve::{self, AwsOptions};
    use crate::{ethernet, ipv6, EthernetAddress, EthernetFrame, GenevePacket, UdpPacket};

    /// A GWLB frame laid out as gwlb-facts §2 describes (built with scapy, not captured):
    /// 10.0.1.10:54321 -> 10.0.2.20:6081, Geneve with endpoint ID 0x0abcdef012345678,
    /// attachment ID 0 and cookie 0x7e57c00c, carrying a TCP SYN
    /// 192.168.1.10:40000 -> 198.51.100.7:443 with MSS, SACK permitted, timestamps and window scale.
    static GWLB_FRAME: [u8; 142] = [
        0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x02, 0x08, 0x00, 0x45, 0x00, 0x00, 0x80,
        0x04, 0xd2, 0x00, 0x00, 0xfe, 0x11, 0xa0, 0x7d, 0x0a, 0x00, 0x01, 0x0a, 0x0a, 0x00, 0x02, 0x14, 0xd4, 0x31,
        0x17, 0xc1, 0x00, 0x6c, 0x3e, 0x47, 0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x01, 0x02,
        0x0a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x01, 0x08, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x08, 0x03, 0x01, 0x7e, 0x57, 0xc0, 0x0c, 0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00,
        0x40, 0x06, 0x32, 0x89, 0xc0, 0xa8, 0x01, 0x0a, 0xc6, 0x33, 0x64, 0x07, 0x9c, 0x40, 0x01, 0xbb, 0x12, 0x34,
        0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xf5, 0x6c, 0x42, 0x87, 0x00, 0x00, 0x02, 0x04, 0x23, 0x01,
        0x04, 0x02, 0x08, 0x0a, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    /// Offsets of each layer in [`GWLB_FRAME`].
    const IP: usize = 14;
    const UDP: usize = 34;
    const GENEVE: usize = 42;
    const INNER: usize = 82;
    const INNER_TCP: usize = 102;

    fn syn_summary() -> Summary {
        let mut src = [0; 16];
        src[..4].copy_from_slice(&[192, 168, 1, 10]);
        let mut dst = [0; 16];
        dst[..4].copy_from_slice(&[198, 51, 100, 7]);
        Summary {
            ip_version: 4,
            src,
            dst,
            protocol: ip_protocol::TCP,
            src_port: 40000,
            dst_port: 443,
            tcp_flags: tcp::flags::SYN,
            fragment: Fragment::None,
            l4_offset: 20,
            total_len: 60,
        }
    }

    #[test]
    fn walk_a_gwlb_frame() {
        let frame = EthernetFrame::new_checked(&GWLB_FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01]));
        assert_eq!(frame.ethertype(), EtherType::IPV4);

        let outer = Ipv4Packet::new_checked(frame.payload()).unwrap();
        assert!(outer.verify_checksum());
        assert_eq!(outer.src_addr(), Ipv4Addr::new(10, 0, 1, 10));
        assert_eq!(outer.dst_addr(), Ipv4Addr::new(10, 0, 2, 20));
        assert_eq!(outer.protocol(), ip_protocol::UDP);

        let udp = UdpPacket::new_checked(outer.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (54321, geneve::UDP_PORT));
        assert!(udp.verify_checksum_v4(outer.src_addr(), outer.dst_addr()));

        let geneve = GenevePacket::new_checked(udp.payload()).unwrap();
        assert_eq!((geneve.version(), geneve.header_len(), geneve.vni()), (0, 40, 0));
        assert_eq!(geneve.protocol(), 0x0800);
        let aws = AwsOptions::parse(geneve.options()).unwrap();
        assert_eq!(
            aws,
            AwsOptions {
                vpc_endpoint_id: 0x0abc_def0_1234_5678,
                attachment_id: 0,
                flow_cookie: 0x7e57_c00c,
                unknown: 0,
            }
        );

        let summary = summarize(geneve.protocol(), geneve.payload()).unwrap();
        assert_eq!(summary, syn_summary());
        assert_eq!(summary.src_addr(), IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)));

        let inner = Ipv4Packet::new_checked(geneve.payload()).unwrap();
        assert!(inner.verify_checksum());
        let syn = TcpPacket::new_checked(inner.payload()).unwrap();
        assert!(syn.verify_checksum_v4(inner.src_addr(), inner.dst_addr()));
        let repr = tcp::Repr::parse(&syn).unwrap();
        assert_eq!(
            (repr.max_seg_size, repr.window_scale, repr.sack_permitted, repr.timestamp),
            (Some(8961), Some(7), true, Some((42, 0)))
        );
        assert_eq!(&GWLB_FRAME[INNER_TCP..INNER_TCP + 2], &[0x9c, 0x40]);
    }

    #[test]
    fn truncation_at_each_layer() {
        let f = &GWLB_FRAME;
        assert_eq!(EthernetFrame::new_checked(&f[..IP - 1]).unwrap_err(), Error::Truncated);
        // Cutting the frame anywhere inside the outer packet breaks its total length.
        for end in IP..f.len() {
            let frame = EthernetFrame::new_checked(&f[..end]).unwrap();
            assert_eq!(Ipv4Packet::new_checked(frame.payload()).unwrap_err(), Error::Truncated);
        }
        // Each layer checked on its own, cut one byte short.
        assert_eq!(UdpPacket::new_checked(&f[UDP..UDP + 7]).unwrap_err(), Error::Truncated);
        assert_eq!(UdpPacket::new_checked(&f[UDP..f.len() - 1]).unwrap_err(), Error::Truncated);
        assert_eq!(GenevePacket::new_checked(&f[GENEVE..GENEVE + 7]).unwrap_err(), Error::Truncated);
        assert_eq!(GenevePacket::new_checked(&f[GENEVE..INNER - 1]).unwrap_err(), Error::Truncated);
        assert_eq!(summarize(0x0800, &f[INNER..f.len() - 1]).unwrap_err(), Error::Truncated);
        assert_eq!(summarize(0x0800, &f[INNER..INNER + 19]).unwrap_err(), Error::Truncated);
        assert_eq!(TcpPacket::new_checked(&f[INNER_TCP..f.len() - 1]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn inner_tcp_header_cut_short() {
        // An inner IPv4 packet whose total length leaves only 12 bytes of TCP.
        let mut inner = [0u8; 32];
        inner.copy_from_slice(&GWLB_FRAME[INNER..INNER + 32]);
        inner[3] = 32;
        assert_eq!(summarize(0x0800, &inner).unwrap_err(), Error::Truncated);
        // As a later fragment the same bytes have no ports to read.
        inner[6] = 0x00;
        inner[7] = 0xb9;
        let summary = summarize(0x0800, &inner).unwrap();
        assert_eq!(summary.fragment, Fragment::Later);
        assert_eq!((summary.src_port, summary.dst_port, summary.tcp_flags), (0, 0, 0));
        // As a first fragment they must hold the TCP header.
        inner[6] = 0x20;
        inner[7] = 0x00;
        assert_eq!(summarize(0x0800, &inner).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn first_fragment_udp_reads_ports_only() {
        // The UDP length (1000) covers fragments that are not here.
        let mut inner = [0u8; 28];
        inner[..20].copy_from_slice(&GWLB_FRAME[INNER..INNER + 20]);
        inner[3] = 28;
        inner[6] = 0x20; // MF
        inner[9] = ip_protocol::UDP;
        inner[20..28].copy_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x03, 0xe8, 0, 0]);
        let summary = summarize(0x0800, &inner).unwrap();
        assert_eq!(summary.fragment, Fragment::First);
        assert_eq!((summary.protocol, summary.src_port, summary.dst_port), (17, 12345, 53));
    }

    #[test]
    fn icmp_has_no_ports() {
        let mut inner = [0u8; 28];
        inner[..20].copy_from_slice(&GWLB_FRAME[INNER..INNER + 20]);
        inner[3] = 28;
        inner[9] = ip_protocol::ICMP;
        inner[20..28].copy_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        let summary = summarize(0x0800, &inner).unwrap();
        assert_eq!((summary.protocol, summary.src_port, summary.dst_port), (1, 0, 0));
        assert_eq!(summary.fragment, Fragment::None);
    }

    #[test]
    fn ipv6_with_fragment_header() {
        // 2001:db8::1 -> 2001:db8::2, fragment header (offset 0, more), UDP 5353 -> 5353.
        let mut packet = [0u8; 40 + 8 + 8];
        let mut ip = Ipv6Packet::new_unchecked(&mut packet[..]);
        ipv6::Repr {
            src_addr: "2001:db8::1".parse().unwrap(),
            dst_addr: "2001:db8::2".parse().unwrap(),
            next_header: ip_protocol::FRAGMENT,
            payload_len: 16,
            hop_limit: 64,
        }
        .emit(&mut ip);
        packet[40..48].copy_from_slice(&[ip_protocol::UDP, 0, 0, 1, 0, 0, 0, 7]);
        packet[48..52].copy_from_slice(&[0x14, 0xe9, 0x14, 0xe9]);
        let summary = summarize(0x86dd, &packet).unwrap();
        assert_eq!(summary.ip_version, 6);
        assert_eq!(summary.fragment, Fragment::First);
        assert_eq!((summary.protocol, summary.l4_offset, summary.total_len), (17, 48, 56));
        assert_eq!((summary.src_port, summary.dst_port), (5353, 5353));
        assert_eq!(summary.dst_addr(), "2001:db8::2".parse::<IpAddr>().unwrap());

        // Offset 8: a later fragment.
        packet[43] = 0x08;
        let summary = summarize(0x86dd, &packet).unwrap();
        assert_eq!((summary.fragment, summary.src_port), (Fragment::Later, 0));

        // Offset 0 without more fragments: an atomic fragment, a whole packet.
        packet[43] = 0;
        assert_eq!(summarize(0x86dd, &packet).unwrap().fragment, Fragment::None);

        // Cut the UDP header short.
        packet[5] = 12;
        assert_eq!(summarize(0x86dd, &packet[..52]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn other_protocol_types() {
        assert_eq!(summarize(0x6558, &GWLB_FRAME).unwrap_err(), Error::Unsupported);
        assert_eq!(summarize(ethernet::EtherType::IPV6.0, &GWLB_FRAME[INNER..]).unwrap_err(), Error::Malformed);
        let mut v6_in_v4 = [0u8; 40];
        v6_in_v4[0] = 0x60;
        assert_eq!(summarize(0x0800, &v6_in_v4).unwrap_err(), Error::Malformed);
    }
}
