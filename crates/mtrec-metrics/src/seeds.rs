//! Summaries over repeated runs (seeds): the mean and a 95% confidence interval from
//! Student's t, as every multi-seed figure of mtrec is reported, and the paired t-test of two
//! configurations run with the same seeds.

use serde::{Deserialize, Serialize};

use crate::student::student_t_two_sided_p;

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

/// Paired t-test of `b - a` over runs paired by seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedTTest {
    /// Mean of the per-seed differences `b - a`.
    pub mean_difference: f64,
    /// Their standard deviation / √n.
    pub std_error: f64,
    /// `mean_difference / std_error`; 0 when both are 0, ±inf when only the error is 0.
    pub t: f64,
    /// `n - 1`.
    pub df: usize,
    /// Two-sided p-value from Student's t with `df` degrees of freedom.
    pub p_value: f64,
}

/// The paired t-test of `b[i] - a[i]`; `None` with fewer than two pairs, unequal lengths or a
/// non-finite value.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Option<PairedTTest> {
    let n = a.len();
    if n < 2 || b.len() != n || a.iter().chain(b).any(|x| !x.is_finite()) {
        return None;
    }
    let differences: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let mean = differences.iter().sum::<f64>() / n as f64;
    let var = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std_error = (var / n as f64).sqrt();
    let t = if std_error > 0.0 {
        mean / std_error
    } else if mean == 0.0 {
        0.0
    } else {
        mean.signum() * f64::INFINITY
    };
    Some(PairedTTest {
        mean_difference: mean,
        std_error,
        t,
        df: n - 1,
        p_value: student_t_two_sided_p(t, (n - 1) as f64),
    })
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

    #[test]
    fn paired_t_test_by_hand() {
        // Differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, SE 0.01/√3, t = 2√3 on 2 df, where
        // p = 1 - t / sqrt(2 + t²) = 1 - 2√3 / √14.
        let t = paired_t_test(&[0.5, 0.6, 0.7], &[0.51, 0.62, 0.73]).unwrap();
        assert!((t.mean_difference - 0.02).abs() < 1e-12);
        assert!((t.t - 2.0 * 3f64.sqrt()).abs() < 1e-9, "{t:?}");
        assert_eq!(t.df, 2);
        assert!((t.p_value - (1.0 - 2.0 * 3f64.sqrt() / 14f64.sqrt())).abs() < 1e-9, "{t:?}");
        let same = paired_t_test(&[0.5, 0.6], &[0.5, 0.6]).unwrap();
        assert_eq!((same.t, same.p_value), (0.0, 1.0));
        let shifted = paired_t_test(&[0.5, 0.6], &[0.75, 0.85]).unwrap();
        assert_eq!((shifted.t, shifted.p_value), (f64::INFINITY, 0.0));
        assert!(paired_t_test(&[0.5], &[0.6]).is_none());
        assert!(paired_t_test(&[0.5, 0.6], &[0.6]).is_none());
        assert!(paired_t_test(&[0.5, f64::NAN], &[0.6, 0.7]).is_none());
    }
}
