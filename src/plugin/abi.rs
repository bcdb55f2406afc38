//! The proxy-wasm ABI's numbers and encodings (spec 0.2.1; 0.2.0 modules use the same ones).

/// `proxy_status_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl Status {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// What a stream or HTTP callback returns.
pub const ACTION_CONTINUE: i32 = 0;
pub const ACTION_PAUSE: i32 = 1;

/// `proxy_map_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    CallResponseHeaders,
    CallResponseTrailers,
}

impl MapType {
    pub fn from_raw(v: i32) -> Option<MapType> {
        Some(match v {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::CallResponseHeaders,
            7 => MapType::CallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_buffer_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    RequestBody,
    ResponseBody,
    DownstreamData,
    UpstreamData,
    CallResponseBody,
    GrpcReceive,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    pub fn from_raw(v: i32) -> Option<BufferType> {
        Some(match v {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::CallResponseBody,
            5 => BufferType::GrpcReceive,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return None,
        })
    }
}

/// `proxy_stream_type_t`.
pub const STREAM_REQUEST: i32 = 0;
pub const STREAM_RESPONSE: i32 = 1;
pub const STREAM_DOWNSTREAM: i32 = 2;
pub const STREAM_UPSTREAM: i32 = 3;

/// `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn from_raw(v: i32) -> Option<MetricType> {
        Some(match v {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// `proxy_peer_type_t`: who closed a stream.
pub const PEER_LOCAL: i32 = 1;
pub const PEER_REMOTE: i32 = 2;

/// gRPC's status for a call the host does not offer.
pub const GRPC_UNIMPLEMENTED: u32 = 12;

/// Log levels, trace (0) to critical (5).
pub fn level_name(level: i32) -> &'static str {
    match level {
        0 => "trace",
        1 => "debug",
        2 => "info",
        3 => "warn",
        4 => "error",
        5 => "critical",
        _ => "unknown",
    }
}

/// Encodes header pairs as the ABI wants them: the pair count (u32 LE), then each pair's name
/// and value lengths (u32 LE each), then each name and value, each followed by a NUL.
pub fn encode_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let (mut n, mut size) = (0u32, 4usize);
    for (k, v) in pairs.clone() {
        n += 1;
        size += 8 + k.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&n.to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Decodes [`encode_pairs`]' format; None when it is malformed (a length past the end, a
/// missing NUL).
pub fn decode_pairs(data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let word = |at: usize| -> Option<usize> {
        let b = data.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = word(0)?;
    // Every pair needs 8 bytes of lengths and two NULs: a count beyond that is a lie.
    if n > data.len() / 10 + 1 {
        return None;
    }
    let mut lens = Vec::with_capacity(n);
    for i in 0..n {
        lens.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + n * 8;
    let mut out = Vec::with_capacity(n);
    for (kl, vl) in lens {
        let k = data.get(at..at.checked_add(kl)?)?;
        at += kl;
        if data.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        let v = data.get(at..at.checked_add(vl)?)?;
        at += vl;
        if data.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        out.push((k, v));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pairs_round_trip() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/"), (b"user-agent", b"curl/8"), (b"x", b"")];
        let enc = encode_pairs(pairs.iter().copied());
        assert_eq!(&enc[..4], &3u32.to_le_bytes());
        assert_eq!(decode_pairs(&enc).unwrap(), pairs);
        assert_eq!(decode_pairs(&encode_pairs(std::iter::empty())).unwrap(), vec![]);
    }

    #[test]
    fn malformed_pairs_are_refused() {
        assert!(decode_pairs(b"").is_none());
        assert!(decode_pairs(&u32::MAX.to_le_bytes()).is_none());
        let mut enc = encode_pairs([(&b"k"[..], &b"v"[..])].into_iter());
        let last = enc.len() - 1;
        enc[last] = b'x';
        assert!(decode_pairs(&enc).is_none(), "missing NUL");
        enc.truncate(last - 1);
        assert!(decode_pairs(&enc).is_none(), "truncated");
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_pairs(&data);
        }

        #[test]
        fn encode_decode(pairs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 0..20)), 0..10)) {
            let enc = encode_pairs(pairs.iter().map(|(k, v)| (&k[..], &v[..])));
            let dec = decode_pairs(&enc).unwrap();
            prop_assert_eq!(dec.len(), pairs.len());
            for ((k, v), (dk, dv)) in pairs.iter().zip(dec) {
                prop_assert_eq!(&k[..], dk);
                prop_assert_eq!(&v[..], dv);
            }
        }
    }
}
