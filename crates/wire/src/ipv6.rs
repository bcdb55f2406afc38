//! IPv6 headers (RFC 8200) and a walk over the extension headers.
//!
//! Jumbograms (payload length 0 with a hop-by-hop jumbo option) are not supported:
//! a payload length of 0 means an empty payload.

use core::net::Ipv6Addr;

use crate::bytes::{array16, be16, be32, set_be16, set_be32, Field};
use crate::{ip_protocol, Error, Result};

/// The length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// The most extension headers [`Packet::upper_layer`] walks before giving up.
///
/// A legitimate packet has a handful; a long chain is a known way to evade middleboxes,
/// and stopping early bounds the work per packet.
pub const MAX_EXTENSION_HEADERS: usize = 8;

mod field {
    use super::*;

    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Where the upper-layer header starts, past any extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// The protocol of the first header that is not a walked extension header
    /// (TCP, UDP, ICMPv6, ESP, "no next header", ...).
    pub protocol: u8,
    /// The offset of that header from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header's fields, if there is one.
    /// When its offset is not 0, the bytes at `offset` continue an upper-layer header that
    /// started in an earlier fragment and must not be parsed as one.
    pub fragment: Option<FragmentInfo>,
}

/// The fields of an IPv6 fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentInfo {
    /// The offset of this fragment's data in the original payload, in bytes.
    pub offset: u16,
    /// Whether more fragments follow.
    pub more: bool,
    /// The identification shared by the fragments of one packet.
    pub ident: u32,
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the version and that the payload length fits.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version and the payload length against the buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn ver_tc_flow(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::VER_TC_FLOW])
    }

    /// The version field; 6 after a successful check.
    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }

    /// The traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// The payload length, extension headers included.
    pub fn payload_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The next header field (see [`crate::ip_protocol`]).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array16(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array16(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// The payload, extension headers included, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Walks the extension headers to the upper-layer header.
    ///
    /// Hop-by-hop options (only first, as RFC 8200 §4.1 requires), routing, fragment,
    /// destination options and AH are skipped; anything else ends the walk.
    /// The walk also ends after a fragment header with a nonzero offset, because what follows
    /// is the middle of a payload.
    ///
    /// Errors: an extension header running past the payload is [`Error::Truncated`];
    /// hop-by-hop options after the first header, or a second fragment header, is
    /// [`Error::Malformed`]; more than [`MAX_EXTENSION_HEADERS`] is [`Error::Unsupported`].
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let end = HEADER_LEN + usize::from(self.payload_len());
        let packet = self.buffer.as_ref().get(..end).ok_or(Error::Truncated)?;
        let mut protocol = self.next_header();
        let mut offset = HEADER_LEN;
        let mut fragment: Option<FragmentInfo> = None;
        let mut walked = 0;
        loop {
            if !matches!(
                protocol,
                ip_protocol::HOPOPT
                    | ip_protocol::ROUTING
                    | ip_protocol::DSTOPTS
                    | ip_protocol::AH
                    | ip_protocol::FRAGMENT
            ) {
                break;
            }
            if walked == MAX_EXTENSION_HEADERS {
                return Err(Error::Unsupported);
            }
            let header_len = match protocol {
                ip_protocol::HOPOPT if walked > 0 => return Err(Error::Malformed),
                ip_protocol::AH => {
                    // AH counts 4-byte words minus 2 (RFC 4302 §2.2), unlike the others.
                    let len = packet.get(offset + 1).ok_or(Error::Truncated)?;
                    (usize::from(*len) + 2) * 4
                }
                ip_protocol::FRAGMENT => {
                    if fragment.is_some() {
                        return Err(Error::Malformed);
                    }
                    let header = packet.get(offset..offset + 8).ok_or(Error::Truncated)?;
                    let offset_flags = be16(&header[2..4]);
                    fragment = Some(FragmentInfo {
                        offset: offset_flags & 0xfff8,
                        more: offset_flags & 1 != 0,
                        ident: be32(&header[4..8]),
                    });
                    8
                }
                // Hop-by-hop, routing and destination options count 8-byte units minus 1.
                _ => {
                    let len = packet.get(offset + 1).ok_or(Error::Truncated)?;
                    (usize::from(*len) + 1) * 8
                }
            };
            if offset + header_len > end {
                return Err(Error::Truncated);
            }
            protocol = packet[offset];
            offset += header_len;
            walked += 1;
            if matches!(fragment, Some(f) if f.offset != 0) {
                break;
            }
        }
        Ok(UpperLayer { protocol, offset, fragment })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_ver_tc_flow(&mut self, value: u32) {
        set_be32(&mut self.buffer.as_mut()[field::VER_TC_FLOW], value);
    }

    /// Sets the version.
    pub fn set_version(&mut self, value: u8) {
        let other = self.ver_tc_flow() & 0x0fff_ffff;
        self.set_ver_tc_flow(other | (u32::from(value) << 28));
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, value: u8) {
        let other = self.ver_tc_flow() & 0xf00f_ffff;
        self.set_ver_tc_flow(other | (u32::from(value) << 20));
    }

    /// Sets the flow label; bits above the low 20 are ignored.
    pub fn set_flow_label(&mut self, value: u32) {
        let other = self.ver_tc_flow() & 0xfff0_0000;
        self.set_ver_tc_flow(other | (value & 0x000f_ffff));
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Sets the next header field.
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = value;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, value: &Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, value: &Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an IPv6 header; traffic class and flow label are emitted as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The source address.
    pub src_addr: Ipv6Addr,
    /// The destination address.
    pub dst_addr: Ipv6Addr,
    /// The next header field.
    pub next_header: u8,
    /// The payload length, extension headers included.
    pub payload_len: usize,
    /// The hop limit.
    pub hop_limit: u8,
}

impl Repr {
    /// Reads a checked packet; traffic class and flow label are dropped.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
        })
    }

    /// The length of the header [`Repr::emit`] writes.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole packet: header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 40-byte header; the payload is left for the caller.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    /// A `payload_len` over 65535 is a caller bug; the field wraps.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_ver_tc_flow(6 << 28);
        packet.set_payload_len(self.payload_len as u16);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(&self.src_addr);
        packet.set_dst_addr(&self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2001:db8::1 -> 2001:db8::2, traffic class 0xb8, flow 0x12345, hop limit 64, then:
    // hop-by-hop (8 bytes, PadN), fragment (offset 0, M set, ident 0xdeadbeef),
    // destination options (16 bytes), and an 8-byte UDP header.
    static PACKET: [u8; 40 + 8 + 8 + 16 + 8] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x28, 0x00, 0x40, // ver/tc/flow, len 40, hop-by-hop, hlim
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // src
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // dst
        44, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop -> fragment
        60, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, // fragment -> dstopts
        17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // dstopts -> UDP
        0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00, // UDP 12345 -> 53
    ];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 40);
        assert_eq!(packet.next_header(), ip_protocol::HOPOPT);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(packet.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(packet.payload().len(), 40);
        assert_eq!(
            packet.upper_layer().unwrap(),
            UpperLayer {
                protocol: ip_protocol::UDP,
                offset: 72,
                fragment: Some(FragmentInfo { offset: 0, more: true, ident: 0xdead_beef }),
            }
        );
    }

    #[test]
    fn construct() {
        let mut bytes = PACKET;
        bytes[..40].fill(0);
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(6);
        packet.set_traffic_class(0xb8);
        packet.set_flow_label(0x12345);
        packet.set_payload_len(40);
        packet.set_next_header(0);
        packet.set_hop_limit(64);
        packet.set_src_addr(&"2001:db8::1".parse().unwrap());
        packet.set_dst_addr(&"2001:db8::2".parse().unwrap());
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn later_fragment_stops_the_walk() {
        let mut bytes = PACKET;
        // Offset 1448 bytes (181 units), no more fragments.
        bytes[50..52].copy_from_slice(&1448u16.to_be_bytes());
        let upper = Packet::new_checked(&bytes[..]).unwrap().upper_layer().unwrap();
        assert_eq!(upper.protocol, ip_protocol::DSTOPTS);
        assert_eq!(upper.offset, 56);
        assert_eq!(upper.fragment, Some(FragmentInfo { offset: 1448, more: false, ident: 0xdead_beef }));
    }

    #[test]
    fn plain_and_ah() {
        let mut bytes = [0u8; 40 + 12 + 20];
        bytes[..40].copy_from_slice(&PACKET[..40]);
        bytes[5] = 32;
        bytes[6] = ip_protocol::AH;
        // AH with payload length 1: (1 + 2) * 4 = 12 bytes, then TCP.
        bytes[40] = ip_protocol::TCP;
        bytes[41] = 1;
        let upper = Packet::new_checked(&bytes[..]).unwrap().upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.offset, upper.fragment), (ip_protocol::TCP, 52, None));

        bytes[6] = ip_protocol::ESP;
        let upper = Packet::new_checked(&bytes[..]).unwrap().upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.offset), (ip_protocol::ESP, 40));
    }

    #[test]
    fn walk_errors() {
        // The destination options header claims 16 bytes but the payload ends after 8.
        let mut bytes = PACKET;
        bytes[5] = 24;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.upper_layer().unwrap_err(), Error::Truncated);

        // The payload ends right after a routing next header value with no room for its length.
        let mut bytes = PACKET;
        bytes[5] = 0;
        bytes[6] = ip_protocol::ROUTING;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.upper_layer().unwrap_err(), Error::Truncated);

        // Hop-by-hop after the first header.
        let mut bytes = PACKET;
        bytes[56] = ip_protocol::HOPOPT;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.upper_layer().unwrap_err(), Error::Malformed);

        // Two fragment headers.
        let mut bytes = PACKET;
        bytes[48] = ip_protocol::FRAGMENT;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.upper_layer().unwrap_err(), Error::Malformed);
    }

    #[test]
    fn too_many_extension_headers() {
        let mut bytes = [0u8; 40 + 8 * 9 + 8];
        bytes[..40].copy_from_slice(&PACKET[..40]);
        bytes[4..6].copy_from_slice(&80u16.to_be_bytes());
        bytes[6] = ip_protocol::DSTOPTS;
        for i in 0..9 {
            bytes[40 + 8 * i] = ip_protocol::DSTOPTS;
        }
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.upper_layer().unwrap_err(), Error::Unsupported);
        // Exactly eight is fine.
        bytes[40 + 8 * 7] = ip_protocol::UDP;
        let upper = Packet::new_checked(&bytes[..]).unwrap().upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.offset), (ip_protocol::UDP, 104));
    }

    #[test]
    fn checks() {
        assert_eq!(Packet::new_checked(&PACKET[..39]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&PACKET[..79]).unwrap_err(), Error::Truncated);
        let mut bad = PACKET;
        bad[0] = 0x4b;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn repr_round_trip() {
        let packet = Packet::new_checked(&PACKET[..]).unwrap();
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(repr.buffer_len(), PACKET.len());
        let mut out = PACKET;
        out[..40].fill(0xff);
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        // Only the traffic class and flow label are not represented.
        assert_eq!(&out[..4], &[0x60, 0, 0, 0]);
        assert_eq!(&out[4..], &PACKET[4..]);
        assert_eq!(Repr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap(), repr);
    }
}
