//! IPv4 headers (RFC 791).
//!
//! Options are exposed as raw bytes and otherwise skipped. Fragments are readable here;
//! [`Repr::parse`] rejects them because a `Repr` cannot describe them.

use core::net::Ipv4Addr;

use crate::bytes::{array4, be16, set_be16, Field};
use crate::{checksum, Error, Result};

/// The length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    use super::*;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the version and that the header and total lengths fit.
    ///
    /// The buffer may be longer than the total length (Ethernet padding);
    /// [`Packet::payload`] stops at the total length.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version and the length fields against each other and the buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let header_len = self.header_len();
        let total_len = usize::from(self.total_len());
        if header_len < HEADER_LEN || total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field; 4 after a successful check.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN byte (the former type of service).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length of the packet, header included.
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }

    fn flags_offset(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    /// The don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    /// The more-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// The fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK) * 8
    }

    /// Whether this packet is a fragment: more fragments follow, or it does not start at 0.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// The time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload (see [`crate::ip_protocol`]).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array4(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array4(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// The raw option bytes between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload, from the end of the header to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version.
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (value << 4);
    }

    /// Sets the header length in bytes; it must be a multiple of 4 between 20 and 60.
    pub fn set_header_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((value / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP and ECN byte.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::IDENT], value);
    }

    fn set_flags_offset(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::FLG_OFF], value);
    }

    /// Sets or clears the don't-fragment flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        let other = self.flags_offset() & !FLAG_DF;
        self.set_flags_offset(other | if value { FLAG_DF } else { 0 });
    }

    /// Sets or clears the more-fragments flag.
    pub fn set_more_frags(&mut self, value: bool) {
        let other = self.flags_offset() & !FLAG_MF;
        self.set_flags_offset(other | if value { FLAG_MF } else { 0 });
    }

    /// Sets the fragment offset in bytes; it must be a multiple of 8.
    pub fn set_frag_offset(&mut self, value: u16) {
        let flags = self.flags_offset() & !OFFSET_MASK;
        self.set_flags_offset(flags | (value / 8));
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol of the payload.
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Computes the header checksum and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::data(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(!sum);
    }

    /// The raw option bytes, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..header_len]
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an unfragmented IPv4 header, as the appliance emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The source address.
    pub src_addr: Ipv4Addr,
    /// The destination address.
    pub dst_addr: Ipv4Addr,
    /// The protocol of the payload.
    pub protocol: u8,
    /// The payload length (total length minus header length).
    pub payload_len: usize,
    /// The time to live.
    pub ttl: u8,
}

impl Repr {
    /// Reads a checked packet.
    ///
    /// A bad header checksum is [`Error::Malformed`] and a fragment is [`Error::Unsupported`].
    /// Options, DSCP/ECN, the identification and DF are not represented and are dropped.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Malformed);
        }
        if packet.is_fragment() {
            return Err(Error::Unsupported);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
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

    /// Writes a 20-byte header with its checksum; the payload is left for the caller.
    ///
    /// The identification is 0 and DF is clear, as gwlbtun sends its return traffic.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    /// A `payload_len` over 65515 is a caller bug; the total length field wraps.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp_ecn(0);
        packet.set_total_len(self.buffer_len() as u16);
        packet.set_ident(0);
        packet.set_flags_offset(0);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip_protocol;

    // 192.168.0.1 -> 192.168.0.199, UDP, 115 bytes, DF, TTL 64; 4 payload bytes shown.
    static HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7,
    ];

    fn packet_bytes() -> [u8; 0x73 + 2] {
        let mut bytes = [0u8; 0x73 + 2];
        bytes[..20].copy_from_slice(&HEADER);
        bytes[20..24].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        bytes
    }

    #[test]
    fn deconstruct() {
        let bytes = packet_bytes();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp_ecn(), 0);
        assert_eq!(packet.total_len(), 0x73);
        assert_eq!(packet.ident(), 0);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), ip_protocol::UDP);
        assert_eq!(packet.checksum(), 0xb861);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(packet.options().is_empty());
        // The two trailing bytes are padding past the total length.
        assert_eq!(packet.payload().len(), 0x73 - 20);
        assert_eq!(&packet.payload()[..4], &[0xde, 0xad, 0xbe, 0xef]);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn construct_and_fill_checksum() {
        let mut bytes = [0u8; 20];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_total_len(0x73);
        packet.set_dont_frag(true);
        packet.set_ttl(64);
        packet.set_protocol(ip_protocol::UDP);
        packet.set_src_addr(Ipv4Addr::new(192, 168, 0, 1));
        packet.set_dst_addr(Ipv4Addr::new(192, 168, 0, 199));
        packet.fill_checksum();
        assert_eq!(bytes, HEADER);
    }

    #[test]
    fn fragments() {
        let mut bytes = packet_bytes();
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_dont_frag(false);
        packet.set_more_frags(true);
        assert!(packet.is_fragment() && packet.frag_offset() == 0);
        packet.set_more_frags(false);
        packet.set_frag_offset(1480);
        assert!(packet.is_fragment() && !packet.more_frags());
        assert_eq!(packet.frag_offset(), 1480);
        assert_eq!(&bytes[6..8], &[0x00, 0xb9]);
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum();
        assert_eq!(Repr::parse(&packet).unwrap_err(), Error::Unsupported);
    }

    #[test]
    fn options_are_skipped() {
        let mut bytes = [0u8; 32];
        bytes[..20].copy_from_slice(&HEADER);
        bytes[0] = 0x46;
        bytes[3] = 32;
        bytes[20..24].copy_from_slice(&[0x01, 0x01, 0x01, 0x00]);
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.options(), &[0x01, 0x01, 0x01, 0x00]);
        assert_eq!(packet.payload().len(), 8);
        assert_eq!(Repr::parse(&packet).unwrap().payload_len, 8);
    }

    #[test]
    fn checks() {
        let bytes = packet_bytes();
        assert_eq!(Packet::new_checked(&bytes[..19]).unwrap_err(), Error::Truncated);
        // Total length 115 but only 100 bytes.
        assert_eq!(Packet::new_checked(&bytes[..100]).unwrap_err(), Error::Truncated);
        let mut bad = bytes;
        bad[0] = 0x65;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        let mut bad = bytes;
        bad[0] = 0x44;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        let mut bad = bytes;
        bad[2] = 0;
        bad[3] = 19;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        // IHL 15 (60 bytes) beyond a total length of 40.
        let mut bad = bytes;
        bad[0] = 0x4f;
        bad[3] = 40;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        let mut bad = bytes;
        bad[11] ^= 1;
        let packet = Packet::new_checked(&bad[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Repr::parse(&packet).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn repr_round_trip() {
        let bytes = packet_bytes();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_addr: Ipv4Addr::new(192, 168, 0, 1),
                dst_addr: Ipv4Addr::new(192, 168, 0, 199),
                protocol: ip_protocol::UDP,
                payload_len: 0x73 - 20,
                ttl: 64,
            }
        );
        assert_eq!(repr.buffer_len(), 0x73);
        let mut out = [0xffu8; 0x73];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        // The emitted header differs from the fixture only in DF and therefore the checksum.
        let emitted = Packet::new_checked(&out[..]).unwrap();
        assert!(emitted.verify_checksum() && !emitted.dont_frag());
        assert_eq!(Repr::parse(&emitted).unwrap(), repr);
        assert_eq!(&out[..6], &HEADER[..6]);
        assert_eq!(&out[8..10], &HEADER[8..10]);
        assert_eq!(&out[12..20], &HEADER[12..20]);
    }
}
