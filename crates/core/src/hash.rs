//! The symmetric flow hash.
//!
//! Both directions of a flow must reach the worker that owns its state, and ENA's RSS only sees
//! the outer headers, so the owner is chosen in software from the inner 5-tuple. The hash is
//! computed over the key after ordering its two endpoints, which makes it symmetric.

use crate::flow::FlowKey;

const K0: u64 = 0x9E37_79B9_7F4A_7C15;
const K1: u64 = 0xC2B2_AE3D_27D4_EB4F;
const K2: u64 = 0x1656_67B1_9E37_79F9;

#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let m = (a ^ K0) as u128 * (b ^ K1) as u128;
    (m as u64) ^ ((m >> 64) as u64)
}

/// A 64-bit hash of a (normalised, hence symmetric) flow key.
#[inline(always)]
pub fn flow_hash(k: &FlowKey) -> u64 {
    let ports = ((k.lo_port as u64) << 32) | ((k.hi_port as u64) << 16) | k.protocol as u64;
    // One 16-byte load per address (byte-wise assembly of the words compiled to byte loads).
    let (lo, hi) = (u128::from_le_bytes(k.lo), u128::from_le_bytes(k.hi));
    let h = mix(lo as u64, (lo >> 64) as u64);
    let h = mix(h ^ hi as u64, (hi >> 64) as u64 ^ ports);
    mix(h, K2)
}

/// The worker (0..n) that owns a flow with hash `h`: a multiply-shift reduction of the high
/// bits, so it is independent of the bits that pick table buckets.
#[inline(always)]
pub fn owner(h: u64, n_workers: usize) -> usize {
    (((h >> 32) * n_workers as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_spreads_and_stays_in_range() {
        let mut seen = [0u32; 4];
        for i in 0..10_000u32 {
            let mut lo = [0u8; 16];
            lo[..4].copy_from_slice(&i.to_be_bytes());
            let k = FlowKey { lo, hi: [9; 16], lo_port: i as u16, hi_port: 80, protocol: 6, ipv6: false };
            seen[owner(flow_hash(&k), 4)] += 1;
        }
        for s in seen {
            assert!(s > 2_000 && s < 3_000, "{seen:?}");
        }
    }
}
