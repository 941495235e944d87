//! Summaries over repeated runs (seeds): the mean and a 95% confidence interval from
//! Student's t, as every multi-seed figure of mtrec is reported.

use serde::{Deserialize, Serialize};

/// Mean of a metric over runs, with the half-width of its 95% t interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    pub mean: f64,
    /// `t(0.975, n - 1) · s / √n`; `None` with fewer than two runs.
    pub ci95: Option<f64>,
    pub runs: usize,
}

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom (`df` ≥ 1; the normal
/// quantile beyond 30, where the table's error is under 4%).
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    T.get(df.wrapping_sub(1)).copied().unwrap_or(1.96)
}

/// Mean and 95% CI of `values`; `None` when empty.
pub fn mean_ci95(values: &[f64]) -> Option<MeanCi> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let ci95 = (n >= 2).then(|| {
        let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t975(n - 1) * (var / n as f64).sqrt()
    });
    Some(MeanCi { mean, ci95, runs: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_seeds_use_t_with_four_degrees_of_freedom() {
        // mean 0.3, sample sd sqrt(0.025) = 0.158..., t(0.975, 4) = 2.776.
        let s = mean_ci95(&[0.1, 0.2, 0.3, 0.4, 0.5]).unwrap();
        assert!((s.mean - 0.3).abs() < 1e-12);
        let expected = 2.776 * (0.025f64 / 5.0).sqrt();
        assert!((s.ci95.unwrap() - expected).abs() < 1e-12, "{s:?}");
        assert_eq!(mean_ci95(&[0.7]).unwrap().ci95, None);
        assert_eq!(mean_ci95(&[]), None);
    }
}
