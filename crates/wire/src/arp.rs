//! ARP (RFC 826) for Ethernet hardware addresses and IPv4 protocol addresses only.
//!
//! The appliance answers ARP for its own IPv4 address; no other combination occurs on an AWS
//! subnet, so [`Packet::new_checked`] rejects the rest as [`Error::Unsupported`] and the getters
//! can use fixed offsets.

use core::net::Ipv4Addr;

use crate::bytes::{array4, array6, be16, set_be16, Field};
use crate::ethernet::{Address, EtherType};
use crate::{Error, Result};

/// The length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// Hardware type 1, Ethernet.
pub const HARDWARE_ETHERNET: u16 = 1;

mod field {
    use super::*;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// The length of the fixed part that says which address types follow.
const FIXED_LEN: usize = 8;

/// An ARP operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// 1: who has this protocol address?
    Request,
    /// 2: this protocol address is at this hardware address.
    Reply,
    /// Any other code, kept so that the packet can be re-emitted unchanged.
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(value: u16) -> Self {
        match value {
            1 => Operation::Request,
            2 => Operation::Reply,
            other => Operation::Unknown(other),
        }
    }
}

impl From<Operation> for u16 {
    fn from(value: Operation) -> Self {
        match value {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(other) => other,
        }
    }
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that it is a whole Ethernet/IPv4 ARP packet.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// Checks the address types and the length.
    pub fn check(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < FIXED_LEN {
            return Err(Error::Truncated);
        }
        if self.hardware_type() != HARDWARE_ETHERNET
            || self.protocol_type() != EtherType::IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        if len < PACKET_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The hardware type; 1 after a successful check.
    pub fn hardware_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::HTYPE])
    }

    /// The protocol type; IPv4 after a successful check.
    pub fn protocol_type(&self) -> EtherType {
        EtherType(be16(&self.buffer.as_ref()[field::PTYPE]))
    }

    /// The hardware address length; 6 after a successful check.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// The protocol address length; 4 after a successful check.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// The operation.
    pub fn operation(&self) -> Operation {
        Operation::from(be16(&self.buffer.as_ref()[field::OPER]))
    }

    /// The sender's MAC address.
    pub fn source_hardware_addr(&self) -> Address {
        Address(array6(&self.buffer.as_ref()[field::SHA]))
    }

    /// The sender's IPv4 address.
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array4(&self.buffer.as_ref()[field::SPA]))
    }

    /// The target's MAC address; zero in a request.
    pub fn target_hardware_addr(&self) -> Address {
        Address(array6(&self.buffer.as_ref()[field::THA]))
    }

    /// The target's IPv4 address.
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array4(&self.buffer.as_ref()[field::TPA]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hardware type.
    pub fn set_hardware_type(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::HTYPE], value);
    }

    /// Sets the protocol type.
    pub fn set_protocol_type(&mut self, value: EtherType) {
        set_be16(&mut self.buffer.as_mut()[field::PTYPE], value.0);
    }

    /// Sets the hardware address length.
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length.
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, value: Operation) {
        set_be16(&mut self.buffer.as_mut()[field::OPER], value.into());
    }

    /// Sets the sender's MAC address.
    pub fn set_source_hardware_addr(&mut self, value: Address) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&value.0);
    }

    /// Sets the sender's IPv4 address.
    pub fn set_source_protocol_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&value.octets());
    }

    /// Sets the target's MAC address.
    pub fn set_target_hardware_addr(&mut self, value: Address) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&value.0);
    }

    /// Sets the target's IPv4 address.
    pub fn set_target_protocol_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&value.octets());
    }
}

/// The fields of an ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr {
    /// Ethernet hardware addresses and IPv4 protocol addresses, the only kind supported.
    EthernetIpv4 {
        /// Request, reply or another code.
        operation: Operation,
        /// The sender's MAC address.
        source_hardware_addr: Address,
        /// The sender's IPv4 address.
        source_protocol_addr: Ipv4Addr,
        /// The target's MAC address.
        target_hardware_addr: Address,
        /// The target's IPv4 address.
        target_protocol_addr: Ipv4Addr,
    },
}

impl Repr {
    /// Reads a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check()?;
        Ok(Repr::EthernetIpv4 {
            operation: packet.operation(),
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: packet.source_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// The length of the packet [`Repr::emit`] writes: [`PACKET_LEN`].
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the whole packet.
    ///
    /// # Panics
    /// If the buffer is shorter than [`PACKET_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let Repr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_hardware_addr,
            target_protocol_addr,
        } = *self;
        packet.set_hardware_type(HARDWARE_ETHERNET);
        packet.set_protocol_type(EtherType::IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(operation);
        packet.set_source_hardware_addr(source_hardware_addr);
        packet.set_source_protocol_addr(source_protocol_addr);
        packet.set_target_hardware_addr(target_hardware_addr);
        packet.set_target_protocol_addr(target_protocol_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 10.0.0.2? Tell 10.0.0.1 (02:11:22:33:44:55).
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
        0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 10, 0, 0, 1, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // target
    ];

    fn request_repr() -> Repr {
        Repr::EthernetIpv4 {
            operation: Operation::Request,
            source_hardware_addr: Address([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]),
            source_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
            target_hardware_addr: Address([0; 6]),
            target_protocol_addr: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(packet.operation(), Operation::Request);
        assert_eq!(packet.source_protocol_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(packet.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(packet.target_hardware_addr(), Address([0; 6]));
        assert_eq!(Repr::parse(&packet).unwrap(), request_repr());
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 28];
        let repr = request_repr();
        assert_eq!(repr.buffer_len(), 28);
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, REQUEST);
    }

    #[test]
    fn reply_and_unknown_operations() {
        let mut bytes = REQUEST;
        bytes[7] = 2;
        assert_eq!(Packet::new_checked(&bytes[..]).unwrap().operation(), Operation::Reply);
        bytes[7] = 9;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.operation(), Operation::Unknown(9));
        assert_eq!(u16::from(Operation::Unknown(9)), 9);
    }

    #[test]
    fn rejects_other_address_types_and_truncation() {
        assert_eq!(Packet::new_checked(&REQUEST[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&REQUEST[..27]).unwrap_err(), Error::Truncated);
        for (at, value) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut bytes = REQUEST;
            bytes[at] = value;
            assert_eq!(Packet::new_checked(&bytes[..]).unwrap_err(), Error::Unsupported);
        }
    }
}
