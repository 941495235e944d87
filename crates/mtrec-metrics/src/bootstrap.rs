//! Cluster bootstrap for metric deltas between two models: paired, for two models scored on the
//! same rows, and two-sample, for two models scored on different rows (online arms).
//!
//! Each replicate draws as many clusters (users) as there are, uniformly with replacement,
//! and evaluates both models on the same resampled rows, so the deltas keep the pairing and
//! the within-user correlation. Replicate `r` draws from ChaCha8 seeded with `seed` on stream
//! `r`, so results do not depend on thread count or scheduling, and replicates run in
//! parallel on rayon.
//!
//! A replicate is exposed as a [`Resample`]: cluster multiplicities, per-row multiplicities
//! (for metrics that take row weights, such as AUC over a pre-sorted score order in O(n)),
//! or the explicit list of resampled rows. The latter two are built only when asked for, into
//! per-thread buffers reused across replicates.
//!
//! Reported per metric: the point delta (B - A on the original rows), the percentile
//! interval of the replicate deltas (linear interpolation between order statistics, as
//! numpy's default quantile), and the two-sided bootstrap p-value
//! `2 * min(P(d* <= 0), P(d* >= 0))` over valid replicates, clipped to `[1 / B_valid, 1]`
//! (never exactly 0, since B replicates cannot resolve smaller p-values). Replicates where a
//! metric is undefined for either model (e.g. a single class drawn) are dropped for that
//! metric and counted. The standard deviation of the valid replicate deltas is the bootstrap's
//! standard error of the delta.

use std::cell::{Cell, Ref, RefCell};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::groups::Groups;

/// How to bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapOptions {
    pub replicates: usize,
    pub seed: u64,
    /// Coverage of the percentile interval, e.g. 0.95.
    pub confidence: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions { replicates: 1000, seed: 0, confidence: 0.95 }
    }
}

/// Inputs the bootstrap cannot work with.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BootstrapError {
    #[error("bootstrap needs at least one cluster")]
    NoClusters,
    #[error("bootstrap needs at least one replicate")]
    NoReplicates,
    #[error("bootstrap confidence must lie in (0, 1), got {0}")]
    BadConfidence(f64),
}

/// One metric's bootstrap summary for `B - A`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapResult {
    /// Model A's metric on the original rows.
    pub a: Option<f64>,
    /// Model B's metric on the original rows.
    pub b: Option<f64>,
    /// `b - a`; `None` when either is undefined.
    pub delta: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub p_value: Option<f64>,
    /// Standard deviation of the valid replicate deltas: the bootstrap's standard error of the
    /// delta; `None` with fewer than two valid replicates.
    pub std_error: Option<f64>,
    pub replicates: usize,
    /// Replicates where the metric was defined for both models.
    pub valid_replicates: usize,
}

/// One resample of the clusters.
#[derive(Debug)]
pub struct Resample<'a> {
    clusters: &'a Groups,
    counts: &'a [u32],
    row_weights: &'a RefCell<Vec<u32>>,
    row_weights_ready: Cell<bool>,
    rows: &'a RefCell<Vec<usize>>,
    rows_ready: Cell<bool>,
}

impl Resample<'_> {
    /// How often each cluster was drawn, in cluster order.
    pub fn cluster_counts(&self) -> &[u32] {
        self.counts
    }

    /// How often each row was drawn (its cluster's count), in row order.
    pub fn row_weights(&self) -> Ref<'_, [u32]> {
        if !self.row_weights_ready.get() {
            let mut weights = self.row_weights.borrow_mut();
            weights.clear();
            weights.resize(self.clusters.rows_total(), 0);
            for (g, &count) in self.counts.iter().enumerate() {
                for &r in self.clusters.rows(g) {
                    weights[r as usize] = count;
                }
            }
            self.row_weights_ready.set(true);
        }
        Ref::map(self.row_weights.borrow(), |w| w.as_slice())
    }

    /// The resampled rows: each drawn cluster's rows (ascending) repeated per draw, clusters
    /// in cluster order.
    pub fn rows(&self) -> Ref<'_, [usize]> {
        if !self.rows_ready.get() {
            let mut rows = self.rows.borrow_mut();
            rows.clear();
            for (g, &count) in self.counts.iter().enumerate() {
                for _ in 0..count {
                    rows.extend(self.clusters.rows(g).iter().map(|&r| r as usize));
                }
            }
            self.rows_ready.set(true);
        }
        Ref::map(self.rows.borrow(), |r| r.as_slice())
    }
}

/// Per-thread buffers reused across replicates.
#[derive(Debug, Default)]
struct Scratch {
    counts: Vec<u32>,
    row_weights: RefCell<Vec<u32>>,
    rows: RefCell<Vec<usize>>,
}

impl Scratch {
    /// Draws `k` clusters uniformly with replacement into `counts`.
    fn draw(&mut self, rng: &mut ChaCha8Rng, k: usize) {
        self.counts.clear();
        self.counts.resize(k, 0);
        for _ in 0..k {
            self.counts[rng.gen_range(0..k)] += 1;
        }
    }

    fn resample<'a>(&'a self, clusters: &'a Groups) -> Resample<'a> {
        Resample {
            clusters,
            counts: &self.counts,
            row_weights: &self.row_weights,
            row_weights_ready: Cell::new(false),
            rows: &self.rows,
            rows_ready: Cell::new(false),
        }
    }
}

/// A metric value for model A and model B.
pub type MetricPair = (Option<f64>, Option<f64>);

/// Bootstraps `metrics` metric deltas at once: `evaluate` fills one `(a, b)` pair per metric
/// for a resample (the original data first, then each replicate), so every metric sees the
/// same replicates.
pub fn paired_cluster_bootstrap_many<F>(
    clusters: &Groups,
    options: &BootstrapOptions,
    metrics: usize,
    evaluate: F,
) -> Result<Vec<BootstrapResult>, BootstrapError>
where
    F: Fn(&Resample<'_>, &mut [MetricPair]) + Sync,
{
    if clusters.is_empty() {
        return Err(BootstrapError::NoClusters);
    }
    check(options)?;
    let k = clusters.len();
    let original = Scratch { counts: vec![1; k], ..Scratch::default() };
    let mut points = vec![(None, None); metrics];
    evaluate(&original.resample(clusters), &mut points);

    let deltas: Vec<Vec<Option<f64>>> = (0..options.replicates)
        .into_par_iter()
        .map_init(Scratch::default, |scratch, replicate| {
            let mut rng = replicate_rng(options, replicate);
            scratch.draw(&mut rng, k);
            let mut values = vec![(None, None); metrics];
            evaluate(&scratch.resample(clusters), &mut values);
            replicate_deltas(values)
        })
        .collect();
    Ok(summarize(&points, &deltas, options))
}

/// The two-sample form, for two models scored on different rows (the arms of an online
/// experiment): each replicate resamples A's clusters and, independently, B's, and `evaluate`
/// fills one `(a, b)` pair per metric from A's resample and B's. Replicate `r` draws A's
/// clusters and then B's from ChaCha8 seeded with `seed` on stream `r`, as the paired form does.
pub fn two_sample_cluster_bootstrap_many<F>(
    clusters_a: &Groups,
    clusters_b: &Groups,
    options: &BootstrapOptions,
    metrics: usize,
    evaluate: F,
) -> Result<Vec<BootstrapResult>, BootstrapError>
where
    F: Fn(&Resample<'_>, &Resample<'_>, &mut [MetricPair]) + Sync,
{
    if clusters_a.is_empty() || clusters_b.is_empty() {
        return Err(BootstrapError::NoClusters);
    }
    check(options)?;
    let (ka, kb) = (clusters_a.len(), clusters_b.len());
    let original_a = Scratch { counts: vec![1; ka], ..Scratch::default() };
    let original_b = Scratch { counts: vec![1; kb], ..Scratch::default() };
    let mut points = vec![(None, None); metrics];
    evaluate(&original_a.resample(clusters_a), &original_b.resample(clusters_b), &mut points);

    let deltas: Vec<Vec<Option<f64>>> = (0..options.replicates)
        .into_par_iter()
        .map_init(
            || (Scratch::default(), Scratch::default()),
            |(scratch_a, scratch_b), replicate| {
                let mut rng = replicate_rng(options, replicate);
                scratch_a.draw(&mut rng, ka);
                scratch_b.draw(&mut rng, kb);
                let mut values = vec![(None, None); metrics];
                evaluate(&scratch_a.resample(clusters_a), &scratch_b.resample(clusters_b), &mut values);
                replicate_deltas(values)
            },
        )
        .collect();
    Ok(summarize(&points, &deltas, options))
}

fn check(options: &BootstrapOptions) -> Result<(), BootstrapError> {
    if options.replicates == 0 {
        return Err(BootstrapError::NoReplicates);
    }
    if !(options.confidence > 0.0 && options.confidence < 1.0) {
        return Err(BootstrapError::BadConfidence(options.confidence));
    }
    Ok(())
}

fn replicate_rng(options: &BootstrapOptions, replicate: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    rng.set_stream(replicate as u64);
    rng
}

fn replicate_deltas(values: Vec<MetricPair>) -> Vec<Option<f64>> {
    values.into_iter().map(|(a, b)| Some(b? - a?).filter(|d| d.is_finite())).collect()
}

/// Each metric's point values, percentile interval, p-value and standard error from the
/// replicate deltas.
fn summarize(points: &[MetricPair], deltas: &[Vec<Option<f64>>], options: &BootstrapOptions) -> Vec<BootstrapResult> {
    (0..points.len())
        .map(|metric| {
            let mut valid: Vec<f64> = deltas.iter().filter_map(|d| d[metric]).collect();
            valid.sort_unstable_by(f64::total_cmp);
            let (a, b) = points[metric];
            let tail = (1.0 - options.confidence) / 2.0;
            let p_value = (!valid.is_empty()).then(|| {
                let count = valid.len() as f64;
                let at_most_zero = valid.iter().filter(|&&d| d <= 0.0).count() as f64 / count;
                let at_least_zero = valid.iter().filter(|&&d| d >= 0.0).count() as f64 / count;
                (2.0 * at_most_zero.min(at_least_zero)).clamp(1.0 / count, 1.0)
            });
            BootstrapResult {
                a,
                b,
                delta: a.zip(b).map(|(a, b)| b - a),
                ci_low: quantile(&valid, tail),
                ci_high: quantile(&valid, 1.0 - tail),
                p_value,
                std_error: std_deviation(&valid),
                replicates: options.replicates,
                valid_replicates: valid.len(),
            }
        })
        .collect()
}

/// Bootstraps one metric: `metric_a` and `metric_b` see the same resampled rows.
pub fn paired_cluster_bootstrap<A, B>(
    clusters: &Groups,
    options: &BootstrapOptions,
    metric_a: A,
    metric_b: B,
) -> Result<BootstrapResult, BootstrapError>
where
    A: Fn(&[usize]) -> Option<f64> + Sync,
    B: Fn(&[usize]) -> Option<f64> + Sync,
{
    let results = paired_cluster_bootstrap_many(clusters, options, 1, |resample, out| {
        let rows = resample.rows();
        out[0] = (metric_a(&rows), metric_b(&rows));
    })?;
    Ok(results[0])
}

/// Sample standard deviation (n - 1 denominator); `None` below two values.
fn std_deviation(values: &[f64]) -> Option<f64> {
    let n = values.len();
    (n >= 2).then(|| {
        let mean = values.iter().sum::<f64>() / n as f64;
        (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
    })
}

/// The `q`-quantile of sorted values, interpolating linearly between order statistics.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let position = q * last as f64;
    let (low, frac) = (position.floor() as usize, position.fract());
    let high = (low + 1).min(last);
    Some(sorted[low] + frac * (sorted[high] - sorted[low]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert!((quantile(&v, 0.025).unwrap() - 1.075).abs() < 1e-12);
        assert_eq!(quantile(&[], 0.5), None);
        // Mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, / 3.
        assert!((std_deviation(&v).unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(std_deviation(&[1.0]), None);
    }

    #[test]
    fn rows_and_weights_agree() {
        let clusters = Groups::from_ids(&[5, 6, 5, 7]);
        let scratch = Scratch { counts: vec![2, 0, 1], ..Scratch::default() };
        let r = scratch.resample(&clusters);
        assert_eq!(&*r.rows(), &[0, 2, 0, 2, 3]);
        assert_eq!(&*r.row_weights(), &[2, 0, 2, 1]);
    }

    /// Two arms of 400 users with 5 rows each: the delta of means, its interval and standard
    /// error against the normal theory of two independent cluster means.
    #[test]
    fn two_sample_deltas_follow_two_independent_means() {
        let users = 400;
        let rows_per_user = 5;
        let ids: Vec<u64> = (0..users * rows_per_user).map(|r| (r / rows_per_user) as u64).collect();
        let clusters = Groups::from_ids(&ids);
        // Per-user level plus row noise, from a fixed pseudo-random sequence; B is shifted by 0.1.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut arm = |shift: f64| -> Vec<f64> {
            let levels: Vec<f64> = (0..users).map(|_| rng.gen_range(-1.0..1.0)).collect();
            ids.iter().map(|&u| shift + levels[u as usize] + rng.gen_range(-0.5..0.5)).collect()
        };
        let (a, b) = (arm(0.0), arm(0.1));
        let mean = |values: &[f64], weights: &[u32]| {
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            Some(values.iter().zip(weights).map(|(v, &w)| v * f64::from(w)).sum::<f64>() / total)
        };
        let options = BootstrapOptions { replicates: 2000, seed: 1, confidence: 0.95 };
        let result = two_sample_cluster_bootstrap_many(&clusters, &clusters, &options, 1, |ra, rb, out| {
            out[0] = (mean(&a, &ra.row_weights()), mean(&b, &rb.row_weights()));
        })
        .unwrap()[0];
        let plain = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((result.delta.unwrap() - (plain(&b) - plain(&a))).abs() < 1e-12);
        // The standard error of a mean of 400 user means: each user mean has variance
        // 1/3 (uniform level) + 1/60 (five rows of uniform noise) = 0.35; two arms: sqrt(2 × 0.35 / 400).
        let theory = (2.0 * 0.35 / 400.0f64).sqrt();
        let se = result.std_error.unwrap();
        assert!((se / theory - 1.0).abs() < 0.15, "bootstrap SE {se} vs {theory}");
        assert!(result.ci_low.unwrap() < result.delta.unwrap() && result.delta.unwrap() < result.ci_high.unwrap());
        // Deterministic for a seed.
        let again = two_sample_cluster_bootstrap_many(&clusters, &clusters, &options, 1, |ra, rb, out| {
            out[0] = (mean(&a, &ra.row_weights()), mean(&b, &rb.row_weights()));
        })
        .unwrap()[0];
        assert_eq!(result, again);
    }
}
