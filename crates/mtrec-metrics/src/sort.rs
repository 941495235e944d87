//! Sorting helpers: f32 scores become `u32` keys whose unsigned order is `f32::total_cmp`
//! order, packed with a payload into `u64` so one radix sort orders scores without indirection.

/// Maps `x` to a `u32` whose unsigned order equals `f32::total_cmp` order (so `-0.0 < 0.0`
/// and NaNs sort to the ends, as in the trainer's AUC).
#[inline]
pub fn sortable_key(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

const DIGIT_BITS: u32 = 11;
const DIGIT_MASK: u64 = (1 << DIGIT_BITS) - 1;
/// Below this size a comparison sort beats the histogram passes.
const RADIX_THRESHOLD: usize = 4096;

/// Stable LSD radix sort of `keys` by their bits `from_bit..64` (lower bits are payload and do
/// not take part in the order). Passes whose digit is the same for every key are skipped, which
/// for probabilities in [0, 1] removes most of the work on the top bits.
pub fn radix_sort_u64(keys: &mut Vec<u64>, from_bit: u32) {
    assert!(from_bit < 64, "radix_sort_u64: from_bit must be < 64");
    let n = keys.len();
    if n < RADIX_THRESHOLD {
        keys.sort_by_key(|&k| k >> from_bit);
        return;
    }
    let passes = (64 - from_bit).div_ceil(DIGIT_BITS) as usize;
    let mut histograms = vec![[0usize; 1 << DIGIT_BITS]; passes];
    for &k in keys.iter() {
        for (pass, histogram) in histograms.iter_mut().enumerate() {
            let digit = (k >> (from_bit + pass as u32 * DIGIT_BITS)) & DIGIT_MASK;
            histogram[digit as usize] += 1;
        }
    }
    let mut buffer = vec![0u64; n];
    for (pass, histogram) in histograms.iter_mut().enumerate() {
        if histogram.contains(&n) {
            continue;
        }
        let mut start = 0;
        for slot in histogram.iter_mut() {
            let count = *slot;
            *slot = start;
            start += count;
        }
        let shift = from_bit + pass as u32 * DIGIT_BITS;
        for &k in keys.iter() {
            let digit = ((k >> shift) & DIGIT_MASK) as usize;
            buffer[histogram[digit]] = k;
            histogram[digit] += 1;
        }
        std::mem::swap(keys, &mut buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn key_order_matches_total_cmp() {
        let xs = [f32::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-30, 0.5, 1.0, f32::INFINITY, f32::NAN, -f32::NAN];
        for &a in &xs {
            for &b in &xs {
                assert_eq!(sortable_key(a).cmp(&sortable_key(b)), a.total_cmp(&b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn radix_sort_is_stable_and_ordered() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Few distinct keys so stability is exercised; the payload is the original position.
        let mut keys: Vec<u64> =
            (0..20_000u64).map(|i| (u64::from(sortable_key(rng.gen_range(0..50) as f32 / 7.0)) << 32) | i).collect();
        let mut expected = keys.clone();
        expected.sort_by_key(|&k| k >> 32);
        radix_sort_u64(&mut keys, 32);
        assert_eq!(keys, expected);
    }
}
