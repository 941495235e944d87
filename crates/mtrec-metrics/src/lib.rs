//! # mtrec-metrics
//!
//! Exact metrics over plain slices: no bucketing, no batch averaging. Ties in scores are
//! averaged (a tied positive-negative pair counts one half), as in the Mann-Whitney statistic.
//! Scores are ordered by `f32::total_cmp`.
//!
//! Modules:
//! - [`binary`]: fast AUC ([`RankedScores`] for repeated weighted evaluation), ROC points,
//!   GAUC, weighted log loss, calibration (ECE, reliability curve).
//! - [`regression`]: RMSE, MAE, R².
//! - [`classification`]: multiclass accuracy, macro-F1, log loss.
//! - [`ranking`]: per-user NDCG@K, Recall@K, MRR.
//! - [`delong`]: DeLong's test for two correlated AUCs.
//! - [`bootstrap`]: paired cluster bootstrap of metric deltas.
//! - [`groups`]: rows grouped by user or item id.
//! - [`normal`]: standard normal CDF and quantile.
//! - [`sort`]: sortable f32 keys and the radix sort behind the AUC.
//!
//! Functions that take `weights: Option<&[W]>` accept any [`Weight`] (`f32`, `f64`, `u32`
//! bootstrap multiplicities); pass [`UNWEIGHTED`] for none. Length mismatches are caller
//! bugs and panic; undefined metrics (one class, no rows) are `None`.

pub mod binary;
pub mod bootstrap;
pub mod classification;
pub mod delong;
pub mod groups;
pub mod normal;
pub mod ranking;
pub mod regression;
pub mod seeds;
pub mod sort;

pub use binary::{
    binary_cross_entropy, calibration, calibration_bin, calibration_from_bin_sums, gauc, gauc_by_user, gauc_from_parts,
    per_group_auc, roc_curve, weighted_logloss, Calibration, Gauc, RankedScores, ReliabilityBin, RocPoint,
};
pub use bootstrap::{
    paired_cluster_bootstrap, paired_cluster_bootstrap_many, BootstrapError, BootstrapOptions, BootstrapResult,
    MetricPair, Resample,
};
pub use classification::{macro_f1, multiclass_metrics, predicted_class, MulticlassMetrics};
pub use delong::{delong_test, DelongTest};
pub use groups::Groups;
pub use ranking::{per_user_ranking, ranking, ranking_from_parts, RankingMetrics, UserRanking};
pub use regression::{mae, r2, regression_metrics, RegressionMetrics};
pub use seeds::{mean_ci95, MeanCi};

/// A row weight: anything that converts to a non-negative `f64`.
pub trait Weight: Copy + Send + Sync {
    fn value(self) -> f64;
}

impl Weight for f32 {
    fn value(self) -> f64 {
        f64::from(self)
    }
}

impl Weight for f64 {
    fn value(self) -> f64 {
        self
    }
}

impl Weight for u32 {
    fn value(self) -> f64 {
        f64::from(self)
    }
}

/// `None` weights with a concrete type, for calls without weights.
pub const UNWEIGHTED: Option<&[f32]> = None;

/// Area under the ROC curve of `scores` against binary `labels` (nonzero = positive), with
/// optional per-row `weights`. `None` when one class is absent (AUC is undefined).
///
/// One radix sort of scores packed with their label (or row index when weighted) into
/// `u64`, then a sweep over tie groups; exact, including ties.
pub fn auc(scores: &[f32], labels: &[f32], weights: Option<&[f32]>) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "auc: scores and labels differ in length");
    if let Some(w) = weights {
        assert_eq!(w.len(), scores.len(), "auc: weights and scores differ in length");
    }
    if scores.len() > u32::MAX as usize {
        return auc_by_index_sort(scores, labels, weights);
    }
    match weights {
        None => binary::auc_unweighted(scores, labels),
        Some(w) => RankedScores::new(scores).auc(labels, Some(w)),
    }
}

/// The comparison-sort AUC for inputs too long for the packed `u32` row indices.
fn auc_by_index_sort(scores: &[f32], labels: &[f32], weights: Option<&[f32]>) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let weight = |i: usize| weights.map_or(1.0, |w| f64::from(w[i]));
    // Sweep groups of equal scores in ascending order: a positive beats every negative below
    // its group and ties half of the negatives in it.
    let (mut neg_below, mut area, mut pos_total) = (0.0f64, 0.0f64, 0.0f64);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        let (mut pos, mut neg) = (0.0, 0.0);
        while i < order.len() && scores[order[i]].total_cmp(&s).is_eq() {
            let r = order[i];
            if labels[r] != 0.0 {
                pos += weight(r)
            } else {
                neg += weight(r)
            }
            i += 1;
        }
        area += pos * (neg_below + 0.5 * neg);
        neg_below += neg;
        pos_total += pos;
    }
    (pos_total > 0.0 && neg_below > 0.0).then(|| area / (pos_total * neg_below))
}

/// Mean binary cross-entropy of probabilities, clamped to [1e-7, 1 - 1e-7].
pub fn logloss(probs: &[f32], labels: &[f32]) -> Option<f64> {
    assert_eq!(probs.len(), labels.len(), "logloss: lengths differ");
    if probs.is_empty() {
        return None;
    }
    let sum: f64 = probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            if y != 0.0 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    Some(sum / probs.len() as f64)
}

/// Root mean squared error.
pub fn rmse(pred: &[f32], target: &[f32]) -> Option<f64> {
    assert_eq!(pred.len(), target.len(), "rmse: lengths differ");
    if pred.is_empty() {
        return None;
    }
    let sse: f64 = pred.iter().zip(target).map(|(&p, &y)| (f64::from(p) - f64::from(y)).powi(2)).sum();
    Some((sse / pred.len() as f64).sqrt())
}

/// Multiclass accuracy and log loss from row-major class probabilities (`n x classes`).
pub fn multiclass(probs: &[f32], classes: usize, labels: &[f32]) -> Option<(f64, f64)> {
    assert_eq!(probs.len(), labels.len() * classes, "multiclass: shapes differ");
    if labels.is_empty() {
        return None;
    }
    let (mut correct, mut loss) = (0usize, 0.0f64);
    for (row, &y) in probs.chunks_exact(classes).zip(labels) {
        let y = y as usize;
        let top = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
        correct += usize::from(top == y);
        loss -= f64::from(row[y]).clamp(1e-7, 1.0).ln();
    }
    Some((correct as f64 / labels.len() as f64, loss / labels.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden values worked out by hand from the pair definition of AUC.
    #[test]
    fn auc_counts_pairs_and_halves_ties() {
        // Positives 0.8, 0.4; negatives 0.6, 0.2: pairs won 2 (0.8>0.6, 0.8>0.2) + 1 (0.4>0.2) of 4.
        assert_eq!(auc(&[0.8, 0.6, 0.4, 0.2], &[1.0, 0.0, 1.0, 0.0], None), Some(0.75));
        // A positive tied with a negative counts half: pairs (0.5 vs 0.5) = 0.5, (0.5 vs 0.1) = 1.
        assert_eq!(auc(&[0.5, 0.5, 0.1], &[1.0, 0.0, 0.0], None), Some(0.75));
        // All scores equal: 0.5.
        assert_eq!(auc(&[0.3; 4], &[1.0, 0.0, 1.0, 0.0], None), Some(0.5));
        assert_eq!(auc(&[0.1, 0.2], &[1.0, 1.0], None), None);
    }

    #[test]
    fn radix_path_matches_index_sort_on_large_tied_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // Coarse scores so most rows tie; long enough to take the radix path.
        let s: Vec<f32> = (0..50_000).map(|_| f32::from(rng.gen_range(0u8..200)) / 200.0).collect();
        let y: Vec<f32> = s.iter().map(|&x| f32::from(u8::from(rng.gen::<f32>() < x))).collect();
        let w: Vec<f32> = (0..s.len()).map(|_| rng.gen_range(0.5..2.0)).collect();
        let fast = auc(&s, &y, None).unwrap();
        assert!((fast - auc_by_index_sort(&s, &y, None).unwrap()).abs() < 1e-12);
        let fast_w = auc(&s, &y, Some(&w)).unwrap();
        assert!((fast_w - auc_by_index_sort(&s, &y, Some(&w)).unwrap()).abs() < 1e-9);
    }

    #[test]
    fn weighted_auc_weighs_pairs() {
        // Positive 0.9 (w 2), positive 0.1 (w 1), negative 0.5 (w 1): won weight 2 of 3.
        let a = auc(&[0.9, 0.1, 0.5], &[1.0, 1.0, 0.0], Some(&[2.0, 1.0, 1.0])).unwrap();
        assert!((a - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn losses() {
        let l = logloss(&[0.9, 0.2], &[1.0, 0.0]).unwrap();
        assert!((l - (-(0.9f64.ln()) - 0.8f64.ln()) / 2.0).abs() < 1e-6);
        assert!((rmse(&[1.0, 3.0], &[2.0, 5.0]).unwrap() - (2.5f64).sqrt()).abs() < 1e-12);
        let (acc, ll) = multiclass(&[0.7, 0.2, 0.1, 0.1, 0.3, 0.6], 3, &[0.0, 1.0]).unwrap();
        assert_eq!(acc, 0.5);
        assert!((ll - (-(0.7f64.ln()) - 0.3f64.ln()) / 2.0).abs() < 1e-6);
    }
}
