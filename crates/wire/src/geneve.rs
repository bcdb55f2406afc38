//! Geneve (RFC 8926) and the options AWS Gateway Load Balancer adds to it.
//!
//! GWLB sends each customer packet as IPv4/UDP to port 6081, a Geneve header with protocol
//! type 0x0800 or 0x86DD (an inner L3 packet, no inner Ethernet), and three options of class
//! 0x0108: the VPC endpoint ID, the attachment ID and the flow cookie. The appliance returns
//! the packet with the Geneve header unchanged, so the raw options stay available as bytes.

use crate::bytes::{be16, be32, be64, set_be16, set_be32, set_be64, Field};
use crate::{Error, Result};

/// The UDP destination port of Geneve, in both directions.
pub const UDP_PORT: u16 = 6081;

/// The length of the fixed Geneve header, before the options.
pub const BASE_LEN: usize = 8;

/// The longest option area: the 6-bit length counts 4-byte words.
pub const MAX_OPTIONS_LEN: usize = 63 * 4;

/// The option class GWLB uses.
pub const AWS_OPTION_CLASS: u16 = 0x0108;

/// The length of the three AWS options as [`emit_aws_options`] writes them.
pub const AWS_OPTIONS_LEN: usize = 32;

/// The option types of [`AWS_OPTION_CLASS`].
pub mod aws_type {
    /// The GWLB endpoint that the traffic came through (`vpce-…`), 8 bytes.
    pub const VPC_ENDPOINT_ID: u8 = 1;
    /// The attachment ID, 8 bytes; opaque, zero at the time of writing.
    pub const ATTACHMENT_ID: u8 = 2;
    /// The opaque per-flow cookie, 4 bytes.
    pub const FLOW_COOKIE: u8 = 3;
}

mod field {
    use super::*;

    pub const VER_OPT_LEN: usize = 0;
    pub const FLAGS: usize = 1;
    pub const PROTOCOL: Field = 2..4;
    pub const VNI: Field = 4..8;
}

const FLAG_OAM: u8 = 0x80;
const FLAG_CRITICAL: u8 = 0x40;
const OPTION_CRITICAL: u8 = 0x80;
const OPTION_HEADER_LEN: usize = 4;

/// A view of a Geneve header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that the header and its options fit.
    ///
    /// The version is not checked here, so that a caller can count unknown versions
    /// separately; [`Repr::parse`] rejects them.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the header and its options fit in the buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < BASE_LEN || self.header_len() > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 2-bit version; only 0 is defined.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_OPT_LEN] >> 6
    }

    /// The length of the options in bytes.
    pub fn options_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_OPT_LEN] & 0x3f) * 4
    }

    /// The length of the whole header: 8 bytes plus the options.
    pub fn header_len(&self) -> usize {
        BASE_LEN + self.options_len()
    }

    /// The O bit: a control packet, whose payload must not be forwarded.
    pub fn oam(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_OAM != 0
    }

    /// The C bit: some option has its critical bit set.
    pub fn critical(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_CRITICAL != 0
    }

    /// The protocol type of the payload, an EtherType; GWLB uses 0x0800 and 0x86DD.
    pub fn protocol(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The 24-bit virtual network identifier; GWLB sends 0.
    pub fn vni(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::VNI]) >> 8
    }

    /// The raw option TLVs.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[BASE_LEN..self.header_len()]
    }

    /// An iterator over the option TLVs.
    pub fn options_iter(&self) -> Options<'_> {
        Options::new(self.options())
    }

    /// Everything after the header: for GWLB, the inner IP packet.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version.
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_OPT_LEN];
        *b = (*b & 0x3f) | (value << 6);
    }

    /// Sets the length of the options in bytes; it must be a multiple of 4 up to 252.
    pub fn set_options_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_OPT_LEN];
        *b = (*b & 0xc0) | ((value / 4) as u8 & 0x3f);
    }

    fn set_flag(&mut self, flag: u8, value: bool) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = if value { *b | flag } else { *b & !flag };
    }

    /// Sets or clears the O bit.
    pub fn set_oam(&mut self, value: bool) {
        self.set_flag(FLAG_OAM, value);
    }

    /// Sets or clears the C bit.
    pub fn set_critical(&mut self, value: bool) {
        self.set_flag(FLAG_CRITICAL, value);
    }

    /// Sets the protocol type.
    pub fn set_protocol(&mut self, value: u16) {
        set_be16(&mut self.buffer.as_mut()[field::PROTOCOL], value);
    }

    /// Sets the VNI; bits above the low 24 are ignored. The reserved byte after it is cleared.
    pub fn set_vni(&mut self, value: u32) {
        set_be32(&mut self.buffer.as_mut()[field::VNI], value << 8);
    }

    /// The raw option TLVs, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[BASE_LEN..header_len]
    }

    /// Everything after the header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// One Geneve option TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GeneveOption<'a> {
    /// The option class.
    pub class: u16,
    /// The type, without the critical bit.
    pub type_: u8,
    /// The critical bit: a receiver that does not know the option must drop the packet.
    pub critical: bool,
    /// The option data, a multiple of 4 bytes.
    pub data: &'a [u8],
}

/// An iterator over Geneve option TLVs.
///
/// An option whose header or data runs past the end yields [`Error::Malformed`] once,
/// then the iterator stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options<'a> {
    data: &'a [u8],
}

impl<'a> Options<'a> {
    /// Iterates over raw option bytes.
    pub fn new(data: &'a [u8]) -> Options<'a> {
        Options { data }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<GeneveOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let data = self.data;
        let option = data.get(..OPTION_HEADER_LEN).and_then(|header| {
            let end = OPTION_HEADER_LEN + usize::from(header[3] & 0x1f) * 4;
            let option = GeneveOption {
                class: be16(&header[..2]),
                type_: header[2] & !OPTION_CRITICAL,
                critical: header[2] & OPTION_CRITICAL != 0,
                data: data.get(OPTION_HEADER_LEN..end)?,
            };
            Some((option, end))
        });
        match option {
            Some((option, end)) => {
                self.data = &data[end..];
                Some(Ok(option))
            }
            None => {
                self.data = &[];
                Some(Err(Error::Malformed))
            }
        }
    }
}

/// The three options GWLB attaches to every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AwsOptions {
    /// The VPC endpoint ID (the hex digits of `vpce-…`).
    pub vpc_endpoint_id: u64,
    /// The attachment ID.
    pub attachment_id: u64,
    /// The flow cookie.
    pub flow_cookie: u32,
    /// How many other options there were; they stay in the raw header that is echoed back.
    pub unknown: u8,
}

impl AwsOptions {
    /// Walks the option TLVs in any order and extracts the AWS options.
    ///
    /// Each of the three must be present exactly once with its data length (8, 8 and 4 bytes),
    /// like gwlbtun requires, and the TLVs must be well formed; anything else is
    /// [`Error::Malformed`]. Options of other classes or types are counted in `unknown`.
    #[inline]
    pub fn parse(options: &[u8]) -> Result<AwsOptions> {
        // The layout GWLB sends (gwlb-facts.md §2): types 1, 2, 3 in order, nothing else. Checked
        // with three 4-byte compares instead of the walk; it means exactly what the walk would.
        if let Some(o) = options.get(..AWS_OPTIONS_LEN).filter(|_| options.len() == AWS_OPTIONS_LEN) {
            let c = AWS_OPTION_CLASS.to_be_bytes();
            if o[0..4] == [c[0], c[1], aws_type::VPC_ENDPOINT_ID, 2]
                && o[12..16] == [c[0], c[1], aws_type::ATTACHMENT_ID, 2]
                && o[24..28] == [c[0], c[1], aws_type::FLOW_COOKIE, 1]
            {
                return Ok(AwsOptions {
                    vpc_endpoint_id: be64(&o[4..12]),
                    attachment_id: be64(&o[16..24]),
                    flow_cookie: be32(&o[28..32]),
                    unknown: 0,
                });
            }
        }
        Self::parse_walk(options)
    }

    /// The general case of [`AwsOptions::parse`]: any order, other options mixed in.
    fn parse_walk(options: &[u8]) -> Result<AwsOptions> {
        let mut vpc_endpoint_id = None;
        let mut attachment_id = None;
        let mut flow_cookie = None;
        let mut unknown: u8 = 0;
        for option in Options::new(options) {
            let option = option?;
            if option.class != AWS_OPTION_CLASS {
                unknown = unknown.saturating_add(1);
                continue;
            }
            match (option.type_, option.data.len()) {
                (aws_type::VPC_ENDPOINT_ID, 8) if vpc_endpoint_id.is_none() => {
                    vpc_endpoint_id = Some(be64(option.data));
                }
                (aws_type::ATTACHMENT_ID, 8) if attachment_id.is_none() => {
                    attachment_id = Some(be64(option.data));
                }
                (aws_type::FLOW_COOKIE, 4) if flow_cookie.is_none() => {
                    flow_cookie = Some(be32(option.data));
                }
                (aws_type::VPC_ENDPOINT_ID..=aws_type::FLOW_COOKIE, _) => return Err(Error::Malformed),
                _ => unknown = unknown.saturating_add(1),
            }
        }
        match (vpc_endpoint_id, attachment_id, flow_cookie) {
            (Some(vpc_endpoint_id), Some(attachment_id), Some(flow_cookie)) => {
                Ok(AwsOptions { vpc_endpoint_id, attachment_id, flow_cookie, unknown })
            }
            _ => Err(Error::Malformed),
        }
    }
}

/// Writes the three AWS options in type order 1, 2, 3 and returns [`AWS_OPTIONS_LEN`].
///
/// # Panics
/// If `buf` is shorter than [`AWS_OPTIONS_LEN`].
pub fn emit_aws_options(buf: &mut [u8], vpc_endpoint_id: u64, attachment_id: u64, flow_cookie: u32) -> usize {
    let buf = &mut buf[..AWS_OPTIONS_LEN];
    let class = AWS_OPTION_CLASS.to_be_bytes();
    buf[0..4].copy_from_slice(&[class[0], class[1], aws_type::VPC_ENDPOINT_ID, 2]);
    set_be64(&mut buf[4..12], vpc_endpoint_id);
    buf[12..16].copy_from_slice(&[class[0], class[1], aws_type::ATTACHMENT_ID, 2]);
    set_be64(&mut buf[16..24], attachment_id);
    buf[24..28].copy_from_slice(&[class[0], class[1], aws_type::FLOW_COOKIE, 1]);
    set_be32(&mut buf[28..32], flow_cookie);
    AWS_OPTIONS_LEN
}

/// The fields of a Geneve header, with the options as raw TLVs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr<'a> {
    /// The protocol type of the payload.
    pub protocol: u16,
    /// The 24-bit VNI.
    pub vni: u32,
    /// The O bit.
    pub oam: bool,
    /// The C bit.
    pub critical: bool,
    /// The raw option TLVs: a multiple of 4 bytes, at most [`MAX_OPTIONS_LEN`].
    pub options: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Reads a checked header.
    ///
    /// A version other than 0 is [`Error::Unsupported`] (RFC 8926 §3.4 says to drop it);
    /// a TLV that runs past the option area is [`Error::Malformed`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>> {
        packet.check_len()?;
        if packet.version() != 0 {
            return Err(Error::Unsupported);
        }
        let buffer: &'a [u8] = packet.buffer.as_ref();
        let options = &buffer[BASE_LEN..packet.header_len()];
        if Options::new(options).any(|option| option.is_err()) {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            protocol: packet.protocol(),
            vni: packet.vni(),
            oam: packet.oam(),
            critical: packet.critical(),
            options,
        })
    }

    /// The length of the header [`Repr::emit`] writes; the payload follows it.
    pub const fn buffer_len(&self) -> usize {
        BASE_LEN + self.options.len()
    }

    /// Writes the header with version 0 and zero reserved bits, and copies the options.
    ///
    /// # Panics
    /// If the options are not a multiple of 4 bytes or longer than [`MAX_OPTIONS_LEN`],
    /// or the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        assert!(
            self.options.len().is_multiple_of(4) && self.options.len() <= MAX_OPTIONS_LEN,
            "Geneve options must be whole words and at most 252 bytes"
        );
        let buffer = packet.buffer.as_mut();
        buffer[field::VER_OPT_LEN] = (self.options.len() / 4) as u8;
        buffer[field::FLAGS] = 0;
        packet.set_oam(self.oam);
        packet.set_critical(self.critical);
        packet.set_protocol(self.protocol);
        packet.set_vni(self.vni);
        packet.options_mut().copy_from_slice(self.options);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The header GWLB sends: version 0, 8 option words, IPv4 inside, VNI 0, then
    // endpoint ID 0x0123456789abcdef, attachment ID 0 and flow cookie 0xcafef00d.
    static HEADER: [u8; 40] = [
        0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // base
        0x01, 0x08, 0x01, 0x02, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, // endpoint ID
        0x01, 0x08, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // attachment ID
        0x01, 0x08, 0x03, 0x01, 0xca, 0xfe, 0xf0, 0x0d, // flow cookie
    ];

    fn expected() -> AwsOptions {
        AwsOptions { vpc_endpoint_id: 0x0123_4567_89ab_cdef, attachment_id: 0, flow_cookie: 0xcafe_f00d, unknown: 0 }
    }

    #[test]
    fn deconstruct() {
        let mut bytes = [0u8; 44];
        bytes[..40].copy_from_slice(&HEADER);
        bytes[40..].copy_from_slice(&[0x45, 0, 0, 20]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 0);
        assert_eq!(packet.options_len(), 32);
        assert_eq!(packet.header_len(), 40);
        assert!(!packet.oam() && !packet.critical());
        assert_eq!(packet.protocol(), 0x0800);
        assert_eq!(packet.vni(), 0);
        assert_eq!(packet.options(), &HEADER[8..]);
        assert_eq!(packet.payload(), &[0x45, 0, 0, 20]);
        let options: std::vec::Vec<_> = packet.options_iter().map(Result::unwrap).collect();
        assert_eq!(options.len(), 3);
        assert_eq!(
            options[2],
            GeneveOption {
                class: AWS_OPTION_CLASS,
                type_: aws_type::FLOW_COOKIE,
                critical: false,
                data: &[0xca, 0xfe, 0xf0, 0x0d],
            }
        );
        assert_eq!(AwsOptions::parse(packet.options()).unwrap(), expected());
    }

    #[test]
    fn emit_matches_gwlb() {
        let mut bytes = [0u8; 40];
        let n = emit_aws_options(&mut bytes[8..], 0x0123_4567_89ab_cdef, 0, 0xcafe_f00d);
        assert_eq!(n, AWS_OPTIONS_LEN);
        let repr = Repr { protocol: 0x0800, vni: 0, oam: false, critical: false, options: &HEADER[8..] };
        assert_eq!(repr.buffer_len(), 40);
        let mut out = [0xffu8; 40];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, HEADER);
        assert_eq!(&bytes[8..], &HEADER[8..]);
        assert_eq!(Repr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap(), repr);
    }

    #[test]
    fn flags_vni_and_version() {
        let mut bytes = HEADER;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_oam(true);
        packet.set_critical(true);
        packet.set_vni(0x00ab_cdef);
        packet.set_protocol(0x86dd);
        assert_eq!(&bytes[..8], &[0x08, 0xc0, 0x86, 0xdd, 0xab, 0xcd, 0xef, 0x00]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.oam() && packet.critical());
        assert_eq!(packet.vni(), 0x00ab_cdef);
        let mut bytes = HEADER;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(1);
        assert_eq!(packet.version(), 1);
        assert_eq!(packet.options_len(), 32);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet).unwrap_err(), Error::Unsupported);
    }

    #[test]
    fn shuffled_options_with_an_unknown_one() {
        let mut options = [0u8; 40];
        options[..8].copy_from_slice(&HEADER[32..40]); // cookie first
                                                       // An unknown, critical option of another class with 4 data bytes.
        options[8..16].copy_from_slice(&[0xff, 0xff, 0x85, 0x01, 1, 2, 3, 4]);
        options[16..28].copy_from_slice(&HEADER[20..32]); // attachment ID
        options[28..40].copy_from_slice(&HEADER[8..20]); // endpoint ID
        let parsed = AwsOptions::parse(&options).unwrap();
        assert_eq!(parsed, AwsOptions { unknown: 1, ..expected() });
        let unknown = Options::new(&options).nth(1).unwrap().unwrap();
        assert_eq!((unknown.class, unknown.type_, unknown.critical), (0xffff, 5, true));
        // An AWS-class option of an undefined type counts as unknown too.
        options[8..12].copy_from_slice(&[0x01, 0x08, 0x04, 0x01]);
        assert_eq!(AwsOptions::parse(&options).unwrap().unknown, 1);
    }

    #[test]
    fn aws_options_errors() {
        // Missing the cookie.
        assert_eq!(AwsOptions::parse(&HEADER[8..32]).unwrap_err(), Error::Malformed);
        // The cookie twice.
        let mut twice = [0u8; 40];
        twice[..32].copy_from_slice(&HEADER[8..]);
        twice[32..].copy_from_slice(&HEADER[32..]);
        assert_eq!(AwsOptions::parse(&twice).unwrap_err(), Error::Malformed);
        // The endpoint ID with 4 data bytes.
        let mut short = [0u8; 28];
        short[..8].copy_from_slice(&[0x01, 0x08, 0x01, 0x01, 0, 0, 0, 1]);
        short[8..].copy_from_slice(&HEADER[20..]);
        assert_eq!(AwsOptions::parse(&short).unwrap_err(), Error::Malformed);
        // The cookie's length says 2 words, running past the end.
        let mut long = HEADER;
        long[35] = 2;
        assert_eq!(AwsOptions::parse(&long[8..]).unwrap_err(), Error::Malformed);
        assert_eq!(AwsOptions::parse(&[]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn option_past_the_end() {
        let mut bytes = HEADER;
        bytes[35] = 2;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let mut options = packet.options_iter();
        assert!(options.next().unwrap().is_ok());
        assert!(options.next().unwrap().is_ok());
        assert_eq!(options.next(), Some(Err(Error::Malformed)));
        assert_eq!(options.next(), None);
        assert_eq!(Repr::parse(&packet).unwrap_err(), Error::Malformed);
        // A partial option header.
        let mut options = Options::new(&[0x01, 0x08]);
        assert_eq!(options.next(), Some(Err(Error::Malformed)));
        assert_eq!(options.next(), None);
    }

    #[test]
    fn truncated() {
        assert_eq!(Packet::new_checked(&HEADER[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&HEADER[..39]).unwrap_err(), Error::Truncated);
        let packet = Packet::new_checked(&HEADER[..]).unwrap();
        assert!(packet.payload().is_empty());
    }
}
