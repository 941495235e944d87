//! Regression metrics: RMSE, MAE and R², optionally weighted.

use serde::{Deserialize, Serialize};

use crate::weight::Weight;

/// RMSE, MAE and R² of one regression task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    pub rmse: f64,
    pub mae: f64,
    /// `1 - SS_res / SS_tot`; `None` when the target is constant (SS_tot = 0).
    pub r2: Option<f64>,
}

/// Weighted RMSE, MAE and R²; `None` when the total weight is zero.
pub fn regression_metrics<W: Weight>(pred: &[f32], target: &[f32], weights: Option<&[W]>) -> Option<RegressionMetrics> {
    assert_eq!(pred.len(), target.len(), "regression_metrics: lengths differ");
    if let Some(w) = weights {
        assert_eq!(w.len(), pred.len(), "regression_metrics: weights differ in length");
    }
    let weight = |i: usize| weights.map_or(1.0, |w| w[i].value());
    let (mut total, mut target_sum) = (0.0, 0.0);
    for (i, &y) in target.iter().enumerate() {
        total += weight(i);
        target_sum += weight(i) * f64::from(y);
    }
    if total <= 0.0 {
        return None;
    }
    let target_mean = target_sum / total;
    let (mut sse, mut sae, mut sst) = (0.0, 0.0, 0.0);
    for (i, (&p, &y)) in pred.iter().zip(target).enumerate() {
        let (w, err) = (weight(i), f64::from(p) - f64::from(y));
        sse += w * err * err;
        sae += w * err.abs();
        sst += w * (f64::from(y) - target_mean).powi(2);
    }
    Some(RegressionMetrics { rmse: (sse / total).sqrt(), mae: sae / total, r2: (sst > 0.0).then(|| 1.0 - sse / sst) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let m = regression_metrics::<f32>(&[1.0, 2.0, 5.0], &[1.0, 3.0, 2.0], None).unwrap();
        assert!((m.rmse - (10.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((m.mae - 4.0 / 3.0).abs() < 1e-12);
        // Target mean 2: SS_tot = 1 + 1 + 0 = 2; SS_res = 10.
        assert!((m.r2.unwrap() - (1.0 - 10.0 / 2.0)).abs() < 1e-12);
        let constant = regression_metrics::<f32>(&[1.0, 2.0], &[3.0, 3.0], None).unwrap();
        assert_eq!(constant.r2, None, "R² is undefined for a constant target");
        assert_eq!(regression_metrics::<f32>(&[], &[], None), None);
    }
}
