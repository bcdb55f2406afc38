//! Arbitrary bytes as an Ethernet frame, walked down to the inner packet of a GWLB frame.
//! Any panic is a broken no-panic contract in flowdog-wire.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowdog_wire::fuzzing::parse_frame(data);
});
