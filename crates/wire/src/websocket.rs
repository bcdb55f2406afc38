//! WebSocket frames (RFC 6455 §5): header parsing and emission, payload masking, and a
//! per-direction validator for the framing rules.
//!
//! Everything here is sans-IO and works on buffers the caller owns.
//! The caller drives one direction of a connection like this:
//!
//! 1. Append received bytes to a buffer and call [`FrameHeader::parse`].
//!    `Ok(None)` means the header is not complete yet: append more bytes and call it again.
//! 2. Pass the header to that direction's [`Validator::frame`], which says whether the frame
//!    starts a message, continues one, or is a control frame.
//! 3. Take [`FrameHeader::payload_len`] bytes after the header, in as many pieces as they
//!    arrive, and unmask each piece in place with [`apply_mask`] and its offset in the payload.
//! 4. For a Close frame, check its body with [`close_payload`].
//!
//! Any error means the peer broke the protocol, and RFC 6455 §7.1.7 says to
//! _Fail the WebSocket Connection_; nothing here keeps going after one on its own.
//! No function in this module panics, whatever the bytes are.
//!
//! Extensions (permessage-deflate and others) are not supported: [`Validator`] rejects any RSV bit.

use core::fmt;

use crate::bytes::{array4, be16, be64, set_be16, set_be64};

/// The shortest frame header: the two fixed bytes.
pub const MIN_HEADER_LEN: usize = 2;

/// The longest frame header: two fixed bytes, a 64-bit length and a masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// The longest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD_LEN: usize = 125;

/// The largest payload length the 64-bit length field may carry: its top bit must be 0.
pub const MAX_PAYLOAD_LEN: u64 = i64::MAX as u64;

const FIN: u8 = 0x80;
const RSV_SHIFT: u32 = 4;
const RSV_BITS: u8 = 0x07;
const OPCODE_BITS: u8 = 0x0f;
const MASK: u8 = 0x80;
const LEN_BITS: u8 = 0x7f;
/// The 7-bit length value that says a 16-bit length follows.
const LEN_16: u8 = 126;
/// The 7-bit length value that says a 64-bit length follows.
const LEN_64: u8 = 127;
const MASK_KEY_LEN: usize = 4;

/// Why a frame, a frame sequence or a Close body was rejected.
///
/// Each rule has its own variant so that a datapath can count failures by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// A Close body's status code is one that must not appear on the wire (RFC 6455 §7.4).
    BadCloseCode(u16),
    /// A Close body is 1 byte long: it must be empty or start with a 2-byte code.
    BadCloseLength,
    /// A Close body's reason is not valid UTF-8 (RFC 6455 §5.5.1).
    BadCloseReason,
    /// [`FrameHeader::emit`] was given a buffer shorter than [`FrameHeader::header_len`].
    BufferTooSmall,
    /// A control frame has FIN clear; control frames must not be fragmented (RFC 6455 §5.5).
    ControlFragmented,
    /// A control frame's payload is longer than [`MAX_CONTROL_PAYLOAD_LEN`] (RFC 6455 §5.5).
    ControlTooLong,
    /// A frame arrived after a Close frame (RFC 6455 §5.5.1: the Close is the last frame).
    FrameAfterClose,
    /// The 64-bit payload length has its most significant bit set (RFC 6455 §5.2).
    LengthTooLarge,
    /// A server sent a masked frame (RFC 6455 §5.1).
    MaskedServerFrame,
    /// A Text or Binary frame arrived while a fragmented message was still open (RFC 6455 §5.4).
    MessageInProgress,
    /// The payload length was not written in the fewest bytes possible (RFC 6455 §5.2).
    NonMinimalLength,
    /// An RSV bit is set without an extension that defines it (RFC 6455 §5.2); from
    /// [`FrameHeader::emit`], `rsv` does not fit in 3 bits.
    ReservedBits,
    /// The opcode is one RFC 6455 §5.2 reserves; it carries the 4-bit value.
    ReservedOpcode(u8),
    /// A Continuation frame arrived with no fragmented message open (RFC 6455 §5.4).
    UnexpectedContinuation,
    /// A client sent an unmasked frame (RFC 6455 §5.1).
    UnmaskedClientFrame,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadCloseCode(code) => write!(f, "invalid close code {code}"),
            Error::BadCloseLength => f.write_str("close payload of 1 byte"),
            Error::BadCloseReason => f.write_str("close reason is not UTF-8"),
            Error::BufferTooSmall => f.write_str("buffer too small for the frame header"),
            Error::ControlFragmented => f.write_str("fragmented control frame"),
            Error::ControlTooLong => f.write_str("control frame payload longer than 125 bytes"),
            Error::FrameAfterClose => f.write_str("frame after close"),
            Error::LengthTooLarge => f.write_str("payload length with the most significant bit set"),
            Error::MaskedServerFrame => f.write_str("masked frame from a server"),
            Error::MessageInProgress => f.write_str("new message while a fragmented message is open"),
            Error::NonMinimalLength => f.write_str("payload length not minimally encoded"),
            Error::ReservedBits => f.write_str("reserved bits set"),
            Error::ReservedOpcode(opcode) => write!(f, "reserved opcode {opcode:#x}"),
            Error::UnexpectedContinuation => f.write_str("continuation frame outside a fragmented message"),
            Error::UnmaskedClientFrame => f.write_str("unmasked frame from a client"),
        }
    }
}

impl core::error::Error for Error {}

/// A frame opcode (RFC 6455 §5.2), in the order of its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// A later fragment of a fragmented message.
    Continuation = 0x0,
    /// The first frame of a UTF-8 text message.
    Text = 0x1,
    /// The first frame of a binary message.
    Binary = 0x2,
    /// The closing handshake.
    Close = 0x8,
    /// A keepalive or round-trip probe; the peer answers with a Pong.
    Ping = 0x9,
    /// The answer to a Ping, or an unsolicited heartbeat.
    Pong = 0xa,
}

impl Opcode {
    /// Whether this is a control frame (Close, Ping or Pong): the opcodes with the high bit set.
    pub const fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }
}

impl TryFrom<u8> for Opcode {
    type Error = Error;

    /// Reads a 4-bit opcode; the reserved values 3 to 7 and 11 to 15 (and anything wider than
    /// 4 bits) are [`Error::ReservedOpcode`].
    fn try_from(value: u8) -> Result<Opcode, Error> {
        match value {
            0x0 => Ok(Opcode::Continuation),
            0x1 => Ok(Opcode::Text),
            0x2 => Ok(Opcode::Binary),
            0x8 => Ok(Opcode::Close),
            0x9 => Ok(Opcode::Ping),
            0xa => Ok(Opcode::Pong),
            other => Err(Error::ReservedOpcode(other)),
        }
    }
}

impl From<Opcode> for u8 {
    fn from(opcode: Opcode) -> u8 {
        opcode as u8
    }
}

/// The fields of a frame header (RFC 6455 §5.2).
///
/// [`FrameHeader::parse`] accepts only headers that follow the per-frame rules of §5.2 and §5.5,
/// and [`FrameHeader::emit`] writes only those, so every header `emit` writes parses back to the
/// same value and the same bytes.
/// The rules that span frames, and the masking and RSV rules, are [`Validator`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// The last frame of a message.
    pub fin: bool,
    /// RSV1 to RSV3 as a 3-bit number (RSV1 is 4); nonzero only with an extension.
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: Opcode,
    /// The masking key, present on every frame a client sends.
    /// It stops a hostile page from making the browser send bytes that a proxy on the path
    /// would take for a request of its own (RFC 6455 §10.3).
    pub mask: Option<[u8; 4]>,
    /// The length of the payload after the header, at most [`MAX_PAYLOAD_LEN`].
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a frame header from the start of `buf`.
    ///
    /// Returns `Ok(None)` while `buf` holds only part of the header: the caller appends more
    /// bytes and calls it again.
    /// Otherwise returns the header and its length in bytes; the payload starts right after it.
    ///
    /// The checks run in the order the bytes arrive, so a header is rejected as soon as the
    /// offending byte is in `buf`, and a longer `buf` never changes an answer other than
    /// `Ok(None)`.
    /// Rejected are: a reserved opcode, a control frame with FIN clear or a payload longer than
    /// 125 bytes, a 64-bit length with its top bit set, and a length not written in the fewest
    /// bytes (RFC 6455 §5.2 says the minimal number of bytes MUST be used).
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, Error> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let fin = first & FIN != 0;
        let rsv = (first >> RSV_SHIFT) & RSV_BITS;
        let opcode = Opcode::try_from(first & OPCODE_BITS)?;
        if opcode.is_control() && !fin {
            return Err(Error::ControlFragmented);
        }
        let Some(&second) = buf.get(1) else {
            return Ok(None);
        };
        let len7 = second & LEN_BITS;
        // A 16- or 64-bit length on a control frame is either above 125 or not minimal;
        // both break the rule that control payloads fit in the 7-bit field.
        if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD_LEN {
            return Err(Error::ControlTooLong);
        }
        let (payload_len, mut len) = match len7 {
            LEN_16 => {
                let Some(field) = buf.get(2..4) else {
                    return Ok(None);
                };
                let value = u64::from(be16(field));
                if value < u64::from(LEN_16) {
                    return Err(Error::NonMinimalLength);
                }
                (value, 4)
            }
            LEN_64 => {
                let Some(field) = buf.get(2..10) else {
                    return Ok(None);
                };
                let value = be64(field);
                if value > MAX_PAYLOAD_LEN {
                    return Err(Error::LengthTooLarge);
                }
                if value <= u64::from(u16::MAX) {
                    return Err(Error::NonMinimalLength);
                }
                (value, 10)
            }
            short => (u64::from(short), MIN_HEADER_LEN),
        };
        let mask = if second & MASK != 0 {
            let Some(key) = buf.get(len..len + MASK_KEY_LEN) else {
                return Ok(None);
            };
            len += MASK_KEY_LEN;
            Some(array4(key))
        } else {
            None
        };
        Ok(Some((FrameHeader { fin, rsv, opcode, mask, payload_len }, len)))
    }

    /// The length of the header [`FrameHeader::emit`] writes, from 2 to [`MAX_HEADER_LEN`].
    pub const fn header_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => MIN_HEADER_LEN,
            126..=0xffff => MIN_HEADER_LEN + 2,
            _ => MIN_HEADER_LEN + 8,
        };
        if self.mask.is_some() {
            len + MASK_KEY_LEN
        } else {
            len
        }
    }

    /// Checks the rules [`FrameHeader::parse`] enforces, so that `emit` never writes a header
    /// that would not parse back.
    fn check(&self) -> Result<(), Error> {
        if self.rsv > RSV_BITS {
            return Err(Error::ReservedBits);
        }
        if self.payload_len > MAX_PAYLOAD_LEN {
            return Err(Error::LengthTooLarge);
        }
        self.check_control()
    }

    /// The control frame rules of RFC 6455 §5.5.
    fn check_control(&self) -> Result<(), Error> {
        if self.opcode.is_control() {
            if !self.fin {
                return Err(Error::ControlFragmented);
            }
            if self.payload_len > MAX_CONTROL_PAYLOAD_LEN as u64 {
                return Err(Error::ControlTooLong);
            }
        }
        Ok(())
    }

    /// Writes the header at the start of `out`, with the length in the fewest bytes, and
    /// returns [`FrameHeader::header_len`].
    ///
    /// The header must follow the rules [`FrameHeader::parse`] checks, or this returns the same
    /// error `parse` would; `rsv` above 7 is [`Error::ReservedBits`].
    /// A buffer shorter than `header_len()` is [`Error::BufferTooSmall`], and nothing is written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        let header_len = self.header_len();
        let Some(out) = out.get_mut(..header_len) else {
            return Err(Error::BufferTooSmall);
        };
        let fin = if self.fin { FIN } else { 0 };
        out[0] = fin | (self.rsv << RSV_SHIFT) | u8::from(self.opcode);
        let mask = if self.mask.is_some() { MASK } else { 0 };
        // `header_len` picked the length encoding by the same ranges, so `out` has room for it.
        let len = match self.payload_len {
            0..=125 => {
                out[1] = mask | self.payload_len as u8;
                MIN_HEADER_LEN
            }
            126..=0xffff => {
                out[1] = mask | LEN_16;
                set_be16(&mut out[2..4], self.payload_len as u16);
                4
            }
            _ => {
                out[1] = mask | LEN_64;
                set_be64(&mut out[2..10], self.payload_len);
                10
            }
        };
        if let Some(key) = self.mask {
            out[len..len + MASK_KEY_LEN].copy_from_slice(&key);
        }
        Ok(header_len)
    }
}

/// Masks or unmasks payload bytes in place (RFC 6455 §5.3); the operation is its own inverse.
///
/// `offset` is the position of `data[0]` within the frame's payload, so a payload can be
/// unmasked piece by piece as it arrives: call this once per piece with the running offset.
pub fn apply_mask(key: [u8; 4], offset: u64, data: &mut [u8]) {
    // Byte i of the payload is XORed with key[i % 4], so rotate the key to start at data[0].
    let mut key = key;
    key.rotate_left((offset % 4) as usize);
    // Eight bytes at a time: the key repeats every 4 bytes, and XOR works bytewise, so the byte
    // order of the word does not matter as long as the data and the key use the same one.
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut words = data.chunks_exact_mut(8);
    for chunk in &mut words {
        // `chunks_exact_mut(8)` yields only 8-byte chunks, so the conversion always succeeds.
        if let Ok(word) = <&mut [u8; 8]>::try_from(chunk) {
            *word = (u64::from_ne_bytes(*word) ^ wide).to_ne_bytes();
        }
    }
    // The tail starts at a multiple of 8, and so of 4: the rotated key still lines up.
    for (byte, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Which endpoint sends the frames a [`Validator`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The frames come from the client, and must be masked.
    Client,
    /// The frames come from the server, and must not be masked.
    Server,
}

/// What a frame that passed [`Validator::frame`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The first frame of a Text or Binary message; with `fin` it is the whole message.
    MessageStart {
        /// [`Opcode::Text`] or [`Opcode::Binary`].
        opcode: Opcode,
        /// The message ends with this frame.
        fin: bool,
    },
    /// A Continuation frame of the open message.
    MessageContinue {
        /// The message ends with this frame.
        fin: bool,
    },
    /// A Close, Ping or Pong frame; it may sit between the fragments of a message.
    Control(Opcode),
}

/// The framing rules of one direction of a connection (RFC 6455 §5), checked frame by frame.
///
/// Feed it every header of that direction in order, as [`FrameHeader::parse`] returns them.
/// It checks masking against the sender's [`Role`], that no RSV bit is set (no extension is
/// negotiated), the control frame rules, that fragments form whole messages, and that nothing
/// follows a Close.
/// On an error the state is left as it was; the caller is expected to fail the connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Validator {
    role: Role,
    /// The opcode of the fragmented message that is open, if any.
    open: Option<Opcode>,
    /// A Close frame was seen.
    closed: bool,
}

impl Validator {
    /// A validator for frames sent by `role`, before the first frame.
    pub const fn new(role: Role) -> Validator {
        Validator { role, open: None, closed: false }
    }

    /// Who sends the frames this validator checks.
    pub const fn role(&self) -> Role {
        self.role
    }

    /// The opcode (Text or Binary) of the fragmented message still waiting for its last
    /// Continuation, if any; a caller that checks UTF-8 across fragments needs it.
    pub const fn open_message(&self) -> Option<Opcode> {
        self.open
    }

    /// Whether a Close frame was seen; any further frame is [`Error::FrameAfterClose`].
    pub const fn is_closed(&self) -> bool {
        self.closed
    }

    /// Checks the next frame's header and says what the frame is.
    pub fn frame(&mut self, header: &FrameHeader) -> Result<Event, Error> {
        if self.closed {
            return Err(Error::FrameAfterClose);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Client, false) => return Err(Error::UnmaskedClientFrame),
            (Role::Server, true) => return Err(Error::MaskedServerFrame),
            _ => {}
        }
        if header.rsv != 0 {
            return Err(Error::ReservedBits);
        }
        // Headers from `parse` already passed this; one built by hand may not have.
        header.check_control()?;
        let fin = header.fin;
        match header.opcode {
            Opcode::Continuation => {
                if self.open.is_none() {
                    return Err(Error::UnexpectedContinuation);
                }
                if fin {
                    self.open = None;
                }
                Ok(Event::MessageContinue { fin })
            }
            opcode @ (Opcode::Text | Opcode::Binary) => {
                if self.open.is_some() {
                    return Err(Error::MessageInProgress);
                }
                if !fin {
                    self.open = Some(opcode);
                }
                Ok(Event::MessageStart { opcode, fin })
            }
            opcode @ (Opcode::Close | Opcode::Ping | Opcode::Pong) => {
                if opcode == Opcode::Close {
                    self.closed = true;
                }
                Ok(Event::Control(opcode))
            }
        }
    }
}

/// Whether a Close status code may be sent on the wire (RFC 6455 §7.4.1 and §7.4.2, and the
/// IANA "WebSocket Close Code Number Registry").
///
/// 1004 is reserved, 1005, 1006 and 1015 are for reporting locally and never sent, and the
/// rest of 1000 to 2999 belongs to the protocol and has no meaning yet.
/// 3000 to 4999 are for libraries, frameworks and applications; nothing above is defined.
const fn close_code_is_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks the (unmasked) body of a Close frame (RFC 6455 §5.5.1) and splits it.
///
/// An empty body is `Ok(None)`: no status code.
/// Otherwise the body is a 2-byte status code and a UTF-8 reason, returned as
/// `Some((code, reason))`; the reason bytes are checked to be UTF-8, so
/// `core::str::from_utf8(reason)` always succeeds on them.
/// A 1-byte body is [`Error::BadCloseLength`], a body over 125 bytes [`Error::ControlTooLong`],
/// a code that must not be sent [`Error::BadCloseCode`] and a reason that is not UTF-8
/// [`Error::BadCloseReason`].
pub fn close_payload(payload: &[u8]) -> Result<Option<(u16, &[u8])>, Error> {
    if payload.len() > MAX_CONTROL_PAYLOAD_LEN {
        return Err(Error::ControlTooLong);
    }
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(Error::BadCloseLength),
        [high, low, reason @ ..] => (u16::from_be_bytes([*high, *low]), reason),
    };
    if !close_code_is_valid(code) {
        return Err(Error::BadCloseCode(code));
    }
    if core::str::from_utf8(reason).is_err() {
        return Err(Error::BadCloseReason);
    }
    Ok(Some((code, reason)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;
    use std::vec::Vec;

    // The examples of RFC 6455 §5.7.
    static HELLO: [u8; 7] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    static HELLO_MASKED: [u8; 11] = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    static HEL: [u8; 5] = [0x01, 0x03, 0x48, 0x65, 0x6c];
    static LO: [u8; 4] = [0x80, 0x02, 0x6c, 0x6f];
    static PING: [u8; 7] = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    static PONG_MASKED: [u8; 11] = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    static BINARY_256: [u8; 4] = [0x82, 0x7e, 0x01, 0x00];
    static BINARY_64K: [u8; 10] = [0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn header(fin: bool, opcode: Opcode, mask: Option<[u8; 4]>, payload_len: u64) -> FrameHeader {
        FrameHeader { fin, rsv: 0, opcode, mask, payload_len }
    }

    /// Parses a whole header, checks every shorter prefix is incomplete, and checks that
    /// emitting the header gives back the same bytes.
    fn parse_whole(bytes: &[u8]) -> (FrameHeader, usize) {
        let (parsed, len) = FrameHeader::parse(bytes).unwrap().unwrap();
        assert_eq!(len, parsed.header_len());
        for end in 0..len {
            assert_eq!(FrameHeader::parse(&bytes[..end]), Ok(None), "prefix of {end} bytes");
        }
        let mut out = [0u8; MAX_HEADER_LEN];
        assert_eq!(parsed.emit(&mut out), Ok(len));
        assert_eq!(&out[..len], &bytes[..len]);
        (parsed, len)
    }

    #[test]
    fn single_frame_unmasked() {
        let (parsed, len) = parse_whole(&HELLO);
        assert_eq!(parsed, header(true, Opcode::Text, None, 5));
        assert_eq!(len, 2);
        assert_eq!(&HELLO[len..], b"Hello");
        let mut server = Validator::new(Role::Server);
        assert_eq!(server.frame(&parsed), Ok(Event::MessageStart { opcode: Opcode::Text, fin: true }));
        assert_eq!(server.open_message(), None);
        // The same frame from a client breaks the masking rule.
        assert_eq!(Validator::new(Role::Client).frame(&parsed), Err(Error::UnmaskedClientFrame));
    }

    #[test]
    fn single_frame_masked() {
        let (parsed, len) = parse_whole(&HELLO_MASKED);
        assert_eq!(parsed, header(true, Opcode::Text, Some(KEY), 5));
        assert_eq!(len, 6);
        let mut payload = [0u8; 5];
        payload.copy_from_slice(&HELLO_MASKED[len..]);
        apply_mask(KEY, 0, &mut payload);
        assert_eq!(&payload, b"Hello");
        // Unmasking in pieces as they arrive gives the same bytes.
        let mut pieces = [0u8; 5];
        pieces.copy_from_slice(&HELLO_MASKED[len..]);
        let (first, rest) = pieces.split_at_mut(3);
        apply_mask(KEY, 0, first);
        apply_mask(KEY, 3, rest);
        assert_eq!(&pieces, b"Hello");
        let mut client = Validator::new(Role::Client);
        assert_eq!(client.frame(&parsed), Ok(Event::MessageStart { opcode: Opcode::Text, fin: true }));
        assert_eq!(Validator::new(Role::Server).frame(&parsed), Err(Error::MaskedServerFrame));
    }

    #[test]
    fn fragmented_message() {
        let (first, first_len) = parse_whole(&HEL);
        let (second, second_len) = parse_whole(&LO);
        assert_eq!(first, header(false, Opcode::Text, None, 3));
        assert_eq!(second, header(true, Opcode::Continuation, None, 2));
        assert_eq!(&HEL[first_len..], b"Hel");
        assert_eq!(&LO[second_len..], b"lo");
        let mut server = Validator::new(Role::Server);
        assert_eq!(server.frame(&first), Ok(Event::MessageStart { opcode: Opcode::Text, fin: false }));
        assert_eq!(server.open_message(), Some(Opcode::Text));
        // A control frame may sit between the fragments (RFC 6455 §5.4).
        let (ping, _) = parse_whole(&PING);
        assert_eq!(server.frame(&ping), Ok(Event::Control(Opcode::Ping)));
        assert_eq!(server.open_message(), Some(Opcode::Text));
        assert_eq!(server.frame(&second), Ok(Event::MessageContinue { fin: true }));
        assert_eq!(server.open_message(), None);
        // Once the message is done, a Continuation has nothing to continue.
        assert_eq!(server.frame(&second), Err(Error::UnexpectedContinuation));
    }

    #[test]
    fn ping_and_pong() {
        let (ping, len) = parse_whole(&PING);
        assert_eq!(ping, header(true, Opcode::Ping, None, 5));
        assert_eq!(&PING[len..], b"Hello");
        let (pong, len) = parse_whole(&PONG_MASKED);
        assert_eq!(pong, header(true, Opcode::Pong, Some(KEY), 5));
        let mut payload = [0u8; 5];
        payload.copy_from_slice(&PONG_MASKED[len..]);
        apply_mask(KEY, 0, &mut payload);
        assert_eq!(&payload, b"Hello");
        assert!(ping.opcode.is_control() && pong.opcode.is_control());
        assert_eq!(Validator::new(Role::Server).frame(&ping), Ok(Event::Control(Opcode::Ping)));
        assert_eq!(Validator::new(Role::Client).frame(&pong), Ok(Event::Control(Opcode::Pong)));
    }

    #[test]
    fn extended_lengths() {
        let (parsed, len) = parse_whole(&BINARY_256);
        assert_eq!((parsed, len), (header(true, Opcode::Binary, None, 256), 4));
        let (parsed, len) = parse_whole(&BINARY_64K);
        assert_eq!((parsed, len), (header(true, Opcode::Binary, None, 65536), 10));
        // The boundaries of each encoding.
        for (payload_len, header_len) in
            [(0, 2), (125, 2), (126, 4), (0xffff, 4), (0x1_0000, 10), (MAX_PAYLOAD_LEN, 10)]
        {
            let unmasked = header(false, Opcode::Binary, None, payload_len);
            let masked = FrameHeader { mask: Some(KEY), ..unmasked };
            assert_eq!(unmasked.header_len(), header_len);
            assert_eq!(masked.header_len(), header_len + 4);
            let mut out = [0u8; MAX_HEADER_LEN];
            for h in [unmasked, masked] {
                let n = h.emit(&mut out).unwrap();
                assert_eq!(parse_whole(&out[..n]), (h, n));
            }
        }
    }

    #[test]
    fn opcodes() {
        for value in 0..=0xff {
            match Opcode::try_from(value) {
                Ok(opcode) => {
                    assert_eq!(u8::from(opcode), value);
                    assert_eq!(opcode.is_control(), value >= 8);
                }
                Err(error) => {
                    assert_eq!(error, Error::ReservedOpcode(value));
                    assert!(matches!(value, 3..=7 | 0xb..));
                }
            }
        }
    }

    #[test]
    fn parse_errors() {
        // Reserved opcodes, data (3) and control (0xb), found from the first byte alone.
        assert_eq!(FrameHeader::parse(&[0x83]), Err(Error::ReservedOpcode(3)));
        assert_eq!(FrameHeader::parse(&[0x8b, 0x00]), Err(Error::ReservedOpcode(0xb)));
        // A Ping with FIN clear.
        assert_eq!(FrameHeader::parse(&[0x09]), Err(Error::ControlFragmented));
        // A Close of 126 bytes, and a Pong using the 16-bit length for 5 bytes.
        assert_eq!(FrameHeader::parse(&[0x88, 0x7e]), Err(Error::ControlTooLong));
        assert_eq!(FrameHeader::parse(&[0x8a, 0x7e, 0x00, 0x05]), Err(Error::ControlTooLong));
        // 125 bytes in the 16-bit field, and 0xffff in the 64-bit field.
        assert_eq!(FrameHeader::parse(&[0x82, 0x7e, 0x00, 0x7d]), Err(Error::NonMinimalLength));
        let long = [0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        assert_eq!(FrameHeader::parse(&long), Err(Error::NonMinimalLength));
        let zero = [0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&zero), Err(Error::NonMinimalLength));
        // The top bit of the 64-bit length.
        let huge = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&huge), Err(Error::LengthTooLarge));
        // RSV bits are not parse's business; they are kept.
        let (parsed, _) = parse_whole(&[0xf1, 0x00]);
        assert_eq!(parsed.rsv, 7);
    }

    #[test]
    fn emit_errors() {
        let mut out = [0u8; MAX_HEADER_LEN];
        let text = header(true, Opcode::Text, Some(KEY), 0x1_0000);
        assert_eq!(text.emit(&mut out[..13]), Err(Error::BufferTooSmall));
        assert_eq!(out, [0; MAX_HEADER_LEN]);
        assert_eq!(text.emit(&mut out), Ok(14));
        assert_eq!(header(true, Opcode::Text, None, 0).emit(&mut []), Err(Error::BufferTooSmall));
        let too_long = header(true, Opcode::Binary, None, MAX_PAYLOAD_LEN + 1);
        assert_eq!(too_long.emit(&mut out), Err(Error::LengthTooLarge));
        assert_eq!(header(true, Opcode::Ping, None, 126).emit(&mut out), Err(Error::ControlTooLong));
        assert_eq!(header(false, Opcode::Close, None, 0).emit(&mut out), Err(Error::ControlFragmented));
        let wide_rsv = FrameHeader { rsv: 8, ..header(true, Opcode::Text, None, 0) };
        assert_eq!(wide_rsv.emit(&mut out), Err(Error::ReservedBits));
    }

    #[test]
    fn validator_errors() {
        let text = header(false, Opcode::Text, None, 1);
        let binary = header(true, Opcode::Binary, None, 1);
        let close = header(true, Opcode::Close, None, 0);
        let mut server = Validator::new(Role::Server);
        assert_eq!(server.frame(&header(true, Opcode::Continuation, None, 1)), Err(Error::UnexpectedContinuation));
        assert_eq!(server.frame(&FrameHeader { rsv: 4, ..binary }), Err(Error::ReservedBits));
        assert_eq!(server.frame(&FrameHeader { rsv: 1, ..binary }), Err(Error::ReservedBits));
        assert_eq!(server.frame(&text), Ok(Event::MessageStart { opcode: Opcode::Text, fin: false }));
        assert_eq!(server.frame(&binary), Err(Error::MessageInProgress));
        assert_eq!(server.frame(&text), Err(Error::MessageInProgress));
        // A header built by hand gets the control frame rules too.
        assert_eq!(server.frame(&header(false, Opcode::Ping, None, 0)), Err(Error::ControlFragmented));
        assert_eq!(server.frame(&header(true, Opcode::Pong, None, 126)), Err(Error::ControlTooLong));
        // Errors left the state alone: the Text message is still open.
        assert_eq!(server.open_message(), Some(Opcode::Text));
        assert_eq!(server.frame(&close), Ok(Event::Control(Opcode::Close)));
        assert!(server.is_closed());
        // Nothing follows a Close, not even a control frame or the end of the open message.
        assert_eq!(server.frame(&header(true, Opcode::Pong, None, 0)), Err(Error::FrameAfterClose));
        assert_eq!(server.frame(&header(true, Opcode::Continuation, None, 0)), Err(Error::FrameAfterClose));
        assert_eq!(server.frame(&close), Err(Error::FrameAfterClose));
        let mut client = Validator::new(Role::Client);
        assert_eq!(client.role(), Role::Client);
        assert_eq!(client.frame(&binary), Err(Error::UnmaskedClientFrame));
        assert_eq!(
            client.frame(&FrameHeader { mask: Some(KEY), ..binary }),
            Ok(Event::MessageStart { opcode: Opcode::Binary, fin: true })
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(close_payload(&[]), Ok(None));
        assert_eq!(close_payload(&[0x03]), Err(Error::BadCloseLength));
        assert_eq!(close_payload(&[0x03, 0xe8]), Ok(Some((1000, &b""[..]))));
        let mut body = [0u8; 9];
        body[..2].copy_from_slice(&1001u16.to_be_bytes());
        body[2..].copy_from_slice("bye ✓".as_bytes());
        assert_eq!(close_payload(&body), Ok(Some((1001, "bye ✓".as_bytes()))));
        // A reason cut in the middle of a UTF-8 sequence.
        assert_eq!(close_payload(&body[..8]), Err(Error::BadCloseReason));
        assert_eq!(close_payload(&[0x03, 0xe8, 0xff]), Err(Error::BadCloseReason));
        let mut long = [b'a'; 126];
        long[..2].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(close_payload(&long), Err(Error::ControlTooLong));
        assert!(close_payload(&long[..125]).is_ok());
        for code in 0..=u16::MAX {
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            let bytes = code.to_be_bytes();
            let result = close_payload(&bytes);
            if valid {
                assert_eq!(result, Ok(Some((code, &b""[..]))));
            } else {
                assert_eq!(result, Err(Error::BadCloseCode(code)));
            }
        }
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(close_payload(&code.to_be_bytes()), Err(Error::BadCloseCode(code)));
        }
        for code in [1000u16, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(close_payload(&code.to_be_bytes()).is_ok());
        }
    }

    #[test]
    fn error_display() {
        assert_eq!(Error::ReservedOpcode(0xb).to_string(), "reserved opcode 0xb");
        assert_eq!(Error::BadCloseCode(1005).to_string(), "invalid close code 1005");
        let all = [
            Error::BadCloseCode(1),
            Error::BadCloseLength,
            Error::BadCloseReason,
            Error::BufferTooSmall,
            Error::ControlFragmented,
            Error::ControlTooLong,
            Error::FrameAfterClose,
            Error::LengthTooLarge,
            Error::MaskedServerFrame,
            Error::MessageInProgress,
            Error::NonMinimalLength,
            Error::ReservedBits,
            Error::ReservedOpcode(3),
            Error::UnexpectedContinuation,
            Error::UnmaskedClientFrame,
        ];
        let messages: Vec<_> = all.iter().map(ToString::to_string).collect();
        for (i, message) in messages.iter().enumerate() {
            assert!(!message.is_empty());
            assert!(!messages[..i].contains(message), "{message} twice");
        }
    }

    fn mask_by_byte(key: [u8; 4], offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte ^= key[((offset + i as u64) % 4) as usize];
        }
    }

    fn opcode() -> impl Strategy<Value = Opcode> {
        prop_oneof![
            Just(Opcode::Continuation),
            Just(Opcode::Text),
            Just(Opcode::Binary),
            Just(Opcode::Close),
            Just(Opcode::Ping),
            Just(Opcode::Pong),
        ]
    }

    fn payload_len() -> impl Strategy<Value = u64> {
        prop_oneof![0..=125u64, 126..=0xffffu64, 0x1_0000..=MAX_PAYLOAD_LEN, Just(MAX_PAYLOAD_LEN)]
    }

    /// Any header that `parse` accepts.
    fn frame_header() -> impl Strategy<Value = FrameHeader> {
        (opcode(), any::<bool>(), 0..=7u8, any::<Option<[u8; 4]>>(), payload_len()).prop_map(
            |(opcode, fin, rsv, mask, payload_len)| {
                if opcode.is_control() {
                    FrameHeader { fin: true, rsv, opcode, mask, payload_len: payload_len % 126 }
                } else {
                    FrameHeader { fin, rsv, opcode, mask, payload_len }
                }
            },
        )
    }

    /// One step of a well-formed stream: a message in up to four fragments, or a control frame.
    #[derive(Debug, Clone)]
    enum Step {
        Message { opcode: Opcode, fragments: usize, interleaved: Option<Opcode> },
        Control(Opcode),
    }

    fn step() -> impl Strategy<Value = Step> {
        let data = prop_oneof![Just(Opcode::Text), Just(Opcode::Binary)];
        let control = prop_oneof![Just(Opcode::Ping), Just(Opcode::Pong)];
        prop_oneof![
            (data, 1..=4usize, proptest::option::of(control.clone()))
                .prop_map(|(opcode, fragments, interleaved)| Step::Message { opcode, fragments, interleaved }),
            control.prop_map(Step::Control),
        ]
    }

    proptest! {
        #[test]
        fn emit_parse_roundtrip(h in frame_header(), extra in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut out = [0u8; MAX_HEADER_LEN + 4];
            let len = h.emit(&mut out).unwrap();
            prop_assert_eq!(len, h.header_len());
            prop_assert_eq!(FrameHeader::parse(&out[..len]), Ok(Some((h, len))));
            // Payload bytes after the header do not change the answer.
            out[len..len + extra.len()].copy_from_slice(&extra);
            prop_assert_eq!(FrameHeader::parse(&out[..len + extra.len()]), Ok(Some((h, len))));
            for end in 0..len {
                prop_assert_eq!(FrameHeader::parse(&out[..end]), Ok(None));
            }
            prop_assert_eq!(h.emit(&mut out[..len - 1]), Err(Error::BufferTooSmall));
        }

        #[test]
        fn parse_is_incremental(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            // Whatever the bytes, more of them only ever turns Ok(None) into an answer.
            let whole = FrameHeader::parse(&bytes);
            if let Ok(Some((h, len))) = whole {
                prop_assert_eq!(len, h.header_len());
                prop_assert!(len <= bytes.len());
                let mut out = [0u8; MAX_HEADER_LEN];
                prop_assert_eq!(h.emit(&mut out), Ok(len));
                prop_assert_eq!(&out[..len], &bytes[..len]);
            }
            for end in 0..bytes.len() {
                match FrameHeader::parse(&bytes[..end]) {
                    Ok(None) => {}
                    answer => prop_assert_eq!(answer, whole),
                }
            }
        }

        #[test]
        fn fuzz_entry_point_does_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            crate::fuzzing::websocket(&bytes);
        }

        #[test]
        fn fuzz_entry_point_on_valid_frames(
            control in any::<u8>(),
            h in frame_header(),
            payload in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            // Random bytes rarely get past the header; a real header reaches the unmasking.
            let h = FrameHeader { payload_len: h.payload_len.min(payload.len() as u64), ..h };
            let mut bytes = std::vec![control; 1 + MAX_HEADER_LEN];
            let len = h.emit(&mut bytes[1..]).unwrap();
            bytes.truncate(1 + len);
            bytes.extend_from_slice(&payload);
            crate::fuzzing::websocket(&bytes);
        }

        #[test]
        fn mask_matches_byte_by_byte(
            key in any::<[u8; 4]>(),
            offset in any::<u64>(),
            data in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(key, offset, &mut fast);
            mask_by_byte(key, offset, &mut slow);
            prop_assert_eq!(&fast, &slow);
            apply_mask(key, offset, &mut fast);
            prop_assert_eq!(&fast, &data);
        }

        #[test]
        fn chunked_unmask_equals_whole(
            key in any::<[u8; 4]>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut whole = data.clone();
            apply_mask(key, 0, &mut whole);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut chunked = data.clone();
            let mut start = 0;
            for end in cuts {
                apply_mask(key, start as u64, &mut chunked[start..end]);
                start = end;
            }
            prop_assert_eq!(chunked, whole);
        }

        #[test]
        fn well_formed_streams_validate(steps in proptest::collection::vec(step(), 0..8), client in any::<bool>(), close in any::<bool>()) {
            let (role, mask) = if client { (Role::Client, Some(KEY)) } else { (Role::Server, None) };
            let mut validator = Validator::new(role);
            // Each frame goes through emit and parse first, as it would on the wire.
            let mut feed = |h: FrameHeader| {
                let mut out = [0u8; MAX_HEADER_LEN];
                let len = h.emit(&mut out).unwrap();
                let (parsed, _) = FrameHeader::parse(&out[..len]).unwrap().unwrap();
                validator.frame(&parsed)
            };
            for step in steps {
                match step {
                    Step::Message { opcode, fragments, interleaved } => {
                        let fin = fragments == 1;
                        prop_assert_eq!(feed(header(fin, opcode, mask, 3)), Ok(Event::MessageStart { opcode, fin }));
                        for i in 1..fragments {
                            if let Some(control) = interleaved {
                                prop_assert_eq!(feed(header(true, control, mask, 0)), Ok(Event::Control(control)));
                            }
                            let fin = i + 1 == fragments;
                            let event = feed(header(fin, Opcode::Continuation, mask, 300));
                            prop_assert_eq!(event, Ok(Event::MessageContinue { fin }));
                        }
                    }
                    Step::Control(opcode) => {
                        prop_assert_eq!(feed(header(true, opcode, mask, 125)), Ok(Event::Control(opcode)));
                    }
                }
            }
            if close {
                prop_assert_eq!(feed(header(true, Opcode::Close, mask, 2)), Ok(Event::Control(Opcode::Close)));
                prop_assert_eq!(feed(header(true, Opcode::Ping, mask, 0)), Err(Error::FrameAfterClose));
            }
        }
    }
}
