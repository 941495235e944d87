//! Multiclass metrics: accuracy, macro-F1 and log loss from row-major class probabilities.

use serde::{Deserialize, Serialize};

use crate::weight::Weight;

/// The predicted class of one row of probabilities: the highest probability, ties going to
/// the highest class index. Accuracy and every served top class use this rule.
#[inline]
pub fn predicted_class(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// Accuracy, macro-F1 and log loss of one multiclass task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MulticlassMetrics {
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 over the classes that occur as a label or a prediction
    /// (scikit-learn's default label set); a class with no true or predicted positive has F1 0.
    pub macro_f1: f64,
    /// Mean cross-entropy with the true class probability clamped to [1e-7, 1].
    pub logloss: f64,
}

/// Weighted multiclass metrics of `probs` (`n x classes`) against class indices `labels`.
/// `None` when the total weight is zero.
///
/// # Panics
/// On shape mismatches or a label that is not a class index below `classes`.
pub fn multiclass_metrics<W: Weight>(
    probs: &[f32],
    classes: usize,
    labels: &[f32],
    weights: Option<&[W]>,
) -> Option<MulticlassMetrics> {
    assert!(classes > 0, "multiclass_metrics: no classes");
    assert_eq!(probs.len(), labels.len() * classes, "multiclass_metrics: shapes differ");
    // Per class: true positives, label count, prediction count (weighted).
    let mut tp = vec![0.0f64; classes];
    let mut actual = vec![0.0f64; classes];
    let mut predicted = vec![0.0f64; classes];
    let (mut total, mut correct, mut loss) = (0.0, 0.0, 0.0);
    for (i, (row, &y)) in probs.chunks_exact(classes).zip(labels).enumerate() {
        assert!(y >= 0.0 && (y as usize) < classes && y.fract() == 0.0, "multiclass_metrics: bad label {y}");
        let (y, w) = (y as usize, weights.map_or(1.0, |w| w[i].value()));
        let top = predicted_class(row);
        total += w;
        actual[y] += w;
        predicted[top] += w;
        if top == y {
            correct += w;
            tp[y] += w;
        }
        loss -= w * f64::from(row[y]).clamp(1e-7, 1.0).ln();
    }
    if total <= 0.0 {
        return None;
    }
    let (mut f1_sum, mut present) = (0.0, 0usize);
    for c in 0..classes {
        if actual[c] > 0.0 || predicted[c] > 0.0 {
            present += 1;
            f1_sum += 2.0 * tp[c] / (actual[c] + predicted[c]);
        }
    }
    Some(MulticlassMetrics { accuracy: correct / total, macro_f1: f1_sum / present as f64, logloss: loss / total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_by_hand() {
        // Predictions: 0, 1, 1, 2; labels: 0, 1, 0, 0.
        let p = [0.8, 0.1, 0.1, 0.1, 0.8, 0.1, 0.2, 0.7, 0.1, 0.1, 0.2, 0.7];
        let m = multiclass_metrics::<f32>(&p, 3, &[0.0, 1.0, 0.0, 0.0], None).unwrap();
        // F1: class 0 = 2*1/(3+1) = 0.5; class 1 = 2*1/(1+2) = 2/3; class 2 = 0.
        assert!((m.macro_f1 - (0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(m.accuracy, 0.5);
        assert_eq!(predicted_class(&[0.5, 0.5]), 1);
    }

    #[test]
    fn accuracy_and_logloss_by_hand() {
        let m = multiclass_metrics::<f32>(&[0.7, 0.2, 0.1, 0.1, 0.3, 0.6], 3, &[0.0, 1.0], None).unwrap();
        assert_eq!(m.accuracy, 0.5);
        assert!((m.logloss - (-(0.7f64.ln()) - 0.3f64.ln()) / 2.0).abs() < 1e-6);
    }
}
