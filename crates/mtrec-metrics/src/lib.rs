//! # mtrec-metrics
//!
//! Exact metrics over plain slices: no bucketing, no batch averaging. Ties in scores are
//! averaged (a tied positive-negative pair counts one half), as in the Mann-Whitney statistic.

/// Area under the ROC curve of `scores` against binary `labels` (nonzero = positive), with
/// optional per-row `weights`. `None` when one class is absent (AUC is undefined).
pub fn auc(scores: &[f32], labels: &[f32], weights: Option<&[f32]>) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "auc: scores and labels differ in length");
    if let Some(w) = weights {
        assert_eq!(w.len(), scores.len(), "auc: weights and scores differ in length");
    }
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| scores[a as usize].total_cmp(&scores[b as usize]));
    let weight = |i: usize| weights.map_or(1.0, |w| f64::from(w[i]));
    // Sweep groups of equal scores in ascending order: a positive beats every negative below
    // its group and ties half of the negatives in it.
    let (mut neg_below, mut area, mut pos_total) = (0.0f64, 0.0f64, 0.0f64);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i] as usize];
        let (mut pos, mut neg) = (0.0, 0.0);
        while i < order.len() && scores[order[i] as usize].total_cmp(&s).is_eq() {
            let r = order[i] as usize;
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
