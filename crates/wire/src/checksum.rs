//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The functions here return the *folded ones' complement sum*, not the checksum itself:
//! sums of separate parts combine with [`combine`], and the checksum field is the bitwise NOT of
//! the final sum. A packet verifies when the sum over it, checksum field included, is `0xffff`.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Folds a wide accumulator into 16 bits with end-around carry.
///
/// The loop never yields 0 for a nonzero input, which keeps the result equal to what a
/// word-by-word ones' complement addition would give.
#[inline(always)]
fn fold(sum: u64) -> u16 {
    // Four fixed steps, no loop: 2^32 and 2^16 are both 1 modulo 0xffff. After the first step
    // the sum is below 2^33, after the second below 0x30000, after the third at most 0x10001,
    // after the fourth at most 0xffff.
    let s = (sum & 0xffff_ffff) + (sum >> 32);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The folded ones' complement sum of `bytes`, read as big-endian 16-bit words.
///
/// An odd final byte is padded with a zero byte on the right, as RFC 1071 says.
/// The result is not inverted.
#[inline]
pub fn data(bytes: &[u8]) -> u16 {
    // Summing 32-bit words into a 64-bit accumulator is equivalent to summing 16-bit words
    // (ones' complement addition is associative and end-around carry commutes with folding),
    // and it halves the loop count. The accumulator cannot overflow below 2^32 words.
    let mut sum: u64 = 0;
    let mut words = bytes.chunks_exact(4);
    for word in &mut words {
        sum += u64::from(u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
    }
    let mut rest = words.remainder().chunks_exact(2);
    for pair in &mut rest {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = rest.remainder() {
        sum += u64::from(*last) << 8;
    }
    fold(sum)
}

/// The folded sum of a 20-byte IPv4 header (one without options): [`data`] unrolled, for the
/// fast path.
#[inline(always)]
pub fn ipv4_header(h: &[u8; 20]) -> u16 {
    let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    fold(w(0) + w(4) + w(8) + w(12) + w(16))
}

/// Combines folded sums of separate parts into the folded sum of the whole.
///
/// Each part except the last must have an even length, or the byte alignment is lost.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The folded sum of the IPv4 pseudo header (RFC 768, RFC 793) for a UDP or TCP checksum.
///
/// `length` is the length of the upper-layer header plus payload.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u32) -> u16 {
    let sum = u64::from(src.to_bits()) + u64::from(dst.to_bits()) + u64::from(protocol) + u64::from(length);
    fold(sum)
}

/// The folded sum of the IPv6 pseudo header (RFC 8200 §8.1) for a UDP, TCP or ICMPv6 checksum.
///
/// `length` is the upper-layer packet length: the payload length minus any extension headers.
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, protocol: u8, length: u32) -> u16 {
    let sum = u64::from(data(&src.octets())) + u64::from(data(&dst.octets())) + u64::from(protocol) + u64::from(length);
    fold(sum)
}

/// Updates a checksum field after one 16-bit word of the covered data changed from `old` to `new`.
///
/// This is RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, which unlike equation 2 never turns a
/// valid checksum into `0x0000` when a full recomputation would give `0xffff`.
/// The result equals a full recomputation except when every covered byte becomes zero, where both
/// `0x0000` and `0xffff` mean the same ones' complement zero; no IP, TCP or UDP header can be all zero.
///
/// A UDP checksum of 0 means "no checksum" over IPv4: leave such a field alone, and send a
/// result of 0 as `0xffff` (RFC 768).
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!checksum) + u64::from(!old) + u64::from(new);
    !fold(sum)
}

/// Updates a checksum field after a 32-bit value (an IPv4 address, a sequence number) changed.
///
/// `old` and `new` are in network byte order, as they sit in the packet, and must start at an
/// even offset of the covered data.
pub fn update32(checksum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let hi = update16(checksum, u16::from_be_bytes([old[0], old[1]]), u16::from_be_bytes([new[0], new[1]]));
    update16(hi, u16::from_be_bytes([old[2], old[3]]), u16::from_be_bytes([new[2], new[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn rfc1071_example() {
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(data(&bytes[..6]), 0xe6fa);
        assert_eq!(combine(&[data(&bytes[..4]), data(&bytes[4..])]), 0xddf2);
    }

    #[test]
    fn ipv4_header_sum_is_the_general_sum() {
        let mut h = [0u8; 20];
        for seed in 0..2000u32 {
            for (i, b) in h.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2_654_435_761).rotate_left(i as u32 * 3) >> 7) as u8;
            }
            if seed % 3 == 0 {
                h = [0xff; 20];
                h[seed as usize % 20] = seed as u8;
            }
            assert_eq!(ipv4_header(&h), data(&h), "{h:02x?}");
        }
    }

    #[test]
    fn odd_length_pads_on_the_right() {
        assert_eq!(data(&[0x12]), 0x1200);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x6834);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn carries_fold_around() {
        assert_eq!(data(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(data(&[0xff, 0xff, 0xff, 0xff]), 0xffff);
        assert_eq!(combine(&[0xffff, 0xffff, 0x0002]), 0x0002);
    }

    // A real IPv4 header (from Wikipedia's worked example) whose checksum field is b861.
    const IPV4_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7,
    ];

    #[test]
    fn ipv4_header_verifies() {
        assert_eq!(data(&IPV4_HEADER), 0xffff);
        let mut zeroed = IPV4_HEADER;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(!data(&zeroed), 0xb861);
    }

    #[test]
    fn incremental_ttl_and_address_updates() {
        let mut header = IPV4_HEADER;
        let old_word = u16::from_be_bytes([header[8], header[9]]);
        header[8] -= 1;
        let new_word = u16::from_be_bytes([header[8], header[9]]);
        let updated = update16(0xb861, old_word, new_word);

        let old_src = [header[12], header[13], header[14], header[15]];
        let new_src = [10, 1, 2, 3];
        header[12..16].copy_from_slice(&new_src);
        let updated = update32(updated, old_src, new_src);

        header[10] = 0;
        header[11] = 0;
        assert_eq!(updated, !data(&header));
    }

    #[test]
    fn update_never_yields_negative_zero_for_nonzero_data() {
        // The data 0x0001 0xfffe sums to 0xffff, so the checksum is 0x0000. Changing 0xfffe to
        // 0xfffd gives a sum of 0xfffe and checksum 0x0001; changing back must give 0x0000.
        assert_eq!(update16(0x0001, 0xfffd, 0xfffe), 0x0000);
        // Changing 0x0000 to 0xffff in data whose other word is 0x1234 keeps the sum 0x1234.
        assert_eq!(update16(!0x1234, 0x0000, 0xffff), !0x1234);
    }

    #[test]
    fn pseudo_headers() {
        let v4 = pseudo_header_v4(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 199), 17, 0x5f);
        assert_eq!(v4, combine(&[0xc0a8, 0x0001, 0xc0a8, 0x00c7, 0x0011, 0x005f]));
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let v6 = pseudo_header_v6(&src, &dst, 6, 0x1_0004);
        assert_eq!(v6, combine(&[0x2001, 0x0db8, 0x0001, 0x2001, 0x0db8, 0x0002, 0x0006, 0x0001, 0x0004]));
    }
}
