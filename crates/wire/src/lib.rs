//! Zero-copy, `no_std`, no-alloc views of the packets a GWLB appliance sees.
//!
//! The modules follow the layers of a frame that AWS Gateway Load Balancer sends to an appliance:
//! Ethernet, then IPv4, then UDP to port 6081, then Geneve with the three AWS options, then the
//! customer's inner IPv4 or IPv6 packet (with no inner Ethernet header).
//!
//! - [`checksum`]: the Internet checksum, pseudo headers and incremental updates (RFC 1071, RFC 1624).
//! - [`ethernet`]: Ethernet II frames and MAC addresses.
//! - [`arp`]: ARP for Ethernet and IPv4, which the appliance must answer for its own address.
//! - [`ipv4`] and [`ipv6`]: IP headers; [`ipv6::Packet::upper_layer`] walks the extension headers.
//! - [`udp`], [`tcp`] (with an option iterator and emitter), [`icmpv4`] and [`icmpv6`].
//! - [`geneve`]: the Geneve header (RFC 8926), its option TLVs and the AWS option class 0x0108.
//! - [`inner`]: a one-call summary of the inner packet (addresses, protocol, ports, flags,
//!   fragment state) for flow lookup.
//! - [`websocket`]: WebSocket frame headers, masking and framing rules (RFC 6455), for
//!   inspecting the byte stream of a TCP flow rather than a packet; it has its own error type.
//! - `tls` (feature `alloc`): a peek at the start of a TCP stream for a TLS ClientHello's server
//!   name and ALPN offer, with its own error type. It is the one module that allocates, and only
//!   with the `alloc` feature: it runs once per intercepted connection, not per packet, and its
//!   result owns its strings.
//!
//! Each layer follows one pattern.
//! A `Packet<T: AsRef<[u8]>>` (or `Frame`) wraps a buffer without copying it.
//! Getters read fields in network byte order; setters exist only where `T: AsMut<[u8]>`.
//! A `Repr` is the small owned summary of a header, with `parse`, `emit` and `buffer_len`.
//!
//! # Example
//!
//! Walking a frame from GWLB down to the inner flow:
//!
//! ```
//! use flowdog_wire::geneve::{self, AwsOptions};
//! use flowdog_wire::inner::{self, Summary};
//! use flowdog_wire::{ip_protocol, EtherType, Error, EthernetFrame, GenevePacket, Ipv4Packet, UdpPacket};
//!
//! fn classify(frame: &[u8]) -> flowdog_wire::Result<(AwsOptions, Summary)> {
//!     let frame = EthernetFrame::new_checked(frame)?;
//!     if frame.ethertype() != EtherType::IPV4 {
//!         return Err(Error::Unsupported);
//!     }
//!     let ip = Ipv4Packet::new_checked(frame.payload())?;
//!     if ip.protocol() != ip_protocol::UDP || ip.is_fragment() {
//!         return Err(Error::Unsupported);
//!     }
//!     let udp = UdpPacket::new_checked(ip.payload())?;
//!     if udp.dst_port() != geneve::UDP_PORT {
//!         return Err(Error::Unsupported);
//!     }
//!     let geneve = GenevePacket::new_checked(udp.payload())?;
//!     let aws = AwsOptions::parse(geneve.options())?;
//!     let summary = inner::summarize(geneve.protocol(), geneve.payload())?;
//!     Ok((aws, summary))
//! }
//!
//! assert_eq!(classify(&[0; 10]), Err(Error::Truncated));
//! ```
//!
//! # The no-panic contract
//!
//! Untrusted bytes always go through `new_checked`, which checks every length the getters rely on.
//! After `new_checked` succeeds, **no getter and no `Repr::parse` can panic, whatever the bytes
//! are**: the fuzz target in `fuzz/` and the property tests exercise exactly that.
//! `new_unchecked` skips the checks and is meant for emission into buffers the caller sized with
//! `buffer_len`; there, and after a setter changes a length field, accessors may panic.
//! `emit` panics if its buffer is too small for the header it writes, because that is a caller
//! bug; sizing the buffer with `buffer_len()` is always enough.
//!
//! Errors are one small `Copy` enum so the datapath can count drop reasons without allocating:
//! [`Error::Truncated`] means the buffer holds fewer bytes than a header or a length field needs,
//! [`Error::Malformed`] means a field value is inconsistent or illegal,
//! and [`Error::Unsupported`] means the packet is legal but not something this crate handles.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Only `tls` allocates, and only with the `alloc` feature; see its module doc.
#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

use core::fmt;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod geneve;
pub mod icmpv4;
pub mod icmpv6;
pub mod inner;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
#[cfg(feature = "alloc")]
pub mod tls;
pub mod udp;
pub mod websocket;

#[doc(hidden)]
pub mod fuzzing;

pub use arp::Packet as ArpPacket;
pub use ethernet::{Address as EthernetAddress, EtherType, Frame as EthernetFrame};
pub use geneve::Packet as GenevePacket;
pub use icmpv4::Packet as Icmpv4Packet;
pub use icmpv6::Packet as Icmpv6Packet;
pub use ipv4::Packet as Ipv4Packet;
pub use ipv6::Packet as Ipv6Packet;
pub use tcp::Packet as TcpPacket;
pub use udp::Packet as UdpPacket;

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than a header, or than a length field says it should be.
    Truncated,
    /// A field has an illegal or inconsistent value.
    Malformed,
    /// The packet is legal but uses a feature this crate does not handle.
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed packet",
            Error::Unsupported => "unsupported packet",
        })
    }
}

impl core::error::Error for Error {}

/// The result type of every fallible operation in this crate.
pub type Result<T> = core::result::Result<T, Error>;

/// IP protocol numbers, used both in the IPv4 protocol field and the IPv6 next header field
/// (IANA "Assigned Internet Protocol Numbers").
pub mod ip_protocol {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating security payload.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONXT: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
}

/// Big-endian field access shared by the modules.
///
/// Callers pass slices that are exactly the field, taken with a `mod field` range, so the
/// indexing here cannot fail once the range itself was in bounds.
pub(crate) mod bytes {
    use core::ops::{Range, RangeFrom};

    pub(crate) type Field = Range<usize>;
    pub(crate) type Rest = RangeFrom<usize>;

    #[inline]
    pub(crate) fn be16(b: &[u8]) -> u16 {
        u16::from_be_bytes([b[0], b[1]])
    }

    #[inline]
    pub(crate) fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    #[inline]
    pub(crate) fn be64(b: &[u8]) -> u64 {
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    #[inline]
    pub(crate) fn set_be16(b: &mut [u8], value: u16) {
        b[..2].copy_from_slice(&value.to_be_bytes());
    }

    #[inline]
    pub(crate) fn set_be32(b: &mut [u8], value: u32) {
        b[..4].copy_from_slice(&value.to_be_bytes());
    }

    #[inline]
    pub(crate) fn set_be64(b: &mut [u8], value: u64) {
        b[..8].copy_from_slice(&value.to_be_bytes());
    }

    #[inline]
    pub(crate) fn array4(b: &[u8]) -> [u8; 4] {
        [b[0], b[1], b[2], b[3]]
    }

    #[inline]
    pub(crate) fn array6(b: &[u8]) -> [u8; 6] {
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    #[inline]
    pub(crate) fn array16(b: &[u8]) -> [u8; 16] {
        let mut out = [0; 16];
        out.copy_from_slice(&b[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn error_display() {
        assert_eq!(Error::Truncated.to_string(), "truncated packet");
        assert_eq!(Error::Malformed.to_string(), "malformed packet");
        assert_eq!(Error::Unsupported.to_string(), "unsupported packet");
    }
}
