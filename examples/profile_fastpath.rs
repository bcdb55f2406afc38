//! Runs the sans-IO fast path over in-memory frames, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/profile_fastpath 1000 200`
//! (flows, rounds). Prints packets handled and drops (which must be 0).

use flowdog_core::build::{looped_fast_path, looped_frames};
use flowdog_core::FastPath;
use std::net::Ipv4Addr;

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let addr = Ipv4Addr::new(198, 18, 0, 2);
    let mac = [2, 0, 0, 0, 0, 2];
    let mut frames = looped_frames(flows, 64, addr, mac);
    let mut fp = looped_fast_path(addr, mac);
    run_rounds(&mut fp, &mut frames, rounds);
    println!("handled {} packets, {} drops", flows as u64 * rounds as u64, fp.counters.total_drops());
}

/// The measured loop, out of line so that callgrind can count it alone:
/// `--toggle-collect=profile_fastpath::run_rounds`.
#[inline(never)]
fn run_rounds(fp: &mut FastPath, frames: &mut [Vec<u8>], rounds: u32) {
    for r in 0..rounds {
        for f in frames.iter_mut() {
            std::hint::black_box(fp.handle(f, r as u64, false));
        }
    }
}
