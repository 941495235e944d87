//! Binary-task metrics: fast exact AUC, ROC points, GAUC, weighted log loss and calibration
//! (mean predicted vs observed rate, ECE over equal-width bins, reliability curve).
//!
//! Scores are ordered by `f32::total_cmp`; rows whose scores compare equal form one tie
//! group, and a tied positive-negative pair counts one half.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::groups::Groups;
use crate::sort::{radix_sort_u64, sortable_key};
use crate::weight::Weight;

/// Unweighted AUC: scores packed with the label bit, one radix sort, one sweep.
pub(crate) fn auc_unweighted(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let mut packed: Vec<u64> =
        scores.iter().zip(labels).map(|(&s, &y)| (u64::from(sortable_key(s)) << 32) | u64::from(y != 0.0)).collect();
    radix_sort_u64(&mut packed, 32);
    let (mut neg_below, mut area, mut pos_total) = (0u64, 0u128, 0u64);
    let mut i = 0;
    while i < packed.len() {
        let key = packed[i] >> 32;
        let (mut pos, mut neg) = (0u64, 0u64);
        while i < packed.len() && packed[i] >> 32 == key {
            let positive = packed[i] & 1;
            pos += positive;
            neg += 1 - positive;
            i += 1;
        }
        // Twice the area keeps the half-counted ties integral.
        area += u128::from(pos) * u128::from(2 * neg_below + neg);
        neg_below += neg;
        pos_total += pos;
    }
    (pos_total > 0 && neg_below > 0).then(|| area as f64 / (2.0 * pos_total as f64 * neg_below as f64))
}

/// Scores sorted once (ascending, ties adjacent), for metrics evaluated many times under
/// different row weights, e.g. AUC on bootstrap replicates without re-sorting.
#[derive(Debug, Clone)]
pub struct RankedScores {
    /// `(sortable_key << 32) | row`, ascending by key.
    sorted: Vec<u64>,
}

/// One point of a ROC curve: rows scoring `>= threshold` are predicted positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// The score threshold; `+inf` for the first point (nothing predicted positive).
    pub threshold: f64,
    pub fpr: f64,
    pub tpr: f64,
}

impl RankedScores {
    /// # Panics
    /// With more than `u32::MAX` rows.
    pub fn new(scores: &[f32]) -> Self {
        assert!(scores.len() <= u32::MAX as usize, "RankedScores: at most u32::MAX rows");
        let mut sorted: Vec<u64> =
            scores.iter().enumerate().map(|(row, &s)| (u64::from(sortable_key(s)) << 32) | row as u64).collect();
        radix_sort_u64(&mut sorted, 32);
        RankedScores { sorted }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Calls `visit(positive_weight, negative_weight, key)` per tie group, ascending.
    fn sweep<W: Weight>(&self, labels: &[f32], weights: Option<&[W]>, mut visit: impl FnMut(f64, f64, u32)) {
        assert_eq!(labels.len(), self.sorted.len(), "RankedScores: labels differ in length");
        if let Some(w) = weights {
            assert_eq!(w.len(), self.sorted.len(), "RankedScores: weights differ in length");
        }
        let mut i = 0;
        while i < self.sorted.len() {
            let key = self.sorted[i] >> 32;
            let (mut pos, mut neg) = (0.0, 0.0);
            while i < self.sorted.len() && self.sorted[i] >> 32 == key {
                let row = (self.sorted[i] & 0xFFFF_FFFF) as usize;
                let w = weights.map_or(1.0, |w| w[row].value());
                if labels[row] != 0.0 {
                    pos += w;
                } else {
                    neg += w;
                }
                i += 1;
            }
            visit(pos, neg, key as u32);
        }
    }

    /// Calls `visit(rows)` for each group of tied scores, ascending by score.
    pub fn for_each_tie_group(&self, mut visit: impl FnMut(&[usize])) {
        let mut rows = Vec::new();
        let mut i = 0;
        while i < self.sorted.len() {
            let key = self.sorted[i] >> 32;
            rows.clear();
            while i < self.sorted.len() && self.sorted[i] >> 32 == key {
                rows.push((self.sorted[i] & 0xFFFF_FFFF) as usize);
                i += 1;
            }
            visit(&rows);
        }
    }

    /// AUC under row `weights` (e.g. bootstrap multiplicities); `None` when a class has no weight.
    pub fn auc<W: Weight>(&self, labels: &[f32], weights: Option<&[W]>) -> Option<f64> {
        let (mut neg_below, mut area, mut pos_total) = (0.0f64, 0.0f64, 0.0f64);
        self.sweep(labels, weights, |pos, neg, _| {
            area += pos * (neg_below + 0.5 * neg);
            neg_below += neg;
            pos_total += pos;
        });
        (pos_total > 0.0 && neg_below > 0.0).then(|| area / (pos_total * neg_below))
    }

    /// ROC points at every distinct threshold (descending), from (0, 0) to (1, 1), then
    /// downsampled to at most `max_points` (>= 2) by keeping evenly spaced points, always
    /// including both ends. Kept points are exact. Empty when a class is absent.
    pub fn roc_curve(&self, labels: &[f32], max_points: usize) -> Vec<RocPoint> {
        let mut groups: Vec<(f64, f64, u32)> = Vec::new();
        self.sweep::<f32>(labels, None, |pos, neg, key| groups.push((pos, neg, key)));
        let pos_total: f64 = groups.iter().map(|g| g.0).sum();
        let neg_total: f64 = groups.iter().map(|g| g.1).sum();
        if pos_total == 0.0 || neg_total == 0.0 {
            return Vec::new();
        }
        let mut points = Vec::with_capacity(groups.len() + 1);
        points.push(RocPoint { threshold: f64::INFINITY, fpr: 0.0, tpr: 0.0 });
        let (mut tp, mut fp) = (0.0, 0.0);
        for &(pos, neg, key) in groups.iter().rev() {
            tp += pos;
            fp += neg;
            points.push(RocPoint { threshold: f64::from(key_to_f32(key)), fpr: fp / neg_total, tpr: tp / pos_total });
        }
        downsample(points, max_points.max(2))
    }
}

fn key_to_f32(key: u32) -> f32 {
    let bits = if key & 0x8000_0000 != 0 { key & 0x7FFF_FFFF } else { !key };
    f32::from_bits(bits)
}

fn downsample<T: Copy>(points: Vec<T>, max_points: usize) -> Vec<T> {
    if points.len() <= max_points {
        return points;
    }
    let last = points.len() - 1;
    (0..max_points).map(|i| points[(i * last + (max_points - 1) / 2) / (max_points - 1)]).collect()
}

/// ROC curve points of `scores` against `labels`; see [`RankedScores::roc_curve`].
pub fn roc_curve(scores: &[f32], labels: &[f32], max_points: usize) -> Vec<RocPoint> {
    RankedScores::new(scores).roc_curve(labels, max_points)
}

/// Group AUC: the AUC of each group (user), averaged with the group's row count as weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gauc {
    /// `None` when no group has both classes.
    pub gauc: Option<f64>,
    /// Groups with both classes, which enter the average.
    pub groups_evaluated: usize,
    /// Groups with a single class (AUC undefined), left out.
    pub groups_skipped: usize,
    /// Rows of the evaluated groups.
    pub rows_evaluated: usize,
}

/// The AUC of each group (`None` for single-class groups), in group order.
pub fn per_group_auc(scores: &[f32], labels: &[f32], groups: &Groups) -> Vec<Option<f64>> {
    assert_eq!(scores.len(), labels.len(), "per_group_auc: scores and labels differ in length");
    assert_eq!(groups.rows_total(), scores.len(), "per_group_auc: groups cover a different row count");
    (0..groups.len())
        .into_par_iter()
        .map_init(Vec::new, |packed: &mut Vec<u64>, g| {
            packed.clear();
            packed.extend(groups.rows(g).iter().map(|&r| {
                let r = r as usize;
                (u64::from(sortable_key(scores[r])) << 32) | u64::from(labels[r] != 0.0)
            }));
            packed.sort_unstable();
            let (mut neg_below, mut area, mut pos_total) = (0u64, 0u64, 0u64);
            let mut i = 0;
            while i < packed.len() {
                let key = packed[i] >> 32;
                let (mut pos, mut neg) = (0u64, 0u64);
                while i < packed.len() && packed[i] >> 32 == key {
                    pos += packed[i] & 1;
                    neg += 1 - (packed[i] & 1);
                    i += 1;
                }
                area += pos * (2 * neg_below + neg);
                neg_below += neg;
                pos_total += pos;
            }
            (pos_total > 0 && neg_below > 0).then(|| area as f64 / (2.0 * pos_total as f64 * neg_below as f64))
        })
        .collect()
}

/// GAUC from per-group AUCs: `sum(n_g * auc_g) / sum(n_g)` over groups with an AUC, where
/// `n_g` is the group's row count times its multiplicity in `group_weights` (1 when `None`).
pub fn gauc_from_parts<W: Weight>(per_group: &[Option<f64>], groups: &Groups, group_weights: Option<&[W]>) -> Gauc {
    let (mut num, mut den) = (0.0, 0.0);
    let (mut evaluated, mut skipped, mut rows) = (0, 0, 0);
    for (g, auc) in per_group.iter().enumerate() {
        match auc {
            Some(a) => {
                let w = groups.size(g) as f64 * group_weights.map_or(1.0, |w| w[g].value());
                num += w * a;
                den += w;
                evaluated += 1;
                rows += groups.size(g);
            }
            None => skipped += 1,
        }
    }
    Gauc {
        gauc: (den > 0.0).then(|| num / den),
        groups_evaluated: evaluated,
        groups_skipped: skipped,
        rows_evaluated: rows,
    }
}

/// GAUC of `scores` grouped by `groups` (rows weighted equally, so each group weighs its rows).
pub fn gauc(scores: &[f32], labels: &[f32], groups: &Groups) -> Gauc {
    gauc_from_parts::<f32>(&per_group_auc(scores, labels, groups), groups, None)
}

/// GAUC grouping by raw user ids.
pub fn gauc_by_user(scores: &[f32], labels: &[f32], users: &[u64]) -> Gauc {
    assert_eq!(users.len(), scores.len(), "gauc_by_user: users and scores differ in length");
    gauc(scores, labels, &Groups::from_ids(users))
}

/// Mean binary cross-entropy of probabilities ([`binary_cross_entropy`] per row), optionally
/// weighted. `None` when the total weight is zero.
pub fn logloss<W: Weight>(probs: &[f32], labels: &[f32], weights: Option<&[W]>) -> Option<f64> {
    assert_eq!(probs.len(), labels.len(), "logloss: lengths differ");
    let (mut sum, mut total) = (0.0, 0.0);
    for (i, (&p, &y)) in probs.iter().zip(labels).enumerate() {
        let w = weights.map_or(1.0, |w| w[i].value());
        sum += w * binary_cross_entropy(p, y);
        total += w;
    }
    (total > 0.0).then(|| sum / total)
}

/// Cross-entropy of one probability, clamped to [1e-7, 1 - 1e-7] so that a confident miss
/// costs about 16 nats, not infinity.
#[inline]
pub fn binary_cross_entropy(p: f32, y: f32) -> f64 {
    let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
    if y != 0.0 {
        -p.ln()
    } else {
        -(1.0 - p).ln()
    }
}

/// One bin of a reliability curve: predictions in `[lower, upper)` (the last bin includes 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    /// Total weight (row count when unweighted) in the bin.
    pub count: f64,
    /// `None` for an empty bin.
    pub mean_predicted: Option<f64>,
    /// `None` for an empty bin.
    pub observed_rate: Option<f64>,
}

/// Calibration of probabilities: overall mean predicted vs observed positive rate, expected
/// calibration error `ECE = sum_b (n_b / n) |mean_pred_b - observed_b|`, and the bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub mean_predicted: f64,
    pub observed_rate: f64,
    pub ece: f64,
    pub bins: Vec<ReliabilityBin>,
}

/// The equal-width bin of probability `p` among `bins`: `floor(p * bins)`, with `p` clamped
/// to [0, 1] and `p = 1` in the last bin. NaN falls in bin 0.
#[inline]
pub fn calibration_bin(p: f32, bins: usize) -> usize {
    let p = f64::from(p);
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    ((p * bins as f64) as usize).min(bins - 1)
}

/// Calibration over `bins` equal-width bins of [0, 1]; `None` without weight or with 0 bins.
pub fn calibration<W: Weight>(
    probs: &[f32],
    labels: &[f32],
    weights: Option<&[W]>,
    bins: usize,
) -> Option<Calibration> {
    assert_eq!(probs.len(), labels.len(), "calibration: lengths differ");
    if bins == 0 {
        return None;
    }
    // Per bin: total weight, weighted sum of predictions, weighted positives.
    let mut sums = vec![(0.0f64, 0.0f64, 0.0f64); bins];
    for (i, (&p, &y)) in probs.iter().zip(labels).enumerate() {
        let w = weights.map_or(1.0, |w| w[i].value());
        let s = &mut sums[calibration_bin(p, bins)];
        s.0 += w;
        s.1 += w * f64::from(p);
        s.2 += w * f64::from(u8::from(y != 0.0));
    }
    calibration_from_bin_sums(&sums)
}

/// Calibration from per-bin `(weight, weighted prediction sum, weighted positives)`.
pub fn calibration_from_bin_sums(sums: &[(f64, f64, f64)]) -> Option<Calibration> {
    let total: f64 = sums.iter().map(|s| s.0).sum();
    if total <= 0.0 || sums.is_empty() {
        return None;
    }
    let k = sums.len() as f64;
    let mut ece = 0.0;
    let bins = sums
        .iter()
        .enumerate()
        .map(|(b, &(n, pred, pos))| {
            let (mean_predicted, observed_rate) = if n > 0.0 { (Some(pred / n), Some(pos / n)) } else { (None, None) };
            if n > 0.0 {
                ece += (n / total) * (pred / n - pos / n).abs();
            }
            ReliabilityBin { lower: b as f64 / k, upper: (b + 1) as f64 / k, count: n, mean_predicted, observed_rate }
        })
        .collect();
    Some(Calibration {
        mean_predicted: sums.iter().map(|s| s.1).sum::<f64>() / total,
        observed_rate: sums.iter().map(|s| s.2).sum::<f64>() / total,
        ece,
        bins,
    })
}

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
        None => auc_unweighted(scores, labels),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UNWEIGHTED;

    #[test]
    fn ranked_auc_matches_plain_auc_and_weights_duplicate_rows() {
        let s = [0.3, 0.1, 0.3, 0.8, 0.5, 0.5, 0.2];
        let y = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let r = RankedScores::new(&s);
        assert_eq!(r.auc::<f32>(&y, None), auc(&s, &y, None));
        // Weight 2 on row 1 equals duplicating it.
        let w = [1u32, 2, 1, 1, 1, 1, 1];
        let (mut s2, mut y2) = (s.to_vec(), y.to_vec());
        s2.push(0.1);
        y2.push(0.0);
        let expected = auc(&s2, &y2, None).unwrap();
        assert!((r.auc(&y, Some(&w[..])).unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn roc_curve_has_ends_and_downsamples_exactly() {
        let s: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let y: Vec<f32> = (0..100).map(|i| f32::from(u8::from(i % 3 == 0))).collect();
        let full = roc_curve(&s, &y, 1000);
        assert_eq!(full.len(), 101);
        assert_eq!((full[0].fpr, full[0].tpr), (0.0, 0.0));
        assert_eq!((full[100].fpr, full[100].tpr), (1.0, 1.0));
        let small = roc_curve(&s, &y, 10);
        assert_eq!(small.len(), 10);
        assert_eq!(small[0], full[0]);
        assert_eq!(small[9], full[100]);
        assert!(small.iter().all(|p| full.contains(p)));
    }

    #[test]
    fn gauc_skips_single_class_groups() {
        let groups = Groups::from_ids(&[1, 1, 1, 2, 2, 3, 3, 3]);
        let s = [0.9, 0.1, 0.5, 0.4, 0.6, 0.2, 0.3, 0.1];
        let y = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let g = gauc(&s, &y, &groups);
        // User 1: AUC 1 over 3 rows; user 2: AUC 0 over 2 rows; user 3 skipped.
        assert_eq!((g.groups_evaluated, g.groups_skipped, g.rows_evaluated), (2, 1, 5));
        assert!((g.gauc.unwrap() - 3.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn calibration_bins_edges() {
        assert_eq!(calibration_bin(0.0, 10), 0);
        assert_eq!(calibration_bin(1.0, 10), 9);
        assert_eq!(calibration_bin(0.55, 10), 5);
        let c = calibration::<f32>(&[0.05, 0.15, 0.95], &[0.0, 1.0, 1.0], None, 10).unwrap();
        assert_eq!(c.bins[1].observed_rate, Some(1.0));
        assert_eq!(c.bins[5].count, 0.0);
        assert_eq!(c.bins[5].mean_predicted, None);
        let expected_ece = (0.05f32 as f64 + (1.0 - 0.15f32 as f64) + (1.0 - 0.95f32 as f64)) / 3.0;
        assert!((c.ece - expected_ece).abs() < 1e-12);
    }

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
    fn logloss_by_hand() {
        let l = logloss(&[0.9, 0.2], &[1.0, 0.0], UNWEIGHTED).unwrap();
        assert!((l - (-(0.9f64.ln()) - 0.8f64.ln()) / 2.0).abs() < 1e-6);
    }
}
