//! Arbitrary bytes as the start of a TCP stream that may be TLS: the peek and the ClientHello
//! parser of flowdog-wire's tls module.
//! Any panic is a broken no-panic contract there; the assertions check that the peek never
//! contradicts the parse and that a ClientHello comes only from whole records in the buffer.
#![no_main]

use flowdog_wire::tls::{looks_like_tls, parse_client_hello, HelloError};
use libfuzzer_sys::fuzz_target;

/// The largest ClientHello the appliance buffers: one full record's worth.
const MAX: usize = 16384;

fuzz_target!(|data: &[u8]| {
    let peek = looks_like_tls(data);
    let parsed = parse_client_hello(data, MAX);
    if peek == Some(false) {
        assert_eq!(parsed, Err(HelloError::NotTls));
    }
    if let Ok(hello) = &parsed {
        assert_eq!(peek, Some(true));
        let records = data.get(..hello.len).expect("a ClientHello's records lie inside the buffer");
        assert_eq!(parse_client_hello(records, MAX).as_ref(), Ok(hello));
    }
});
