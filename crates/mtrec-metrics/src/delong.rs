//! DeLong's test (DeLong, DeLong & Clarke-Pearson 1988) for two correlated AUCs measured on
//! the same rows, in the O(n log n) form of Sun & Xu (2014).
//!
//! Sun & Xu compute the structural components from midranks; equivalently, after one sort
//! per model, each positive's component is the fraction of negatives it beats (ties count
//! one half) and each negative's is the fraction of positives that beat it. Their
//! covariances over positives (S10) and negatives (S01) give
//! `Var(AUC_b - AUC_a) = (S10_aa + S10_bb - 2 S10_ab) / m + (S01_aa + S01_bb - 2 S01_ab) / n`.

use serde::{Deserialize, Serialize};

use crate::binary::RankedScores;
use crate::normal::{normal_quantile, two_sided_p};

/// The result of a DeLong test of `AUC_b - AUC_a`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DelongTest {
    pub auc_a: f64,
    pub auc_b: f64,
    /// `auc_b - auc_a`.
    pub delta: f64,
    pub std_error: f64,
    /// `delta / std_error`; 0 when both are 0 (identical rankings), ±inf when only the
    /// standard error is 0.
    pub z: f64,
    /// Two-sided normal p-value of `z`.
    pub p_value: f64,
    /// The `confidence` interval `delta ± q * std_error`.
    pub ci_low: f64,
    pub ci_high: f64,
    pub confidence: f64,
}

/// Per-row structural components of one model: `v10` for positives, `v01` for negatives.
fn placements(scores: &[f32], labels: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let ranked = RankedScores::new(scores);
    let m = labels.iter().filter(|&&y| y != 0.0).count();
    let n = labels.len() - m;
    // Walk tie groups ascending; components are written back in row order among positives
    // (negatives) so both models' vectors line up.
    let mut pos_index = vec![0usize; labels.len()];
    let (mut pi, mut ni) = (0, 0);
    for (row, &y) in labels.iter().enumerate() {
        if y != 0.0 {
            pos_index[row] = pi;
            pi += 1;
        } else {
            pos_index[row] = ni;
            ni += 1;
        }
    }
    let (mut v10, mut v01) = (vec![0.0; m], vec![0.0; n]);
    let (mut neg_below, mut pos_below) = (0usize, 0usize);
    ranked.for_each_tie_group(|rows| {
        let pos = rows.iter().filter(|&&r| labels[r] != 0.0).count();
        let neg = rows.len() - pos;
        let pos_above = m - pos_below - pos;
        for &r in rows {
            if labels[r] != 0.0 {
                v10[pos_index[r]] = (neg_below as f64 + 0.5 * neg as f64) / n as f64;
            } else {
                v01[pos_index[r]] = (pos_above as f64 + 0.5 * pos as f64) / m as f64;
            }
        }
        neg_below += neg;
        pos_below += pos;
    });
    (v10, v01)
}

/// Sample covariance matrix entries (aa, bb, ab) of two equally long vectors.
fn covariance(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let k = a.len() as f64;
    let (mean_a, mean_b) = (a.iter().sum::<f64>() / k, b.iter().sum::<f64>() / k);
    let (mut aa, mut bb, mut ab) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        aa += (x - mean_a) * (x - mean_a);
        bb += (y - mean_b) * (y - mean_b);
        ab += (x - mean_a) * (y - mean_b);
    }
    (aa / (k - 1.0), bb / (k - 1.0), ab / (k - 1.0))
}

/// Both models' structural components on the same rows, with the positive and negative counts.
pub(crate) struct PairedPlacements {
    pub v10_a: Vec<f64>,
    pub v10_b: Vec<f64>,
    pub v01_a: Vec<f64>,
    pub v01_b: Vec<f64>,
    pub auc_a: f64,
    pub auc_b: f64,
}

impl PairedPlacements {
    /// `None` with fewer than two positives or two negatives.
    pub(crate) fn new(scores_a: &[f32], scores_b: &[f32], labels: &[f32]) -> Option<PairedPlacements> {
        assert_eq!(scores_a.len(), labels.len(), "delong_test: scores_a and labels differ in length");
        assert_eq!(scores_b.len(), labels.len(), "delong_test: scores_b and labels differ in length");
        let m = labels.iter().filter(|&&y| y != 0.0).count();
        let n = labels.len() - m;
        if m < 2 || n < 2 {
            return None;
        }
        let (v10_a, v01_a) = placements(scores_a, labels);
        let (v10_b, v01_b) = placements(scores_b, labels);
        let auc_a = v10_a.iter().sum::<f64>() / m as f64;
        let auc_b = v10_b.iter().sum::<f64>() / m as f64;
        Some(PairedPlacements { v10_a, v10_b, v01_a, v01_b, auc_a, auc_b })
    }

    /// DeLong's variance of `AUC_b - AUC_a`, every row independent.
    pub(crate) fn row_independent_variance(&self) -> f64 {
        let (m, n) = (self.v10_a.len() as f64, self.v01_a.len() as f64);
        let s10 = covariance(&self.v10_a, &self.v10_b);
        let s01 = covariance(&self.v01_a, &self.v01_b);
        (s10.0 + s10.1 - 2.0 * s10.2) / m + (s01.0 + s01.1 - 2.0 * s01.2) / n
    }

    /// The normal test of `auc_b - auc_a` with the given variance.
    pub(crate) fn test(&self, variance: f64, confidence: f64) -> DelongTest {
        let std_error = variance.max(0.0).sqrt();
        let delta = self.auc_b - self.auc_a;
        let z = if std_error > 0.0 {
            delta / std_error
        } else if delta == 0.0 {
            0.0
        } else {
            delta.signum() * f64::INFINITY
        };
        let q = normal_quantile(0.5 + confidence / 2.0);
        DelongTest {
            auc_a: self.auc_a,
            auc_b: self.auc_b,
            delta,
            std_error,
            z,
            p_value: two_sided_p(z),
            ci_low: delta - q * std_error,
            ci_high: delta + q * std_error,
            confidence,
        }
    }
}

/// DeLong test of model B's AUC against model A's on the same rows, with a `confidence`
/// (e.g. 0.95) normal interval. `None` with fewer than two positives or two negatives.
pub fn delong_test(scores_a: &[f32], scores_b: &[f32], labels: &[f32], confidence: f64) -> Option<DelongTest> {
    let placements = PairedPlacements::new(scores_a, scores_b, labels)?;
    Some(placements.test(placements.row_independent_variance(), confidence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_models_have_zero_delta_and_p_one() {
        let s = [0.1, 0.4, 0.35, 0.8, 0.5, 0.2];
        let y = [0.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        let t = delong_test(&s, &s, &y, 0.95).unwrap();
        assert_eq!((t.delta, t.std_error, t.z, t.p_value), (0.0, 0.0, 0.0, 1.0));
        assert!((t.auc_a - crate::auc(&s, &y, None).unwrap()).abs() < 1e-12);
        assert!(delong_test(&s, &s, &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.95).is_none());
    }
}
