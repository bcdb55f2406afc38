//! UDP datagrams (RFC 768), which carry Geneve between GWLB and the appliance.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::bytes::{be16, set_be16, Field};
use crate::{checksum, ip_protocol, Error, Result};

/// The length of a UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use super::*;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that the length field covers the header and fits.
    ///
    /// Pass the IP payload; bytes past the length field are ignored.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the length field against the header and the buffer.
    pub fn check_len(&self) -> Result<()> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > buffer_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field: header plus payload.
    pub fn len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field; 0 means "no checksum" over IPv4.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    /// Whether the checksum is correct for an IPv4 datagram; a zero field means none was sent.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let pseudo = checksum::pseudo_header_v4(src, dst, ip_protocol::UDP, u32::from(self.len()));
        checksum::combine(&[pseudo, checksum::data(self.datagram())]) == 0xffff
    }

    /// Whether the checksum is correct for an IPv6 datagram, where it is mandatory
    /// (RFC 8200 §8.1), so a zero field fails.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let pseudo = checksum::pseudo_header_v6(src, dst, ip_protocol::UDP, u32::from(self.len()));
        checksum::combine(&[pseudo, checksum::data(self.datagram())]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }

    fn fill_checksum(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let sum = checksum::combine(&[pseudo, checksum::data(self.datagram())]);
        // A computed 0 is sent as 0xffff, because 0 on the wire means "no checksum" (RFC 768).
        self.set_checksum(match !sum {
            0 => 0xffff,
            value => value,
        });
    }

    /// Computes and stores the checksum for an IPv4 datagram; set the length and payload first.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = u32::from(self.len());
        self.fill_checksum(checksum::pseudo_header_v4(src, dst, ip_protocol::UDP, len));
    }

    /// Computes and stores the checksum for an IPv6 datagram; set the length and payload first.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        let len = u32::from(self.len());
        self.fill_checksum(checksum::pseudo_header_v6(src, dst, ip_protocol::UDP, len));
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The source port.
    pub src_port: u16,
    /// The destination port.
    pub dst_port: u16,
    /// The payload length.
    pub payload_len: usize,
}

impl Repr {
    /// Reads a checked datagram.
    ///
    /// The checksum is not checked here because it needs the IP addresses: call
    /// [`Packet::verify_checksum_v4`] or [`Packet::verify_checksum_v6`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// The length of the header [`Repr::emit`] writes.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole datagram: header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header with a zero checksum.
    ///
    /// Write the payload next, then call [`Packet::fill_checksum_v4`] or
    /// [`Packet::fill_checksum_v6`], or leave 0 for "no checksum" over IPv4.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    /// A `payload_len` over 65527 is a caller bug; the length field wraps.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(self.buffer_len() as u16);
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    // 12345 -> 53, payload "abcd", checksum over the IPv4 pseudo header:
    // c0a8+0101+c0a8+0102+0011+000c + 3039+0035+000c + 6162+6364 = 0x278b0 -> 0x78b2, !0x78b2 = 0x874d.
    static DATAGRAM: [u8; 12] = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x87, 0x4d, b'a', b'b', b'c', b'd'];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(packet.src_port(), 12345);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 12);
        assert!(!packet.is_empty());
        assert_eq!(packet.checksum(), 0x874d);
        assert_eq!(packet.payload(), b"abcd");
        assert!(packet.verify_checksum_v4(SRC, DST));
        assert!(!packet.verify_checksum_v4(DST, Ipv4Addr::new(192, 168, 1, 3)));
    }

    #[test]
    fn construct() {
        let mut bytes = [0u8; 12];
        let repr = Repr { src_port: 12345, dst_port: 53, payload_len: 4 };
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(b"abcd");
        packet.fill_checksum_v4(SRC, DST);
        assert_eq!(bytes, DATAGRAM);
        assert_eq!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap(), repr);
    }

    #[test]
    fn zero_checksum() {
        let mut bytes = DATAGRAM;
        bytes[6] = 0;
        bytes[7] = 0;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum_v4(SRC, DST));
        let v6: Ipv6Addr = "::1".parse().unwrap();
        assert!(!packet.verify_checksum_v6(&v6, &v6));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Pick the payload so that the sum comes to 0xffff and the raw checksum to 0.
        let mut bytes = [0u8; 10];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_len(10);
        let pseudo = checksum::pseudo_header_v4(SRC, DST, ip_protocol::UDP, 10);
        let partial = checksum::combine(&[pseudo, 10]);
        packet.payload_mut().copy_from_slice(&(!partial).to_be_bytes());
        packet.fill_checksum_v4(SRC, DST);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn ipv6_checksum() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut bytes = DATAGRAM;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum_v6(&src, &dst);
        assert!(packet.verify_checksum_v6(&src, &dst));
        assert!(!packet.verify_checksum_v6(&dst, &dst));
    }

    #[test]
    fn checks() {
        assert_eq!(Packet::new_checked(&DATAGRAM[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&DATAGRAM[..11]).unwrap_err(), Error::Truncated);
        let mut bad = DATAGRAM;
        bad[5] = 7;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        // Trailing bytes past the length field are not payload.
        let mut long = [0u8; 16];
        long[..12].copy_from_slice(&DATAGRAM);
        let packet = Packet::new_checked(&long[..]).unwrap();
        assert_eq!(packet.payload(), b"abcd");
        assert!(packet.verify_checksum_v4(SRC, DST));
    }
}
