//! The verdict rule that A/B reports and experiment summaries share: the p-values of a family of
//! comparisons (one per task, on its primary metric) are adjusted by Benjamini–Hochberg, and a
//! comparison is significant when its adjusted p-value is below `alpha`, in the direction of
//! its delta. Plus the minimum detectable effect of a two-sided normal test.
//!
//! Benjamini–Hochberg keeps the expected share of false verdicts among the significant ones at
//! or below `alpha` (for independent or positively dependent tests). When no comparison differs
//! at all, any significant verdict is a false one, so the chance of at least one is at most
//! `alpha`: in that case it bounds the family-wise error, as Simes' test does.

use serde::{Deserialize, Serialize};

use crate::normal::normal_quantile;

/// The verdict on one comparison of B against A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    BBetter,
    BWorse,
    NoSignificantDifference,
}

impl Verdict {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::BBetter => "b_better",
            Verdict::BWorse => "b_worse",
            Verdict::NoSignificantDifference => "no_significant_difference",
        }
    }
}

/// Benjamini–Hochberg adjusted p-values, in input order: with the `m` defined p-values sorted
/// ascending, `q_(i) = min_{j ≥ i} min(1, m p_(j) / j)`. Undefined (`None` or non-finite)
/// p-values stay `None` and do not count in `m`: a comparison that could not be tested is not
/// part of the family.
pub fn benjamini_hochberg(p_values: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut order: Vec<usize> = (0..p_values.len()).filter(|&i| p_values[i].is_some_and(f64::is_finite)).collect();
    order.sort_by(|&i, &j| p_values[i].unwrap_or(1.0).total_cmp(&p_values[j].unwrap_or(1.0)));
    let m = order.len() as f64;
    let mut adjusted = vec![None; p_values.len()];
    let mut running_min = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        let p = p_values[i].unwrap_or(1.0);
        running_min = running_min.min(m * p / (rank + 1) as f64);
        adjusted[i] = Some(running_min.clamp(0.0, 1.0));
    }
    adjusted
}

/// The verdict from a delta (`b - a`) and its adjusted p-value: significant when the adjusted
/// p-value is below `alpha` and the delta is not zero; better or worse by the metric's
/// direction.
pub fn verdict(delta: Option<f64>, adjusted_p: Option<f64>, alpha: f64, higher_is_better: bool) -> Verdict {
    match (delta, adjusted_p) {
        (Some(d), Some(q)) if q < alpha && d != 0.0 && d.is_finite() => {
            if (d > 0.0) == higher_is_better {
                Verdict::BBetter
            } else {
                Verdict::BWorse
            }
        }
        _ => Verdict::NoSignificantDifference,
    }
}

/// The smallest true |delta| that a two-sided level-`alpha` normal test with this standard
/// error detects with probability `power`: `(z_{1-alpha/2} + z_power) · std_error`.
pub fn min_detectable_effect(std_error: f64, alpha: f64, power: f64) -> f64 {
    (normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power)) * std_error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: &[Option<f64>], expected: &[Option<f64>]) {
        assert_eq!(actual.len(), expected.len());
        for (q, e) in actual.iter().zip(expected) {
            assert_eq!(q.is_some(), e.is_some(), "{actual:?} vs {expected:?}");
            if let (Some(q), Some(e)) = (q, e) {
                assert!((q - e).abs() < 1e-15, "{actual:?} vs {expected:?}");
            }
        }
    }

    #[test]
    fn benjamini_hochberg_by_hand() {
        // Sorted: 0.005, 0.01, 0.03, 0.04 (m = 4): m p / rank = 0.02, 0.02, 0.04, 0.04,
        // already non-decreasing, so those are the adjusted values. The None is left out.
        let q = benjamini_hochberg(&[Some(0.01), Some(0.04), None, Some(0.03), Some(0.005)]);
        assert_close(&q, &[Some(0.02), Some(0.04), None, Some(0.04), Some(0.02)]);
        // Ratios 0.03, 0.03, 0.02: the last one's smaller value carries down to every rank.
        assert_close(&benjamini_hochberg(&[Some(0.01), Some(0.02), Some(0.02)]), &[Some(0.02); 3]);
        assert_close(&benjamini_hochberg(&[Some(0.7)]), &[Some(0.7)]);
        assert_close(&benjamini_hochberg(&[Some(0.9), Some(0.95)]), &[Some(0.95), Some(0.95)]);
        assert_close(&benjamini_hochberg(&[Some(0.6), Some(0.001)]), &[Some(0.6), Some(0.002)]);
        assert_close(&benjamini_hochberg(&[Some(f64::NAN)]), &[None]);
    }

    #[test]
    fn verdicts_follow_direction_and_the_adjusted_p() {
        assert_eq!(verdict(Some(0.01), Some(0.01), 0.05, true), Verdict::BBetter);
        assert_eq!(verdict(Some(0.01), Some(0.01), 0.05, false), Verdict::BWorse);
        assert_eq!(verdict(Some(-0.01), Some(0.01), 0.05, false), Verdict::BBetter);
        assert_eq!(verdict(Some(0.01), Some(0.05), 0.05, true), Verdict::NoSignificantDifference);
        assert_eq!(verdict(Some(0.0), Some(0.0), 0.05, true), Verdict::NoSignificantDifference);
        assert_eq!(verdict(None, Some(0.0), 0.05, true), Verdict::NoSignificantDifference);
        assert_eq!(verdict(Some(1.0), None, 0.05, true), Verdict::NoSignificantDifference);
    }

    #[test]
    fn minimum_detectable_effect_at_80_percent_power() {
        // z_0.975 = 1.959964, z_0.8 = 0.841621 (normal tables): 2.801585 standard errors.
        assert!((min_detectable_effect(0.01, 0.05, 0.8) - 0.02801585).abs() < 1e-7);
    }
}
