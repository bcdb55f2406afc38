//! ICMP for IPv6 (RFC 4443).
//!
//! Wrap exactly the upper-layer data: the checksum covers the whole buffer plus the IPv6
//! pseudo header.

use core::net::Ipv6Addr;

use crate::bytes::{be16, set_be16, Field, Rest};
use crate::{checksum, ip_protocol, Error, Result};

/// The length of the ICMPv6 header: type, code, checksum and four message-specific bytes.
pub const HEADER_LEN: usize = 8;

/// Destination unreachable.
pub const DST_UNREACHABLE: u8 = 1;
/// Packet too big.
pub const PACKET_TOO_BIG: u8 = 2;
/// Time exceeded.
pub const TIME_EXCEEDED: u8 = 3;
/// Echo request.
pub const ECHO_REQUEST: u8 = 128;
/// Echo reply.
pub const ECHO_REPLY: u8 = 129;
/// Neighbor solicitation (RFC 4861).
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbor advertisement (RFC 4861).
pub const NEIGHBOR_ADVERT: u8 = 136;

mod field {
    use super::*;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const DATA: Rest = 8..;
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that it holds the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The echo identifier (bytes 4-5, meaningful for echo messages).
    pub fn echo_ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// The echo sequence number (bytes 6-7, meaningful for echo messages).
    pub fn echo_seq_no(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ECHO_SEQNO])
    }

    /// Everything after the 8-byte header.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }

    fn sum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u16 {
        let message = self.buffer.as_ref();
        let len = message.len() as u32;
        let pseudo = checksum::pseudo_header_v6(src, dst, ip_protocol::ICMPV6, len);
        checksum::combine(&[pseudo, checksum::data(message)])
    }

    /// Whether the checksum over the pseudo header and the whole message is correct.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.sum(src, dst) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the message code.
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::ECHO_IDENT], value);
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq_no(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::ECHO_SEQNO], value);
    }

    /// The data after the header, mutably.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }

    /// Computes the checksum over the pseudo header and the whole message and stores it.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let sum = self.sum(src, dst);
        self.set_checksum(!sum);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap())
    }

    // Echo request fe80::1 -> fe80::2, ident 0x1234, sequence 1, data "ping".
    // Sum: fe80+1 + fe80+2 + 003a + 000c + 8000 + 1234+0001 + 7069+6e67 = 0x36e4e -> 0x6e51,
    // so the checksum is 0x91ae.
    static ECHO: [u8; 12] = [0x80, 0x00, 0x91, 0xae, 0x12, 0x34, 0x00, 0x01, b'p', b'i', b'n', b'g'];

    #[test]
    fn deconstruct() {
        let (src, dst) = addrs();
        let packet = Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(packet.msg_type(), ECHO_REQUEST);
        assert_eq!(packet.code(), 0);
        assert_eq!(packet.checksum(), 0x91ae);
        assert_eq!(packet.echo_ident(), 0x1234);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.data(), b"ping");
        assert!(packet.verify_checksum(&src, &dst));
        assert!(!packet.verify_checksum(&dst, &dst));
    }

    #[test]
    fn construct() {
        let (src, dst) = addrs();
        let mut bytes = [0u8; 12];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(ECHO_REQUEST);
        packet.set_code(0);
        packet.set_echo_ident(0x1234);
        packet.set_echo_seq_no(1);
        packet.data_mut().copy_from_slice(b"ping");
        packet.fill_checksum(&src, &dst);
        assert_eq!(bytes, ECHO);
    }

    #[test]
    fn truncated() {
        assert_eq!(Packet::new_checked(&ECHO[..7]).unwrap_err(), Error::Truncated);
    }
}
