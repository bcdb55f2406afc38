//! A peek at the first bytes of a TCP stream: is it TLS, and if so, which server name (SNI,
//! RFC 6066 §3) and which application protocols (ALPN, RFC 7301 §3.1) does its ClientHello
//! (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) ask for.
//!
//! The appliance reads these bytes without consuming them, before it connects upstream.
//! The caller drives one intercepted connection like this:
//!
//! 1. Once 3 bytes are in, [`looks_like_tls`] says whether the stream can be TLS at all.
//! 2. Call [`parse_client_hello`] on every byte received so far.
//!    [`HelloError::Incomplete`] means the bytes are valid so far: wait for more and call it again
//!    with the longer buffer.
//!    Any other error is final, whatever arrives next.
//! 3. [`ClientHello::len`] says how many bytes of the stream the ClientHello's records take.
//!    Bytes after them (a client may pipeline) are not looked at.
//!
//! A ClientHello may be split over several handshake records, and its handshake header may be
//! split too; the records are reassembled.
//! Errors come as early as the bytes allow, so that a peer which is not TLS, or whose ClientHello
//! is too large, is turned away without waiting for the rest of it.
//!
//! Unlike the rest of this crate, this module allocates: [`ClientHello`] owns its server name and
//! ALPN list, and the handshake message is copied out of its records before it is parsed.
//! It runs once per intercepted connection, not per packet.
//! No function here panics, whatever the bytes are; every read goes through a cursor that checks
//! its length first, and the `clienthello` fuzz target checks the contract.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The record layer's content type for handshake messages (RFC 8446 §5.1).
const CONTENT_TYPE_HANDSHAKE: u8 = 22;

/// The handshake type of a ClientHello (RFC 8446 §4).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;

/// The record header: content type, protocol version and a 16-bit length (RFC 8446 §5.1).
pub const RECORD_HEADER_LEN: usize = 5;

/// The longest record payload accepted.
///
/// A plaintext record carries at most 2^14 bytes (RFC 8446 §5.1); the 256 bytes of slack are
/// what RFC 8446 §5.2 allows a protected record, so that a sloppy client is not cut off.
pub const MAX_RECORD_LEN: usize = (1 << 14) + 256;

/// The handshake header: a type and a 24-bit length (RFC 8446 §4).
const HANDSHAKE_HEADER_LEN: usize = 4;

/// The ClientHello's random (RFC 8446 §4.1.2).
const RANDOM_LEN: usize = 32;

/// `legacy_session_id<0..32>` (RFC 8446 §4.1.2).
const MAX_SESSION_ID_LEN: usize = 32;

/// The longest host name: 255 octets on the wire less the length and root bytes (RFC 1035 §2.3.4).
const MAX_HOST_NAME_LEN: usize = 253;

/// The longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// `NameType.host_name`, the only server name type there is (RFC 6066 §3).
const NAME_TYPE_HOST_NAME: u8 = 0;

/// The extension types read here (IANA "TLS ExtensionType Values").
mod extension {
    pub(super) const SERVER_NAME: u16 = 0;
    pub(super) const ALPN: u16 = 16;
    pub(super) const PRE_SHARED_KEY: u16 = 41;
    pub(super) const SUPPORTED_VERSIONS: u16 = 43;
}

/// What a peek at the start of a stream says.
///
/// `None` means fewer than 3 bytes are in.
/// `Some(true)` means the first record header starts like a handshake record of SSL 3.0 to
/// TLS 1.3 (content type 22, version 3.0 to 3.4): it may still turn out not to be a ClientHello.
/// `Some(false)` means the stream is not TLS, and [`parse_client_hello`] says [`HelloError::NotTls`].
pub fn looks_like_tls(head: &[u8]) -> Option<bool> {
    let start = head.get(..3)?;
    Some(check_record_start(start, true).is_ok())
}

/// What the appliance needs from a ClientHello to choose and reach the upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The host name of the server_name extension, lowercased.
    ///
    /// The client chooses it freely, and it goes on into certificates, policy and upstream
    /// lookups, so only plain host names pass: 1 to 253 bytes of ASCII letters, digits, `-`, `_`
    /// and `.`, in labels of 1 to 63 bytes, and not an IP address.
    /// `None` when the client sent no server_name extension, or an IP address in it (RFC 6066
    /// forbids that, but OpenSSL-based clients such as wrk do it for `https://IP/` URLs: the
    /// address is ignored, as servers ignore it, rather than refusing the client).
    pub sni: Option<String>,
    /// The protocols of the application_layer_protocol_negotiation extension, in the client's
    /// order of preference; each is 1 to 255 bytes. Empty when the extension is absent.
    pub alpn: Vec<Vec<u8>>,
    /// The `legacy_version` field; 0x0303 for TLS 1.2 and 1.3, whose real offer is in
    /// [`supported_versions`](Self::supported_versions) (RFC 8446 §4.2.1).
    pub legacy_version: u16,
    /// The versions of the supported_versions extension, in the client's order, GREASE values
    /// (RFC 8701) included. Empty when the extension is absent.
    pub supported_versions: Vec<u16>,
    /// How many bytes of the stream the records that carry the ClientHello take, headers included.
    pub len: usize,
}

/// Why [`parse_client_hello`] gave no ClientHello.
///
/// Each variant but [`Incomplete`](Self::Incomplete) is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HelloError {
    /// The bytes are valid so far, but the ClientHello is not complete yet.
    Incomplete,
    /// A field has an illegal or inconsistent value, or is cut short by its enclosing length.
    /// It carries the field's name: "record", "handshake", "legacy_version", "random",
    /// "session_id", "cipher_suites", "compression", "extensions", "server_name", "alpn",
    /// "supported_versions" or "pre_shared_key".
    Malformed(&'static str),
    /// The stream is not TLS: its first record is not a handshake record of version 3.0 to 3.4,
    /// or its first handshake message is not a ClientHello.
    NotTls,
    /// The ClientHello's handshake length field is larger than the `max` the caller allows.
    TooLarge,
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::Incomplete => f.write_str("incomplete TLS ClientHello"),
            HelloError::Malformed(field) => write!(f, "malformed TLS ClientHello {field}"),
            HelloError::NotTls => f.write_str("not a TLS ClientHello"),
            HelloError::TooLarge => f.write_str("TLS ClientHello too large"),
        }
    }
}

impl core::error::Error for HelloError {}

/// Parses the ClientHello at the start of `stream`, the bytes a client sent on a TCP connection.
///
/// `max` caps the handshake message's length field, so a peer cannot make the caller buffer
/// more than `max + 4` bytes of it; [`HelloError::TooLarge`] comes as soon as the handshake
/// header is in.
/// Records must be handshake records until the ClientHello is complete, and the last of them
/// must end where the ClientHello does.
/// Bytes after that record are ignored.
pub fn parse_client_hello(stream: &[u8], max: usize) -> Result<ClientHello, HelloError> {
    let (message, len) = reassemble(stream, max)?;
    parse_message(&message, len)
}

/// Checks the bytes of a record header that are in: all of it, or a prefix.
///
/// A bad first record means the stream is not TLS at all; a bad later one, that the client
/// broke the rule that a handshake message's records come back to back (RFC 8446 §5.1).
fn check_record_start(header: &[u8], first: bool) -> Result<(), HelloError> {
    let bad = if first { HelloError::NotTls } else { HelloError::Malformed("record") };
    if header.first().is_some_and(|&content_type| content_type != CONTENT_TYPE_HANDSHAKE) {
        return Err(bad);
    }
    if header.get(1).is_some_and(|&major| major != 3) {
        return Err(bad);
    }
    if header.get(2).is_some_and(|&minor| minor > 4) {
        return Err(bad);
    }
    Ok(())
}

/// Copies the ClientHello's handshake message, header included, out of the records at the
/// start of `stream`, and returns it with the number of stream bytes those records take.
fn reassemble(stream: &[u8], max: usize) -> Result<(Vec<u8>, usize), HelloError> {
    let mut message = Vec::new();
    // The handshake message's length, header included, once its header is in.
    let mut message_len: Option<usize> = None;
    // The payload bytes the records so far say they carry, whether all of them are in or not.
    let mut declared = 0usize;
    let mut pos = 0usize;
    loop {
        let rest = stream.get(pos..).unwrap_or_default();
        check_record_start(rest.get(..RECORD_HEADER_LEN).unwrap_or(rest), pos == 0)?;
        let Some((&[_, _, _, high, low], after)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
            return Err(HelloError::Incomplete);
        };
        let length = usize::from(u16::from_be_bytes([high, low]));
        // RFC 8446 §5.1: handshake records are never empty.
        if length == 0 || length > MAX_RECORD_LEN {
            return Err(HelloError::Malformed("record"));
        }
        declared += length;
        if message_len.is_some_and(|message_len| declared > message_len) {
            return Err(HelloError::Malformed("handshake"));
        }
        let fragment = after.get(..length).unwrap_or(after);
        message.extend_from_slice(fragment);
        if message_len.is_none() {
            // Records are never empty, so the handshake type is in the first one.
            if message.first().is_some_and(|&handshake_type| handshake_type != HANDSHAKE_CLIENT_HELLO) {
                return Err(HelloError::NotTls);
            }
            if let Some(&[_, a, b, c]) = message.first_chunk::<HANDSHAKE_HEADER_LEN>() {
                let body_len = usize::try_from(u32::from_be_bytes([0, a, b, c])).unwrap_or(usize::MAX);
                if body_len > max {
                    return Err(HelloError::TooLarge);
                }
                let total = HANDSHAKE_HEADER_LEN + body_len;
                // The ClientHello is the client's only message until the server answers, so the
                // record it ends in must end with it.
                if declared > total {
                    return Err(HelloError::Malformed("handshake"));
                }
                message_len = Some(total);
            }
        }
        if fragment.len() < length {
            return Err(HelloError::Incomplete);
        }
        pos += RECORD_HEADER_LEN + length;
        if message_len == Some(message.len()) {
            return Ok((message, pos));
        }
    }
}

/// Parses a whole ClientHello handshake message, header included.
fn parse_message(message: &[u8], len: usize) -> Result<ClientHello, HelloError> {
    let mut r = Reader::new(message);
    r.take(HANDSHAKE_HEADER_LEN, "handshake")?;
    let legacy_version = r.u16("legacy_version")?;
    // Every SSL 3 and TLS version has major version 3; anything else is not a protocol we speak.
    if legacy_version >> 8 != 3 {
        return Err(HelloError::Malformed("legacy_version"));
    }
    r.take(RANDOM_LEN, "random")?;
    if r.vec_u8("session_id")?.len() > MAX_SESSION_ID_LEN {
        return Err(HelloError::Malformed("session_id"));
    }
    // `cipher_suites<2..2^16-2>`: a non-empty list of 2-byte values.
    let cipher_suites = r.vec_u16("cipher_suites")?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 == 1 {
        return Err(HelloError::Malformed("cipher_suites"));
    }
    if r.vec_u8("compression")?.is_empty() {
        return Err(HelloError::Malformed("compression"));
    }
    let mut hello = ClientHello { sni: None, alpn: Vec::new(), legacy_version, supported_versions: Vec::new(), len };
    // RFC 5246 §7.4.1.2: before TLS 1.3, a ClientHello may end here, with no extensions block.
    if r.is_empty() {
        return Ok(hello);
    }
    let mut extensions = r.vec_u16("extensions")?;
    r.finish("handshake")?;
    let mut seen = ExtensionSet::new();
    while !extensions.is_empty() {
        let extension_type = extensions.u16("extensions")?;
        let data = extensions.vec_u16("extensions")?;
        // RFC 8446 §4.2.11: pre_shared_key must be the last extension.
        if seen.contains(extension::PRE_SHARED_KEY) {
            return Err(HelloError::Malformed("pre_shared_key"));
        }
        // RFC 8446 §4.2 and RFC 5246 §7.4.1.4: at most one extension of each type.
        if !seen.insert(extension_type) {
            return Err(HelloError::Malformed("extensions"));
        }
        match extension_type {
            extension::SERVER_NAME => hello.sni = parse_server_name(data)?,
            extension::ALPN => hello.alpn = parse_alpn(data)?,
            extension::SUPPORTED_VERSIONS => hello.supported_versions = parse_supported_versions(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

/// Parses the server_name extension's `ServerNameList` and checks its host name.
///
/// The list must hold exactly one `host_name` entry. RFC 6066 §3 allows one per name type, but
/// no other type was ever defined and an unknown type's entry cannot be skipped; OpenSSL
/// accepts only this shape too.
fn parse_server_name(mut data: Reader<'_>) -> Result<Option<String>, HelloError> {
    const FIELD: &str = "server_name";
    let mut list = data.vec_u16(FIELD)?;
    data.finish(FIELD)?;
    if list.u8(FIELD)? != NAME_TYPE_HOST_NAME {
        return Err(HelloError::Malformed(FIELD));
    }
    let name = list.vec_u16(FIELD)?;
    list.finish(FIELD)?;
    let name = name.rest();
    if ip_literal(name) {
        return Ok(None);
    }
    host_name(name).map(Some).ok_or(HelloError::Malformed(FIELD))
}

/// Whether a server name is an IP address literal: IPv4 in any of the forms `host_name`
/// refuses for a numeric last label (digits, dots, `0x` hex), or IPv6 (hex digits and colons,
/// with a dotted IPv4 tail allowed), without brackets.
fn ip_literal(name: &[u8]) -> bool {
    if name.is_empty() {
        return false;
    }
    let v6 = name.contains(&b':') && name.iter().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
    let v4 = name.iter().all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b'x' | b'X'))
        && name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && (label.iter().all(u8::is_ascii_digit)
                    || matches!(label, [b'0', b'x' | b'X', hex @ ..] if hex.iter().all(u8::is_ascii_hexdigit)))
        });
    v6 || v4
}

/// Checks a server name and lowercases it, or says `None` if it is not a plain host name.
///
/// RFC 6066 §3 allows no trailing dot and no IP address.
/// A name whose last label is a number is taken for an IPv4 address, as the WHATWG URL
/// standard's "ends in a number" rule does: `1.2.3.4`, `127.1` and `0x7f000001` all are.
/// No top-level domain is numeric (RFC 3696 §2), so no real host name is turned away.
/// `_` is allowed because service names (`_acme-challenge`) use it.
fn host_name(name: &[u8]) -> Option<String> {
    if name.is_empty() || name.len() > MAX_HOST_NAME_LEN {
        return None;
    }
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !name.iter().all(allowed) {
        return None;
    }
    if name.split(|&b| b == b'.').any(|label| label.is_empty() || label.len() > MAX_LABEL_LEN) {
        return None;
    }
    let last = name.rsplit(|&b| b == b'.').next().unwrap_or_default();
    let hex = match last {
        [b'0', b'x' | b'X', hex @ ..] => hex.iter().all(u8::is_ascii_hexdigit),
        _ => false,
    };
    if hex || last.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(name.iter().map(|&b| char::from(b.to_ascii_lowercase())).collect())
}

/// Parses the ALPN extension's `ProtocolName protocol_name_list<2..2^16-1>`, where each
/// `ProtocolName` is `opaque<1..2^8-1>` (RFC 7301 §3.1).
fn parse_alpn(mut data: Reader<'_>) -> Result<Vec<Vec<u8>>, HelloError> {
    const FIELD: &str = "alpn";
    let mut list = data.vec_u16(FIELD)?;
    data.finish(FIELD)?;
    if list.is_empty() {
        return Err(HelloError::Malformed(FIELD));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let protocol = list.vec_u8(FIELD)?;
        if protocol.is_empty() {
            return Err(HelloError::Malformed(FIELD));
        }
        protocols.push(protocol.rest().to_vec());
    }
    Ok(protocols)
}

/// Parses the ClientHello form of supported_versions, `ProtocolVersion versions<2..254>`
/// (RFC 8446 §4.2.1).
fn parse_supported_versions(mut data: Reader<'_>) -> Result<Vec<u16>, HelloError> {
    const FIELD: &str = "supported_versions";
    let mut list = data.vec_u8(FIELD)?;
    data.finish(FIELD)?;
    if list.is_empty() {
        return Err(HelloError::Malformed(FIELD));
    }
    let mut versions = Vec::new();
    while !list.is_empty() {
        versions.push(list.u16(FIELD)?);
    }
    Ok(versions)
}

/// A cursor over a byte slice that checks every length before it reads, so that no read can
/// panic.
///
/// Each read names the field it reads for, and a short read is [`HelloError::Malformed`] with
/// that name: the buffer is a whole message, so running out of bytes means a length field lied.
#[derive(Clone, Copy)]
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The bytes not read yet.
    fn rest(self) -> &'a [u8] {
        self.bytes
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], HelloError> {
        let (head, rest) = self.bytes.split_at_checked(n).ok_or(HelloError::Malformed(field))?;
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], HelloError> {
        let (head, rest) = self.bytes.split_first_chunk::<N>().ok_or(HelloError::Malformed(field))?;
        self.bytes = rest;
        Ok(*head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, HelloError> {
        let [b] = self.array(field)?;
        Ok(b)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, HelloError> {
        self.array(field).map(u16::from_be_bytes)
    }

    /// Reads a vector with a 1-byte length (RFC 8446 §3.4) and returns a cursor over its bytes.
    fn vec_u8(&mut self, field: &'static str) -> Result<Reader<'a>, HelloError> {
        let len = self.u8(field)?;
        self.take(usize::from(len), field).map(Reader::new)
    }

    /// Reads a vector with a 2-byte length (RFC 8446 §3.4) and returns a cursor over its bytes.
    fn vec_u16(&mut self, field: &'static str) -> Result<Reader<'a>, HelloError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field).map(Reader::new)
    }

    /// Checks that every byte was read: a field's length must match its contents exactly.
    fn finish(self, field: &'static str) -> Result<(), HelloError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(HelloError::Malformed(field))
        }
    }
}

/// The extension types seen so far, as one bit per type.
///
/// A block of up to 64 KiB may hold 16 Ki extensions; a bit set keeps the duplicate check
/// linear in their number (8 KiB on the stack) where a list would make it quadratic.
struct ExtensionSet {
    bits: [u64; 1024],
}

impl ExtensionSet {
    fn new() -> Self {
        ExtensionSet { bits: [0; 1024] }
    }

    fn slot(extension_type: u16) -> (usize, u64) {
        (usize::from(extension_type >> 6), 1 << (extension_type & 63))
    }

    fn contains(&self, extension_type: u16) -> bool {
        let (word, bit) = Self::slot(extension_type);
        self.bits.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Adds a type and says whether it was new.
    fn insert(&mut self, extension_type: u16) -> bool {
        let (word, bit) = Self::slot(extension_type);
        match self.bits.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;
    use std::vec;

    /// Python 3's `ssl` module (OpenSSL 3.0.19) with `server_hostname="www.lab.test"` and
    /// `set_alpn_protocols(["h2", "http/1.1"])`, written to a `MemoryBIO`: TLS 1.3 and 1.2
    /// offered, padded to 512 bytes.
    const OPENSSL_TLS13: &str = "\
        1603010200010001fc0303084e627cce7f20c918283313b7617e2c5ccd1e55057e7fa0e0fb97f534e0f13d20\
        c4f4025957024b5b6eccd718445b701309ef8732836967b99e380177443ce2b70024130213031301c02cc030\
        c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff0100018f00000011000f00000c7777772e6c\
        61622e74657374000b000403000102000a00160014001d0017001e0019001801000101010201030104002300\
        000010000e000c02683208687474702f312e310016000000170000000d002a00280403050306030807080808\
        09080a080b080408050806040105010601030303010302040205020602002b00050403040303002d00020101\
        003300260024001d0020c5be28b68487912334314eecfaee1c3ad6b3f01df1c849cc4c305b83511659130015\
        00cf000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
        000000000000000000000000000000000000000000000000000000000000000000";

    /// The same, with `maximum_version = TLSv1_2`, no server name and no ALPN.
    const OPENSSL_TLS12: &str = "\
        160301009d01000099030369dd20a1d466f09d655b213ced446f35ba2eed770bc35faac034e4044510176000\
        001ec02cc030c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff01000052000b000403000102\
        000a000c000a001d0017001e00190018002300000016000000170000000d002a002804030503060308070808\
        0809080a080b080408050806040105010601030303010302040205020602";

    const MAX: usize = 1 << 14;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|pair| u8::from_str_radix(core::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
    }

    fn u8_vec(body: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(body.len()).unwrap()];
        out.extend_from_slice(body);
        out
    }

    fn u16_vec(body: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    fn server_name_data(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![NAME_TYPE_HOST_NAME];
        entry.extend(u16_vec(name));
        u16_vec(&entry)
    }

    fn alpn_data(protocols: &[Vec<u8>]) -> Vec<u8> {
        u16_vec(&protocols.iter().flat_map(|p| u8_vec(p)).collect::<Vec<u8>>())
    }

    fn versions_data(versions: &[u16]) -> Vec<u8> {
        u8_vec(&versions.iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>())
    }

    /// Builds ClientHello messages field by field, so that each test can break one field.
    #[derive(Clone, Debug)]
    struct Builder {
        legacy_version: u16,
        session_id: Vec<u8>,
        cipher_suites: Vec<u8>,
        compression: Vec<u8>,
        /// `None` leaves out the extensions block, as a TLS 1.2 client may.
        extensions: Option<Vec<(u16, Vec<u8>)>>,
        /// Bytes after the extensions block, inside the message.
        trailing: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                legacy_version: 0x0303,
                session_id: vec![0xab; 32],
                cipher_suites: vec![0x13, 0x01, 0x13, 0x02],
                compression: vec![0],
                extensions: Some(Vec::new()),
                trailing: Vec::new(),
            }
        }

        fn extension(mut self, extension_type: u16, data: Vec<u8>) -> Self {
            self.extensions.get_or_insert_with(Vec::new).push((extension_type, data));
            self
        }

        fn sni(self, name: &str) -> Self {
            self.extension(extension::SERVER_NAME, server_name_data(name.as_bytes()))
        }

        fn alpn(self, protocols: &[Vec<u8>]) -> Self {
            self.extension(extension::ALPN, alpn_data(protocols))
        }

        fn versions(self, versions: &[u16]) -> Self {
            self.extension(extension::SUPPORTED_VERSIONS, versions_data(versions))
        }

        /// The handshake message, header included.
        fn message(&self) -> Vec<u8> {
            let mut body = self.legacy_version.to_be_bytes().to_vec();
            body.extend([0x5a; RANDOM_LEN]);
            body.extend(u8_vec(&self.session_id));
            body.extend(u16_vec(&self.cipher_suites));
            body.extend(u8_vec(&self.compression));
            if let Some(extensions) = &self.extensions {
                let mut block = Vec::new();
                for (extension_type, data) in extensions {
                    block.extend(extension_type.to_be_bytes());
                    block.extend(u16_vec(data));
                }
                body.extend(u16_vec(&block));
            }
            body.extend(&self.trailing);
            let mut message = vec![HANDSHAKE_CLIENT_HELLO];
            message.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
            message.extend(body);
            message
        }

        /// The message in one record.
        fn stream(&self) -> Vec<u8> {
            records(&self.message(), &[])
        }
    }

    fn record(content_type: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![content_type, 3, 1];
        out.extend(u16_vec(payload));
        out
    }

    /// Splits a handshake message into records of the given sizes; the last record takes what
    /// the sizes leave, and sizes past the end of the message are ignored.
    fn records(message: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = message;
        for &size in sizes {
            if size >= rest.len() {
                break;
            }
            let (fragment, tail) = rest.split_at(size);
            out.extend(record(CONTENT_TYPE_HANDSHAKE, fragment));
            rest = tail;
        }
        out.extend(record(CONTENT_TYPE_HANDSHAKE, rest));
        out
    }

    /// Parses a whole stream, and checks that every strict prefix of its ClientHello records is
    /// incomplete and that bytes after them change nothing.
    fn parse_whole(stream: &[u8]) -> ClientHello {
        let hello = parse_client_hello(stream, MAX).unwrap();
        assert_eq!(hello.len, stream.len());
        for end in 0..stream.len() {
            assert_eq!(parse_client_hello(&stream[..end], MAX), Err(HelloError::Incomplete), "prefix {end}");
        }
        let mut pipelined = stream.to_vec();
        pipelined.extend(b"\x17\x03\x03\x00\x05early");
        assert_eq!(parse_client_hello(&pipelined, MAX), Ok(hello.clone()));
        hello
    }

    fn malformed(builder: Builder) -> HelloError {
        parse_client_hello(&builder.stream(), MAX).unwrap_err()
    }

    fn sni_error(name: &[u8]) -> HelloError {
        malformed(Builder::new().extension(extension::SERVER_NAME, server_name_data(name)))
    }

    #[test]
    fn looks_like_tls_needs_three_bytes() {
        assert_eq!(looks_like_tls(b""), None);
        assert_eq!(looks_like_tls(&[22, 3]), None);
        assert_eq!(looks_like_tls(&[22, 3, 0]), Some(true));
        assert_eq!(looks_like_tls(&[22, 3, 1, 2, 0]), Some(true));
        assert_eq!(looks_like_tls(&[22, 3, 4]), Some(true));
        assert_eq!(looks_like_tls(&[22, 3, 5]), Some(false));
        assert_eq!(looks_like_tls(&[22, 2, 0]), Some(false));
        assert_eq!(looks_like_tls(&[23, 3, 3]), Some(false));
        assert_eq!(looks_like_tls(b"GET / HTTP/1.1\r\n"), Some(false));
        // SSL 2's ClientHello has no record layer; it is not TLS to us.
        assert_eq!(looks_like_tls(&[0x80, 0x2e, 0x01]), Some(false));
    }

    #[test]
    fn openssl_tls13_client_hello() {
        let stream = hex(OPENSSL_TLS13);
        assert_eq!(stream.len(), 517);
        assert_eq!(looks_like_tls(&stream), Some(true));
        let hello = parse_whole(&stream);
        assert_eq!(
            hello,
            ClientHello {
                sni: Some("www.lab.test".into()),
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                legacy_version: 0x0303,
                supported_versions: vec![0x0304, 0x0303],
                len: 517,
            }
        );
    }

    #[test]
    fn openssl_tls12_client_hello() {
        let stream = hex(OPENSSL_TLS12);
        let hello = parse_whole(&stream);
        assert_eq!(
            hello,
            ClientHello { sni: None, alpn: vec![], legacy_version: 0x0303, supported_versions: vec![], len: 162 }
        );
    }

    #[test]
    fn openssl_client_hello_in_one_byte_records() {
        let stream = hex(OPENSSL_TLS13);
        let message = &stream[RECORD_HEADER_LEN..];
        let split = records(message, &vec![1; message.len()]);
        assert_eq!(split.len(), message.len() * (RECORD_HEADER_LEN + 1));
        let hello = parse_whole(&split);
        assert_eq!(hello, ClientHello { len: split.len(), ..parse_client_hello(&stream, MAX).unwrap() });
    }

    #[test]
    fn client_hello_without_extensions() {
        let hello = parse_whole(&Builder { extensions: None, ..Builder::new() }.stream());
        assert_eq!((hello.sni, hello.alpn, hello.supported_versions), (None, vec![], vec![]));
        let hello = parse_whole(&Builder::new().stream());
        assert_eq!((hello.sni, hello.alpn, hello.supported_versions), (None, vec![], vec![]));
    }

    #[test]
    fn not_tls() {
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n", MAX), Err(HelloError::NotTls));
        assert_eq!(parse_client_hello(b"SSH-2.0-OpenSSH_9.6\r\n", MAX), Err(HelloError::NotTls));
        // The first byte is enough.
        assert_eq!(parse_client_hello(b"G", MAX), Err(HelloError::NotTls));
        assert_eq!(parse_client_hello(&[22, 3, 5], MAX), Err(HelloError::NotTls));
        // An application data record, and a handshake record that holds a ServerHello.
        assert_eq!(parse_client_hello(&record(23, b"hello"), MAX), Err(HelloError::NotTls));
        assert_eq!(parse_client_hello(&[22, 3, 3, 0, 90, 2], MAX), Err(HelloError::NotTls));
    }

    #[test]
    fn too_large() {
        // The handshake header alone says so: 0x4001 bytes of body.
        let head = [22, 3, 1, 0x40, 0x00, 1, 0x00, 0x40, 0x01];
        assert_eq!(parse_client_hello(&head, MAX), Err(HelloError::TooLarge));
        assert_eq!(parse_client_hello(&head[..8], MAX), Err(HelloError::Incomplete));
        // The cap counts the body, not the header.
        let stream = Builder::new().stream();
        let body_len = stream.len() - RECORD_HEADER_LEN - HANDSHAKE_HEADER_LEN;
        assert!(parse_client_hello(&stream, body_len).is_ok());
        assert_eq!(parse_client_hello(&stream, body_len - 1), Err(HelloError::TooLarge));
    }

    #[test]
    fn bad_records() {
        let message = Builder::new().sni("a.test").message();
        let stream = records(&message, &[10]);
        let second = RECORD_HEADER_LEN + 10;
        assert!(parse_client_hello(&stream, MAX).is_ok());
        let with = |at: usize, byte: u8| {
            let mut s = stream.clone();
            s[at] = byte;
            parse_client_hello(&s, MAX)
        };
        // A later record that is not a handshake record, or has a bad version.
        for (offset, byte) in [(0, 21), (0, 20), (0, 23), (1, 2), (2, 5)] {
            assert_eq!(with(second + offset, byte), Err(HelloError::Malformed("record")));
            // Its partial header is enough to tell.
            let mut s = stream[..=second + offset].to_vec();
            s[second + offset] = byte;
            assert_eq!(parse_client_hello(&s, MAX), Err(HelloError::Malformed("record")));
        }
        // Empty and oversized records.
        assert_eq!(parse_client_hello(&[22, 3, 1, 0, 0], MAX), Err(HelloError::Malformed("record")));
        let mut stream = vec![22, 3, 1, 0x41, 0x01];
        assert_eq!(parse_client_hello(&stream, MAX), Err(HelloError::Malformed("record")));
        stream[4] = 0x00;
        assert_eq!(parse_client_hello(&stream, MAX), Err(HelloError::Incomplete));
    }

    #[test]
    fn record_must_end_with_the_client_hello() {
        // The same record holds more bytes after the ClientHello...
        let mut payload = Builder::new().message();
        payload.extend([1, 0, 0, 0]);
        let stream = record(CONTENT_TYPE_HANDSHAKE, &payload);
        assert_eq!(parse_client_hello(&stream, MAX), Err(HelloError::Malformed("handshake")));
        // ... and the record header alone is enough to tell, once the handshake header is in.
        assert_eq!(parse_client_hello(&stream[..9], MAX), Err(HelloError::Malformed("handshake")));
        // Or a later record does.
        let message = Builder::new().message();
        let mut stream = records(&message, &[10]);
        let second = RECORD_HEADER_LEN + 10;
        stream[second + 4] += 1;
        stream.push(0);
        assert_eq!(parse_client_hello(&stream, MAX), Err(HelloError::Malformed("handshake")));
    }

    #[test]
    fn bad_fields() {
        let b = Builder::new;
        assert_eq!(malformed(Builder { legacy_version: 0x0203, ..b() }), HelloError::Malformed("legacy_version"));
        assert_eq!(malformed(Builder { session_id: vec![0; 33], ..b() }), HelloError::Malformed("session_id"));
        assert_eq!(malformed(Builder { cipher_suites: vec![], ..b() }), HelloError::Malformed("cipher_suites"));
        assert_eq!(malformed(Builder { cipher_suites: vec![0x13], ..b() }), HelloError::Malformed("cipher_suites"));
        assert_eq!(malformed(Builder { compression: vec![], ..b() }), HelloError::Malformed("compression"));
        let trailing = Builder { trailing: vec![0], ..b() };
        assert_eq!(malformed(trailing), HelloError::Malformed("handshake"));
        // Without an extensions block, a stray byte is a truncated extensions length.
        let trailing = Builder { extensions: None, trailing: vec![0], ..b() };
        assert_eq!(malformed(trailing), HelloError::Malformed("extensions"));
        // A message that ends inside the random or the session ID.
        let message = b().message();
        for (cut, field) in [(4, "legacy_version"), (6, "random"), (38, "session_id"), (50, "session_id")] {
            let mut short = message[..cut].to_vec();
            short[1..4].copy_from_slice(&u32::try_from(cut - 4).unwrap().to_be_bytes()[1..]);
            assert_eq!(parse_client_hello(&records(&short, &[]), MAX), Err(HelloError::Malformed(field)));
        }
    }

    #[test]
    fn bad_extensions() {
        let twice = Builder::new().sni("a.test").versions(&[0x0304]).sni("b.test");
        assert_eq!(malformed(twice), HelloError::Malformed("extensions"));
        let unknown_twice = Builder::new().extension(0xfe0d, vec![]).extension(0xfe0d, vec![1]);
        assert_eq!(malformed(unknown_twice), HelloError::Malformed("extensions"));
        let psk_not_last = Builder::new().extension(extension::PRE_SHARED_KEY, vec![0; 4]).sni("a.test");
        assert_eq!(malformed(psk_not_last), HelloError::Malformed("pre_shared_key"));
        let psk_last = Builder::new().sni("a.test").extension(extension::PRE_SHARED_KEY, vec![0; 4]);
        assert_eq!(parse_whole(&psk_last.stream()).sni.as_deref(), Some("a.test"));
        // An extension whose length runs past the block, and a block with a stray byte.
        let mut message = Builder::new().extension(0x1234, vec![1, 2, 3]).message();
        let at = message.len() - 4;
        message[at] = 4;
        assert_eq!(parse_client_hello(&records(&message, &[]), MAX), Err(HelloError::Malformed("extensions")));
        let mut message = Builder::new().message();
        message.push(0);
        let block = message.len() - 2;
        message[block] = 1;
        message[3] += 1;
        assert_eq!(parse_client_hello(&records(&message, &[]), MAX), Err(HelloError::Malformed("extensions")));
    }

    #[test]
    fn server_names() {
        let sni = |name: &str| parse_whole(&Builder::new().sni(name).stream()).sni.unwrap();
        assert_eq!(sni("WWW.Lab.Test"), "www.lab.test");
        assert_eq!(sni("_acme-challenge.example.com"), "_acme-challenge.example.com");
        assert_eq!(sni("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(sni("localhost"), "localhost");
        assert_eq!(sni("10.0.0.1.nip.io"), "10.0.0.1.nip.io");
        assert_eq!(sni("0x1.example"), "0x1.example");
        assert_eq!(sni("a.0xfg"), "a.0xfg");
        let longest = [&"a".repeat(63)[..], &"b".repeat(63), &"c".repeat(63), &"d".repeat(61)].join(".");
        assert_eq!(longest.len(), 253);
        assert_eq!(sni(&longest), longest);
        let too_long = [longest.as_str(), "e"].concat();
        let long_label = "a".repeat(64) + ".test";
        // IP address literals (wrk sends them): ignored, as if there were no server_name.
        for ip in ["1.2.3.4", "10.0.0.1", "127.1", "2130706433", "0x7f000001", "0X7F.1", "::1", "fd00:fd:2::10"] {
            assert_eq!(parse_whole(&Builder::new().sni(ip).stream()).sni, None, "{ip}");
        }
        let bad: [&[u8]; 9] = [
            b"",
            b"[::1]",
            b"example.com.",
            b".example.com",
            b"a..b",
            b"ex ample.com",
            "exämple.com".as_bytes(),
            too_long.as_bytes(),
            long_label.as_bytes(),
        ];
        for name in bad {
            assert_eq!(sni_error(name), HelloError::Malformed("server_name"), "{:?}", name);
        }
    }

    #[test]
    fn bad_server_name_lists() {
        let with_list = |list: Vec<u8>| malformed(Builder::new().extension(extension::SERVER_NAME, list));
        let entry = |name_type: u8, name: &[u8]| [vec![name_type], u16_vec(name)].concat();
        let two = [entry(0, b"a.test"), entry(0, b"b.test")].concat();
        let other_type = entry(1, b"a.test");
        let trailing = [entry(0, b"a.test"), vec![0]].concat();
        for list in [vec![], u16_vec(&[]), u16_vec(&two), u16_vec(&other_type), u16_vec(&trailing)] {
            assert_eq!(with_list(list), HelloError::Malformed("server_name"));
        }
        // Bytes after the list, inside the extension.
        assert_eq!(with_list([server_name_data(b"a.test"), vec![0]].concat()), HelloError::Malformed("server_name"));
    }

    #[test]
    fn alpn_and_supported_versions() {
        let hello =
            parse_whole(&Builder::new().alpn(&[b"h2".to_vec(), vec![0xff; 255]]).versions(&[0x0a0a, 0x0304]).stream());
        assert_eq!(hello.alpn, vec![b"h2".to_vec(), vec![0xff; 255]]);
        assert_eq!(hello.supported_versions, vec![0x0a0a, 0x0304]);
        let alpn = |data: Vec<u8>| malformed(Builder::new().extension(extension::ALPN, data));
        for data in
            [vec![], u16_vec(&[]), u16_vec(&[0]), u16_vec(&[2, b'h']), [alpn_data(&[b"h2".to_vec()]), vec![0]].concat()]
        {
            assert_eq!(alpn(data), HelloError::Malformed("alpn"));
        }
        let versions = |data: Vec<u8>| malformed(Builder::new().extension(extension::SUPPORTED_VERSIONS, data));
        for data in
            [vec![], u8_vec(&[]), u8_vec(&[3]), u8_vec(&[3, 4, 3]), [versions_data(&[0x0304]), vec![0]].concat()]
        {
            assert_eq!(versions(data), HelloError::Malformed("supported_versions"));
        }
    }

    #[test]
    fn extension_set() {
        let mut seen = ExtensionSet::new();
        for t in [0, 63, 64, 0xffff] {
            assert!(!seen.contains(t));
            assert!(seen.insert(t));
            assert!(seen.contains(t));
            assert!(!seen.insert(t));
        }
        assert!(!seen.contains(1));
    }

    #[test]
    fn error_display() {
        assert_eq!(HelloError::Incomplete.to_string(), "incomplete TLS ClientHello");
        assert_eq!(HelloError::Malformed("server_name").to_string(), "malformed TLS ClientHello server_name");
        assert_eq!(HelloError::NotTls.to_string(), "not a TLS ClientHello");
        assert_eq!(HelloError::TooLarge.to_string(), "TLS ClientHello too large");
    }

    /// Host names that pass validation, in mixed case.
    fn host_name_strategy() -> impl Strategy<Value = String> {
        let label = "[a-zA-Z0-9_-]{1,20}";
        let last = "[a-zA-Z][a-zA-Z0-9-]{0,10}";
        (proptest::collection::vec(label, 0..5), last).prop_map(|(mut labels, last)| {
            labels.push(last);
            labels.join(".")
        })
    }

    /// A ClientHello built from arbitrary offers, and what parsing it must give.
    fn hello_strategy() -> impl Strategy<Value = (Builder, ClientHello)> {
        let alpn = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..=255), 0..4);
        let versions = proptest::collection::vec(any::<u16>(), 0..8);
        // Unknown extension types, unique by construction.
        let others =
            proptest::collection::btree_map(0x1000..0x2000u16, proptest::collection::vec(any::<u8>(), 0..40), 0..4);
        (
            proptest::option::of(host_name_strategy()),
            alpn,
            versions,
            others,
            (0..=MAX_SESSION_ID_LEN, 0x0300..=0x0303u16, any::<bool>()),
        )
            .prop_map(|(sni, alpn, versions, others, (session_id_len, legacy_version, reorder))| {
                let mut builder = Builder { legacy_version, session_id: vec![7; session_id_len], ..Builder::new() };
                let mut known = Vec::new();
                if let Some(name) = &sni {
                    known.push((extension::SERVER_NAME, server_name_data(name.as_bytes())));
                }
                if !alpn.is_empty() {
                    known.push((extension::ALPN, alpn_data(&alpn)));
                }
                if !versions.is_empty() {
                    known.push((extension::SUPPORTED_VERSIONS, versions_data(&versions)));
                }
                if reorder {
                    known.reverse();
                }
                for (extension_type, data) in known.into_iter().chain(others) {
                    builder = builder.extension(extension_type, data);
                }
                let expected = ClientHello {
                    sni: sni.map(|name| name.to_ascii_lowercase()),
                    alpn,
                    legacy_version,
                    supported_versions: versions,
                    len: 0,
                };
                (builder, expected)
            })
    }

    proptest! {
        #[test]
        fn built_client_hello_round_trips((builder, expected) in hello_strategy()) {
            let stream = builder.stream();
            prop_assert_eq!(parse_client_hello(&stream, MAX), Ok(ClientHello { len: stream.len(), ..expected }));
        }

        #[test]
        fn record_boundaries_change_nothing(
            (builder, expected) in hello_strategy(),
            sizes in proptest::collection::vec(1..=64usize, 0..24),
            pipelined in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut stream = records(&builder.message(), &sizes);
            let len = stream.len();
            stream.extend(pipelined);
            prop_assert_eq!(parse_client_hello(&stream, MAX), Ok(ClientHello { len, ..expected }));
        }

        #[test]
        fn every_strict_prefix_is_incomplete(
            (builder, _) in hello_strategy(),
            sizes in proptest::collection::vec(1..=64usize, 0..8),
        ) {
            let stream = records(&builder.message(), &sizes);
            for end in 0..stream.len() {
                prop_assert_eq!(parse_client_hello(&stream[..end], MAX), Err(HelloError::Incomplete));
            }
        }

        #[test]
        fn arbitrary_bytes_do_not_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            max in prop_oneof![0..600usize, Just(usize::MAX)],
        ) {
            check_invariants(&bytes, max);
            // Random bytes rarely get past the record header; a TLS one leads the way in.
            let mut stream = vec![22, 3, 1];
            stream.extend(&bytes);
            check_invariants(&stream, max);
        }

        #[test]
        fn corrupted_client_hellos_do_not_panic(
            (builder, _) in hello_strategy(),
            sizes in proptest::collection::vec(1..=64usize, 0..4),
            flips in proptest::collection::vec((any::<usize>(), 1..=255u8), 1..4),
            cut in any::<usize>(),
        ) {
            let mut stream = records(&builder.message(), &sizes);
            for (at, xor) in flips {
                let at = at % stream.len();
                stream[at] ^= xor;
            }
            stream.truncate(cut % (stream.len() + 1));
            check_invariants(&stream, MAX);
        }
    }

    /// What must hold for any bytes: no panic, a ClientHello only from whole records in the
    /// buffer, and the peek never contradicting the parse.
    fn check_invariants(bytes: &[u8], max: usize) {
        let peek = looks_like_tls(bytes);
        let parsed = parse_client_hello(bytes, max);
        if peek == Some(false) {
            assert_eq!(parsed, Err(HelloError::NotTls));
        }
        if let Ok(hello) = &parsed {
            assert_eq!(peek, Some(true));
            assert!(hello.len <= bytes.len());
            assert_eq!(parse_client_hello(&bytes[..hello.len], max).as_ref(), Ok(hello));
        }
        let _ = parsed.map_err(|e| e.to_string());
    }
}
