//! Ethernet II frames (IEEE 802.3 with an EtherType), without VLAN tags.
//!
//! ENA delivers untagged frames, so a tagged frame simply shows EtherType 0x8100 here.

use core::fmt;

use crate::bytes::{array6, be16, set_be16, Field, Rest};
use crate::{Error, Result};

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Address(pub [u8; 6]);

impl Address {
    /// The broadcast address, ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Address = Address([0xff; 6]);

    /// The six bytes of the address.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit is set; the broadcast address is multicast too.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether the group bit is clear.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The EtherType of a frame's payload, also used as Geneve's protocol type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP.
    pub const ARP: EtherType = EtherType(0x0806);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86dd);
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EtherType::IPV4 => f.write_str("IPv4"),
            EtherType::ARP => f.write_str("ARP"),
            EtherType::IPV6 => f.write_str("IPv6"),
            EtherType(other) => write!(f, "EtherType({other:#06x})"),
        }
    }
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        EtherType(value)
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        value.0
    }
}

/// The length of an Ethernet II header.
pub const HEADER_LEN: usize = 14;

mod field {
    use super::*;

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer after checking that it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds a whole header.
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

    /// The destination address.
    pub fn dst_addr(&self) -> Address {
        Address(array6(&self.buffer.as_ref()[field::DESTINATION]))
    }

    /// The source address.
    pub fn src_addr(&self) -> Address {
        Address(array6(&self.buffer.as_ref()[field::SOURCE]))
    }

    /// The EtherType of the payload.
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    /// Everything after the header, including any padding up to the 60-byte minimum.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, value: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&value.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, value: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&value.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, value: EtherType) {
        set_be16(&mut self.buffer.as_mut()[field::ETHERTYPE], value.0);
    }

    /// Everything after the header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The source address.
    pub src_addr: Address,
    /// The destination address.
    pub dst_addr: Address,
    /// The EtherType of the payload.
    pub ethertype: EtherType,
}

impl Repr {
    /// Reads the header of a checked frame; every header is representable, so this cannot fail.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr> {
        frame.check_len()?;
        Ok(Repr { src_addr: frame.src_addr(), dst_addr: frame.dst_addr(), ethertype: frame.ethertype() })
    }

    /// The length of the header that [`Repr::emit`] writes; the payload follows it.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `frame`.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    // An ARP request, padded to the 60-byte Ethernet minimum.
    static FRAME: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination
        0x02, 0x11, 0x22, 0x33, 0x44, 0x55, // source
        0x08, 0x06, // ARP
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 10, 0, 0, 1, 0, 0, 0, 0, 0,
        0, 10, 0, 0, 2, // the ARP body
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    #[test]
    fn deconstruct() {
        let frame = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), Address::BROADCAST);
        assert_eq!(frame.src_addr(), Address([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]));
        assert_eq!(frame.ethertype(), EtherType::ARP);
        assert_eq!(frame.payload().len(), 46);
        assert_eq!(&frame.payload()[..4], &[0x00, 0x01, 0x08, 0x00]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0u8; 60];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(Address::BROADCAST);
        frame.set_src_addr(Address([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]));
        frame.set_ethertype(EtherType::ARP);
        frame.payload_mut()[..28].copy_from_slice(&FRAME[14..42]);
        assert_eq!(bytes, FRAME);
    }

    #[test]
    fn repr_round_trip() {
        let frame = Frame::new_checked(&FRAME[..]).unwrap();
        let repr = Repr::parse(&frame).unwrap();
        assert_eq!(repr.buffer_len(), HEADER_LEN);
        let mut bytes = [0u8; HEADER_LEN];
        repr.emit(&mut Frame::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, FRAME[..HEADER_LEN]);
    }

    #[test]
    fn truncated() {
        assert_eq!(Frame::new_checked(&FRAME[..13]).unwrap_err(), Error::Truncated);
        let header_only = Frame::new_checked(&FRAME[..14]).unwrap();
        assert!(header_only.payload().is_empty());
    }

    #[test]
    fn addresses() {
        assert!(Address::BROADCAST.is_broadcast());
        assert!(Address::BROADCAST.is_multicast());
        let unicast = Address([0x02, 0, 0, 0, 0, 1]);
        assert!(unicast.is_unicast() && !unicast.is_broadcast());
        assert!(Address([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
        assert_eq!(format!("{unicast:?}"), "02:00:00:00:00:01");
        assert_eq!(format!("{:?}", EtherType::IPV6), "IPv6");
        assert_eq!(format!("{:?}", EtherType(0x8100)), "EtherType(0x8100)");
    }
}
