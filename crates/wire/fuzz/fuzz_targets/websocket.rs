//! Arbitrary bytes as one direction of a WebSocket stream: frame headers parsed back to back,
//! checked by the framing validator, and their payloads unmasked.
//! Any panic is a broken no-panic contract in flowdog-wire's websocket module.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowdog_wire::fuzzing::websocket(data);
});
