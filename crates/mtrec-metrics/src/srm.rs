//! The sample-ratio-mismatch (SRM) check of an online experiment: were units (users) assigned to
//! the arms in the configured proportion? Pearson's χ² test with one degree of freedom on the
//! two arm counts against the expected share; a tiny p-value means the assignment or the logging
//! is broken (e.g. one arm's records are lost) and the comparison is not to be trusted. The usual
//! threshold is p < 0.001: the check runs on every experiment, so it must rarely fire by chance.

use serde::{Deserialize, Serialize};

use crate::normal::normal_cdf;

/// The check's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleRatio {
    /// Units of the control arm (A) and of the treatment arm (B).
    pub counts: [u64; 2],
    /// The configured share of B.
    pub expected_share_b: f64,
    /// The observed share of B.
    pub observed_share_b: f64,
    pub chi_square: f64,
    pub p_value: f64,
}

/// Pearson's χ² (1 degree of freedom) of `counts` against `expected_share_b`; `None` without
/// units or with a share outside (0, 1).
pub fn sample_ratio_mismatch(counts: [u64; 2], expected_share_b: f64) -> Option<SampleRatio> {
    let total = (counts[0] + counts[1]) as f64;
    if total == 0.0 || !(expected_share_b > 0.0 && expected_share_b < 1.0) {
        return None;
    }
    let expected = [total * (1.0 - expected_share_b), total * expected_share_b];
    let chi_square: f64 = counts.iter().zip(expected).map(|(&o, e)| (o as f64 - e).powi(2) / e).sum();
    // With one degree of freedom, χ² = Z²: P(χ² > x) = 2 (1 − Φ(√x)).
    let p_value = (2.0 * (1.0 - normal_cdf(chi_square.sqrt()))).clamp(0.0, 1.0);
    Some(SampleRatio { counts, expected_share_b, observed_share_b: counts[1] as f64 / total, chi_square, p_value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_chi_square_distribution() {
        // 9,000 vs 1,000 at 10%: exactly as expected.
        let exact = sample_ratio_mismatch([9_000, 1_000], 0.1).unwrap();
        assert_eq!(exact.chi_square, 0.0);
        assert!((exact.p_value - 1.0).abs() < 1e-12);
        // 9,100 vs 900: χ² = 100²/9000 + 100²/1000 = 11.111; scipy.stats.chi2.sf(11.111, 1) =
        // 8.58e-4.
        let off = sample_ratio_mismatch([9_100, 900], 0.1).unwrap();
        assert!((off.chi_square - 11.1111).abs() < 1e-3, "{off:?}");
        assert!((off.p_value - 8.58e-4).abs() < 1e-5, "{off:?}");
        assert!((off.observed_share_b - 0.09).abs() < 1e-12);
        assert_eq!(sample_ratio_mismatch([0, 0], 0.1), None);
        assert_eq!(sample_ratio_mismatch([5, 5], 1.0), None);
    }
}
