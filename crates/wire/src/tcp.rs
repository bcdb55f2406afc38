//! TCP segments (RFC 9293) and their options.
//!
//! A TCP header has no length for the payload: wrap exactly the IP payload, and
//! [`Packet::payload`] is everything after the header.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::bytes::{be16, be32, set_be16, set_be32, Field};
use crate::{checksum, ip_protocol, Error, Result};

/// The length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// The longest TCP header: a data offset of 15 words.
pub const MAX_HEADER_LEN: usize = 60;

/// The flag bits of [`Packet::flags`].
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is valid.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is valid.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

mod field {
    use super::*;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Option kinds (IANA "TCP Option Kind Numbers").
mod kind {
    pub const END_OF_LIST: u8 = 0;
    pub const NO_OPERATION: u8 = 1;
    pub const MAX_SEGMENT_SIZE: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK_RANGE: u8 = 5;
    pub const TIMESTAMP: u8 = 8;
}

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that the header, options included, fits.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the data offset against the fixed header and the buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
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

    /// The sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    /// The acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// The header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The eight flag bits; see [`flags`].
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The window, not yet scaled.
    pub fn window_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::URGENT])
    }

    /// The raw option bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// An iterator over the options.
    pub fn options_iter(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options())
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum is correct for a segment carried over IPv4.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let segment = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v4(src, dst, ip_protocol::TCP, segment.len() as u32);
        checksum::combine(&[pseudo, checksum::data(segment)]) == 0xffff
    }

    /// Whether the checksum is correct for a segment carried over IPv6.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let segment = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, ip_protocol::TCP, segment.len() as u32);
        checksum::combine(&[pseudo, checksum::data(segment)]) == 0xffff
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

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, value: u32) {
        set_be32(&mut self.buffer.as_mut()[field::SEQ_NUM], value);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, value: u32) {
        set_be32(&mut self.buffer.as_mut()[field::ACK_NUM], value);
    }

    /// Sets the header length in bytes; it must be a multiple of 4 between 20 and 60.
    /// The reserved bits are cleared.
    pub fn set_header_len(&mut self, value: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = ((value / 4) as u8) << 4;
    }

    /// Sets the eight flag bits.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the window.
    pub fn set_window_len(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::WIN_SIZE], value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::URGENT], value);
    }

    /// The raw option bytes, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..header_len]
    }

    /// Everything after the header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }

    fn fill_checksum(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let sum = checksum::combine(&[pseudo, checksum::data(self.buffer.as_ref())]);
        self.set_checksum(!sum);
    }

    /// Computes and stores the checksum for a segment carried over IPv4.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = self.buffer.as_ref().len() as u32;
        self.fill_checksum(checksum::pseudo_header_v4(src, dst, ip_protocol::TCP, len));
    }

    /// Computes and stores the checksum for a segment carried over IPv6.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        let len = self.buffer.as_ref().len() as u32;
        self.fill_checksum(checksum::pseudo_header_v6(src, dst, ip_protocol::TCP, len));
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpOption<'a> {
    /// Kind 0; the bytes after it are padding.
    EndOfList,
    /// Kind 1, used for alignment.
    NoOperation,
    /// Kind 2 (RFC 9293).
    MaxSegmentSize(u16),
    /// Kind 3, the shift count (RFC 7323).
    WindowScale(u8),
    /// Kind 4 (RFC 2018).
    SackPermitted,
    /// Kind 5, up to three left/right edges (RFC 2018).
    /// A fourth block, possible only without timestamps, is dropped when parsing.
    SackRange([Option<(u32, u32)>; 3]),
    /// Kind 8 (RFC 7323).
    Timestamp {
        /// The sender's timestamp value.
        tsval: u32,
        /// The echoed timestamp.
        tsecr: u32,
    },
    /// Any other kind, with the data after the kind and length bytes.
    Unknown {
        /// The option kind.
        kind: u8,
        /// The option data, at most 38 bytes in a valid header.
        data: &'a [u8],
    },
}

impl TcpOption<'_> {
    /// The number of bytes [`TcpOption::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::SackRange(blocks) => 2 + 8 * blocks.iter().flatten().count(),
            TcpOption::Timestamp { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the start of `buffer` and returns its length.
    ///
    /// # Panics
    /// If `buffer` is shorter than [`TcpOption::buffer_len`], or an `Unknown` option's data
    /// is longer than 253 bytes.
    pub fn emit(&self, buffer: &mut [u8]) -> usize {
        let len = self.buffer_len();
        let buffer = &mut buffer[..len];
        let kind = match *self {
            TcpOption::EndOfList => kind::END_OF_LIST,
            TcpOption::NoOperation => kind::NO_OPERATION,
            TcpOption::MaxSegmentSize(mss) => {
                set_be16(&mut buffer[2..], mss);
                kind::MAX_SEGMENT_SIZE
            }
            TcpOption::WindowScale(shift) => {
                buffer[2] = shift;
                kind::WINDOW_SCALE
            }
            TcpOption::SackPermitted => kind::SACK_PERMITTED,
            TcpOption::SackRange(blocks) => {
                let edges = blocks.iter().flatten();
                for (chunk, (left, right)) in buffer[2..].chunks_exact_mut(8).zip(edges) {
                    set_be32(&mut chunk[..4], *left);
                    set_be32(&mut chunk[4..], *right);
                }
                kind::SACK_RANGE
            }
            TcpOption::Timestamp { tsval, tsecr } => {
                set_be32(&mut buffer[2..6], tsval);
                set_be32(&mut buffer[6..10], tsecr);
                kind::TIMESTAMP
            }
            TcpOption::Unknown { kind, data } => {
                buffer[2..].copy_from_slice(data);
                kind
            }
        };
        buffer[0] = kind;
        if len > 1 {
            // Only an `Unknown` option built by the caller can be this long; a parsed one fits.
            buffer[1] = u8::try_from(len).expect("TCP option data is at most 253 bytes");
        }
        len
    }
}

/// An iterator over the options of a TCP header.
///
/// It yields [`Error::Malformed`] once and stops when an option's length is missing, too
/// short, runs past the end, or does not fit its kind. It stops after [`TcpOption::EndOfList`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpOptions<'a> {
    data: &'a [u8],
}

impl<'a> TcpOptions<'a> {
    /// Iterates over raw option bytes.
    pub fn new(data: &'a [u8]) -> TcpOptions<'a> {
        TcpOptions { data }
    }

    fn parse_one(&mut self) -> Result<TcpOption<'a>> {
        let data = self.data;
        let kind = data[0];
        match kind {
            kind::END_OF_LIST => {
                self.data = &[];
                return Ok(TcpOption::EndOfList);
            }
            kind::NO_OPERATION => {
                self.data = &data[1..];
                return Ok(TcpOption::NoOperation);
            }
            _ => {}
        }
        let len = usize::from(*data.get(1).ok_or(Error::Malformed)?);
        if len < 2 {
            return Err(Error::Malformed);
        }
        let body = data.get(2..len).ok_or(Error::Malformed)?;
        self.data = &data[len..];
        let option = match (kind, body.len()) {
            (kind::MAX_SEGMENT_SIZE, 2) => TcpOption::MaxSegmentSize(be16(body)),
            (kind::WINDOW_SCALE, 1) => TcpOption::WindowScale(body[0]),
            (kind::SACK_PERMITTED, 0) => TcpOption::SackPermitted,
            (kind::SACK_RANGE, n) if n > 0 && n.is_multiple_of(8) => {
                let mut blocks = [None; 3];
                for (slot, chunk) in blocks.iter_mut().zip(body.chunks_exact(8)) {
                    *slot = Some((be32(&chunk[..4]), be32(&chunk[4..])));
                }
                TcpOption::SackRange(blocks)
            }
            (kind::TIMESTAMP, 8) => TcpOption::Timestamp { tsval: be32(&body[..4]), tsecr: be32(&body[4..]) },
            (
                kind::MAX_SEGMENT_SIZE | kind::WINDOW_SCALE | kind::SACK_PERMITTED | kind::SACK_RANGE | kind::TIMESTAMP,
                _,
            ) => return Err(Error::Malformed),
            (kind, _) => TcpOption::Unknown { kind, data: body },
        };
        Ok(option)
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let result = self.parse_one();
        if result.is_err() {
            self.data = &[];
        }
        Some(result)
    }
}

/// The fields of a TCP header and the options the appliance cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The source port.
    pub src_port: u16,
    /// The destination port.
    pub dst_port: u16,
    /// The eight flag bits; see [`flags`].
    pub flags: u8,
    /// The sequence number.
    pub seq_number: u32,
    /// The acknowledgment number.
    pub ack_number: u32,
    /// The window, not scaled.
    pub window_len: u16,
    /// The MSS option.
    pub max_seg_size: Option<u16>,
    /// The window scale option.
    pub window_scale: Option<u8>,
    /// Whether the SACK-permitted option is present.
    pub sack_permitted: bool,
    /// The timestamp option as (tsval, tsecr).
    pub timestamp: Option<(u32, u32)>,
    /// The payload length.
    pub payload_len: usize,
}

impl Repr {
    /// Reads a checked segment.
    ///
    /// A malformed option is [`Error::Malformed`]; SACK blocks, unknown options and the
    /// urgent pointer are dropped. The checksum is not checked here because it needs the IP
    /// addresses: call [`Packet::verify_checksum_v4`] or [`Packet::verify_checksum_v6`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        let mut repr = Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            flags: packet.flags(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            window_len: packet.window_len(),
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            timestamp: None,
            payload_len: packet.payload().len(),
        };
        for option in packet.options_iter() {
            match option? {
                TcpOption::MaxSegmentSize(mss) => repr.max_seg_size = Some(mss),
                TcpOption::WindowScale(shift) => repr.window_scale = Some(shift),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::Timestamp { tsval, tsecr } => repr.timestamp = Some((tsval, tsecr)),
                _ => {}
            }
        }
        Ok(repr)
    }

    fn options(&self) -> [Option<TcpOption<'static>>; 4] {
        [
            self.max_seg_size.map(TcpOption::MaxSegmentSize),
            self.sack_permitted.then_some(TcpOption::SackPermitted),
            self.timestamp.map(|(tsval, tsecr)| TcpOption::Timestamp { tsval, tsecr }),
            self.window_scale.map(TcpOption::WindowScale),
        ]
    }

    /// The length of the header [`Repr::emit`] writes, options and padding included.
    pub fn header_len(&self) -> usize {
        let options: usize = self.options().iter().flatten().map(TcpOption::buffer_len).sum();
        HEADER_LEN + options.next_multiple_of(4)
    }

    /// The length of the whole segment: header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the header and options with a zero checksum and urgent pointer.
    ///
    /// Options go in the order MSS, SACK permitted, timestamp, window scale, padded with
    /// end-of-list bytes. Write the payload next, then call [`Packet::fill_checksum_v4`]
    /// or [`Packet::fill_checksum_v6`] on exactly the segment.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::header_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.set_header_len(self.header_len());
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_checksum(0);
        packet.set_urgent_at(0);
        let options = packet.options_mut();
        let mut at = 0;
        for option in self.options().iter().flatten() {
            at += option.emit(&mut options[at..]);
        }
        options[at..].fill(kind::END_OF_LIST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    // A Linux SYN, 40000 -> 443: MSS 8961, SACK permitted, timestamps, NOP, window scale 7.
    static SYN: [u8; 40] = [
        0x9c, 0x40, 0x01, 0xbb, // ports
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0xa0, 0x02, 0xf5, 0x6c, // data offset 10, SYN, window 62828
        0x00, 0x00, 0x00, 0x00, // checksum (filled in by the tests), urgent
        0x02, 0x04, 0x23, 0x01, // MSS 8961
        0x04, 0x02, // SACK permitted
        0x08, 0x0a, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x00, // TS 42, 0
        0x01, // NOP
        0x03, 0x03, 0x07, // window scale 7
    ];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!(packet.src_port(), 40000);
        assert_eq!(packet.dst_port(), 443);
        assert_eq!(packet.seq_number(), 0x1234_5678);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 40);
        assert_eq!(packet.flags(), flags::SYN);
        assert_eq!(packet.window_len(), 62828);
        assert_eq!(packet.urgent_at(), 0);
        assert_eq!(packet.options().len(), 20);
        assert!(packet.payload().is_empty());
        let mut options = packet.options_iter();
        assert_eq!(options.next(), Some(Ok(TcpOption::MaxSegmentSize(8961))));
        assert_eq!(options.next(), Some(Ok(TcpOption::SackPermitted)));
        assert_eq!(options.next(), Some(Ok(TcpOption::Timestamp { tsval: 42, tsecr: 0 })));
        assert_eq!(options.next(), Some(Ok(TcpOption::NoOperation)));
        assert_eq!(options.next(), Some(Ok(TcpOption::WindowScale(7))));
        assert_eq!(options.next(), None);
    }

    #[test]
    fn checksum_v4_and_v6() {
        let mut bytes = SYN;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum_v4(SRC, DST);
        assert!(packet.verify_checksum_v4(SRC, DST));
        assert!(!packet.verify_checksum_v4(DST, DST));
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        packet.fill_checksum_v6(&v6, &v6);
        assert!(packet.verify_checksum_v6(&v6, &v6));
        assert!(!packet.verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn repr_round_trip() {
        let packet = Packet::new_checked(&SYN[..]).unwrap();
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_port: 40000,
                dst_port: 443,
                flags: flags::SYN,
                seq_number: 0x1234_5678,
                ack_number: 0,
                window_len: 62828,
                max_seg_size: Some(8961),
                window_scale: Some(7),
                sack_permitted: true,
                timestamp: Some((42, 0)),
                payload_len: 0,
            }
        );
        assert_eq!(repr.header_len(), 40);
        let mut out = [0xffu8; 40];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        // The emitter puts window scale last and pads with end-of-list instead of a NOP.
        assert_eq!(&out[..36], &SYN[..36]);
        assert_eq!(&out[36..], &[0x03, 0x03, 0x07, 0x00]);
        assert_eq!(Repr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap(), repr);
    }

    #[test]
    fn repr_without_options_with_payload() {
        let repr = Repr {
            src_port: 1,
            dst_port: 2,
            flags: flags::ACK | flags::PSH,
            seq_number: 3,
            ack_number: 4,
            window_len: 5,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            timestamp: None,
            payload_len: 3,
        };
        assert_eq!(repr.buffer_len(), 23);
        let mut out = [0u8; 23];
        let mut packet = Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(b"abc");
        packet.fill_checksum_v4(SRC, DST);
        let packet = Packet::new_checked(&out[..]).unwrap();
        assert!(packet.verify_checksum_v4(SRC, DST));
        assert_eq!(packet.payload(), b"abc");
        assert_eq!(Repr::parse(&packet).unwrap(), repr);
    }

    #[test]
    fn sack_ranges_and_unknown() {
        let bytes = [
            0x01, 0x01, 0x05, 0x12, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, // 2 blocks
            0xfe, 0x04, 0xab, 0xcd, // experimental kind 254
            0x00, 0x99, // end of list, then padding that is not parsed
        ];
        let options: std::vec::Vec<_> = TcpOptions::new(&bytes).collect();
        let sack = TcpOption::SackRange([Some((1, 2)), Some((3, 4)), None]);
        let unknown = TcpOption::Unknown { kind: 0xfe, data: &[0xab, 0xcd] };
        assert_eq!(
            options,
            [Ok(TcpOption::NoOperation), Ok(TcpOption::NoOperation), Ok(sack), Ok(unknown), Ok(TcpOption::EndOfList)]
        );
        let mut out = [0u8; 24];
        assert_eq!(sack.emit(&mut out), 18);
        assert_eq!(unknown.emit(&mut out[18..]), 4);
        assert_eq!(&out[..22], &bytes[2..24]);
    }

    #[test]
    fn four_sack_blocks_keep_three() {
        let mut bytes = [0u8; 34];
        bytes[0] = 5;
        bytes[1] = 34;
        for (i, chunk) in bytes[2..].chunks_exact_mut(4).enumerate() {
            chunk[3] = i as u8;
        }
        let option = TcpOptions::new(&bytes).next().unwrap().unwrap();
        assert_eq!(option, TcpOption::SackRange([Some((0, 1)), Some((2, 3)), Some((4, 5))]));
    }

    #[test]
    fn malformed_options() {
        for bad in [
            &[0x02][..],               // no length byte
            &[0x02, 0x01, 0, 0],       // length below 2
            &[0x02, 0x05, 0x23, 0x01], // runs past the end
            &[0x02, 0x03, 0x23, 0x01], // MSS with the wrong length
            &[0x03, 0x04, 0x07, 0x00], // window scale with the wrong length
            &[0x05, 0x02, 0x00, 0x00], // SACK without blocks
            &[0x05, 0x06, 0, 0, 0, 0], // SACK with half a block
            &[0x08, 0x06, 0, 0, 0, 0], // short timestamp
            &[0xfe, 0x00],             // unknown with length 0
        ] {
            let mut options = TcpOptions::new(bad);
            assert_eq!(options.next(), Some(Err(Error::Malformed)), "{bad:?}");
            assert_eq!(options.next(), None);
        }
        let mut bytes = SYN;
        bytes[21] = 3;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn checks() {
        assert_eq!(Packet::new_checked(&SYN[..19]).unwrap_err(), Error::Truncated);
        // Data offset 10 words, but only 39 bytes.
        assert_eq!(Packet::new_checked(&SYN[..39]).unwrap_err(), Error::Truncated);
        let mut bad = SYN;
        bad[12] = 0x40;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn setters() {
        let mut bytes = SYN;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_flags(flags::SYN | flags::ACK);
        packet.set_ack_number(0x1234_5679);
        packet.set_seq_number(7);
        packet.set_src_port(443);
        packet.set_dst_port(40000);
        packet.set_window_len(1);
        packet.set_urgent_at(2);
        packet.set_header_len(20);
        assert_eq!(packet.flags(), 0x12);
        assert_eq!(packet.ack_number(), 0x1234_5679);
        assert_eq!(packet.seq_number(), 7);
        assert_eq!((packet.src_port(), packet.dst_port()), (443, 40000));
        assert_eq!((packet.window_len(), packet.urgent_at()), (1, 2));
        assert_eq!(packet.payload().len(), 20);
    }
}
