//! Variances that treat rows of one cluster (a user) as correlated: Obuchowski's clustered
//! DeLong test for two AUCs (Obuchowski 1997, "Nonparametric analysis of clustered ROC curve
//! data", Biometrics 53), and the variance of a mean of per-row contributions, the
//! linearised form of metrics such as RMSE and log loss.
//!
//! # Clustered DeLong
//!
//! Clusters `i = 1..I` hold `m_i` positives and `n_i` negatives; `M = Σ m_i`, `N = Σ n_i`;
//! `I10` (`I01`) clusters hold at least one positive (negative). For each model the structural
//! components are DeLong's ([`crate::delong`]): a positive's `V10` is the fraction of all `N`
//! negatives it outranks (ties count one half), a negative's `V01` the fraction of all `M`
//! positives that outrank it, and the AUC `θ` is their mean. Per cluster, `V10_i` (`V01_i`)
//! sums the components of the cluster's positives (negatives). With the differences between
//! the models
//!
//! `D10_i = (V10_i^B − m_i θ^B) − (V10_i^A − m_i θ^A)`, `D01_i = (V01_i^B − n_i θ^B) − (V01_i^A − n_i θ^A)`,
//!
//! `Var(θ^B − θ^A) = I10 / ((I10 − 1) M²) Σ D10_i² + I01 / ((I01 − 1) N²) Σ D01_i²
//!                  + 2 I / ((I − 1) M N) Σ D10_i D01_i`.
//!
//! This is Obuchowski's `var_A + var_B − 2 cov_AB` (her `S10`, `S01` and `S11` sums of
//! products) gathered into the differences: the between-cluster variation of the components'
//! cluster sums replaces DeLong's between-row variation, and the cross term carries the
//! correlation between a cluster's positives and its negatives. With one row per cluster a
//! cluster holds one positive or one negative, so the cross term vanishes, `I10 = M`,
//! `I01 = N`, and the first two terms are DeLong's sample variances over `M` and `N`: the test
//! is DeLong's.
//!
//! # Mean of contributions
//!
//! For a statistic `(1/n) Σ_r c_r` over `n` rows in clusters, with `c̄` the mean:
//! clustered `Var = I / (I − 1) · Σ_i (Σ_{r∈i} (c_r − c̄))² / n²`, row-independent
//! `Var = Σ_r (c_r − c̄)² / ((n − 1) n)`; they agree when every cluster holds one row.
//!
//! The ratio clustered / row-independent is the design effect: how many times the variance
//! grows because rows of one cluster are not independent.

use serde::{Deserialize, Serialize};

use crate::delong::{DelongTest, PairedPlacements};
use crate::groups::Groups;

/// Obuchowski's clustered DeLong test of `AUC_b - AUC_a`, beside DeLong's on the same rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClusteredDelongTest {
    /// The test with the clustered variance.
    pub clustered: DelongTest,
    /// DeLong's test of the same rows, every row taken as independent.
    pub row_independent: DelongTest,
    /// Clusters holding at least one row.
    pub clusters: usize,
    /// Clustered variance / row-independent variance; `None` when DeLong's variance is 0.
    pub design_effect: Option<f64>,
}

/// Obuchowski's test of model B's AUC against model A's, rows grouped by `clusters` (over the
/// same rows as `labels`), with a `confidence` normal interval. `None` with fewer than two
/// positives or negatives, or fewer than two clusters holding a positive or a negative.
///
/// # Panics
/// When the lengths of the scores, labels and grouped rows differ.
pub fn clustered_delong_test(
    scores_a: &[f32],
    scores_b: &[f32],
    labels: &[f32],
    clusters: &Groups,
    confidence: f64,
) -> Option<ClusteredDelongTest> {
    assert_eq!(clusters.rows_total(), labels.len(), "clustered_delong_test: clusters and labels differ in length");
    let p = PairedPlacements::new(scores_a, scores_b, labels)?;
    let (big_m, big_n) = (p.v10_a.len() as f64, p.v01_a.len() as f64);
    let delta = p.auc_b - p.auc_a;
    // Per cluster: D10_i and D01_i, and whether it holds a positive or a negative.
    let k = clusters.len();
    let (mut d10, mut d01) = (vec![0.0f64; k], vec![0.0f64; k]);
    let (mut has_pos, mut has_neg) = (vec![false; k], vec![false; k]);
    let (mut pi, mut ni) = (0, 0);
    for (row, &y) in labels.iter().enumerate() {
        let g = clusters.group_of(row);
        // Each row's centred difference; summed over a cluster this is D10_i (D01_i).
        if y != 0.0 {
            d10[g] += (p.v10_b[pi] - p.v10_a[pi]) - delta;
            has_pos[g] = true;
            pi += 1;
        } else {
            d01[g] += (p.v01_b[ni] - p.v01_a[ni]) - delta;
            has_neg[g] = true;
            ni += 1;
        }
    }
    let count = |flags: &[bool]| flags.iter().filter(|&&f| f).count() as f64;
    let (i10, i01) = (count(&has_pos), count(&has_neg));
    let i_all = (0..k).filter(|&g| has_pos[g] || has_neg[g]).count() as f64;
    if i10 < 2.0 || i01 < 2.0 {
        return None;
    }
    let sum_sq = |d: &[f64]| d.iter().map(|x| x * x).sum::<f64>();
    let cross: f64 = d10.iter().zip(&d01).map(|(x, y)| x * y).sum();
    let clustered_variance = i10 / ((i10 - 1.0) * big_m * big_m) * sum_sq(&d10)
        + i01 / ((i01 - 1.0) * big_n * big_n) * sum_sq(&d01)
        + 2.0 * i_all / ((i_all - 1.0) * big_m * big_n) * cross;
    let row_variance = p.row_independent_variance();
    Some(ClusteredDelongTest {
        clustered: p.test(clustered_variance, confidence),
        row_independent: p.test(row_variance, confidence),
        clusters: i_all as usize,
        design_effect: design_effect(clustered_variance, row_variance),
    })
}

/// The variance of a mean under two assumptions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanVariance {
    /// Rows of one cluster correlated, clusters independent.
    pub clustered: f64,
    /// Every row independent.
    pub row_independent: f64,
    /// Clusters holding at least one row.
    pub clusters: usize,
}

impl MeanVariance {
    /// Clustered / row-independent; `None` when the row-independent variance is 0.
    pub fn design_effect(&self) -> Option<f64> {
        design_effect(self.clustered, self.row_independent)
    }
}

/// The variance of `mean(contributions)` with rows grouped by `clusters`. `None` with fewer
/// than two rows or two non-empty clusters, or a non-finite contribution.
///
/// # Panics
/// When `clusters` does not group exactly the contributions' rows.
pub fn mean_variance(contributions: &[f64], clusters: &Groups) -> Option<MeanVariance> {
    assert_eq!(clusters.rows_total(), contributions.len(), "mean_variance: clusters and contributions differ");
    let n = contributions.len() as f64;
    if contributions.len() < 2 || contributions.iter().any(|c| !c.is_finite()) {
        return None;
    }
    let mean = contributions.iter().sum::<f64>() / n;
    let row_sq: f64 = contributions.iter().map(|c| (c - mean) * (c - mean)).sum();
    let (mut cluster_sq, mut non_empty) = (0.0, 0usize);
    for g in 0..clusters.len() {
        let rows = clusters.rows(g);
        if rows.is_empty() {
            continue;
        }
        non_empty += 1;
        let s: f64 = rows.iter().map(|&r| contributions[r as usize] - mean).sum();
        cluster_sq += s * s;
    }
    if non_empty < 2 {
        return None;
    }
    let i = non_empty as f64;
    Some(MeanVariance {
        clustered: i / (i - 1.0) * cluster_sq / (n * n),
        row_independent: row_sq / ((n - 1.0) * n),
        clusters: non_empty,
    })
}

fn design_effect(clustered: f64, row_independent: f64) -> Option<f64> {
    (row_independent > 0.0 && clustered.is_finite()).then(|| clustered / row_independent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delong_test;

    /// Deterministic uniform numbers in [0, 1).
    fn uniform(state: &mut u64) -> f64 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn one_row_per_cluster_is_delong() {
        let mut state = 3;
        let labels: Vec<f32> = (0..300).map(|_| f32::from(u8::from(uniform(&mut state) < 0.3))).collect();
        let a: Vec<f32> = labels.iter().map(|&y| (f64::from(y) * 0.4 + uniform(&mut state)) as f32).collect();
        // Rounded to a grid so that ties occur within and across the models.
        let b: Vec<f32> =
            labels.iter().map(|&y| ((f64::from(y) * 0.6 + uniform(&mut state)) * 20.0).round() as f32 / 20.0).collect();
        let singletons = Groups::from_ids(&(0..300u64).map(|r| r * 7919).collect::<Vec<_>>());
        let c = clustered_delong_test(&a, &b, &labels, &singletons, 0.95).unwrap();
        let d = delong_test(&a, &b, &labels, 0.95).unwrap();
        assert_eq!(c.row_independent, d);
        assert!((c.clustered.std_error - d.std_error).abs() < 1e-12 * d.std_error, "{c:?} vs {d:?}");
        assert!((c.clustered.p_value - d.p_value).abs() < 1e-12);
        assert!((c.design_effect.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(c.clusters, 300);
    }

    #[test]
    fn a_shared_user_offset_inflates_the_variance() {
        // 40 users x 25 rows; model B shifts all of a user's scores by a per-user offset, so
        // the rows of one user move together and DeLong's row-independent variance is too small.
        let mut state = 11;
        let (mut labels, mut a, mut b, mut users) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for u in 0..40u64 {
            let offset = (uniform(&mut state) - 0.5) * 2.0;
            let base_rate = 0.1 + 0.8 * uniform(&mut state);
            for _ in 0..25 {
                let y = f32::from(u8::from(uniform(&mut state) < base_rate));
                let x = f64::from(y) + uniform(&mut state);
                labels.push(y);
                a.push(x as f32);
                b.push((x + offset) as f32);
                users.push(u);
            }
        }
        let c = clustered_delong_test(&a, &b, &labels, &Groups::from_ids(&users), 0.95).unwrap();
        assert!(c.design_effect.unwrap() > 3.0, "{c:?}");
        assert!(c.clustered.p_value > c.row_independent.p_value);
        assert_eq!((c.clusters, c.clustered.delta), (40, c.row_independent.delta));
    }

    #[test]
    fn undefined_without_two_clusters_of_each_class() {
        let labels = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let a = [0.9, 0.8, 0.1, 0.2, 0.7, 0.3];
        let b = [0.6, 0.9, 0.2, 0.1, 0.8, 0.5];
        // All positives in cluster 0: one cluster with positives.
        let clusters = Groups::from_ids(&[0, 0, 1, 1, 0, 2]);
        assert!(clustered_delong_test(&a, &b, &labels, &clusters, 0.95).is_none());
        let clusters = Groups::from_ids(&[0, 1, 1, 2, 0, 2]);
        assert!(clustered_delong_test(&a, &b, &labels, &clusters, 0.95).is_some());
    }

    #[test]
    fn mean_variance_by_hand() {
        // Contributions 1, 2 | 3 | 6 (mean 3): row-independent Σ(c - 3)² = 4 + 1 + 0 + 9 = 14,
        // / (3 · 4) = 7/6; cluster sums of deviations -3, 0, 3: 3/2 · 18 / 16 = 27/16.
        let v = mean_variance(&[1.0, 2.0, 3.0, 6.0], &Groups::from_ids(&[0, 0, 1, 2])).unwrap();
        assert!((v.row_independent - 7.0 / 6.0).abs() < 1e-15);
        assert!((v.clustered - 27.0 / 16.0).abs() < 1e-15);
        assert_eq!(v.clusters, 3);
        assert!((v.design_effect().unwrap() - (27.0 / 16.0) / (7.0 / 6.0)).abs() < 1e-15);
        let singletons = mean_variance(&[1.0, 2.0, 3.0, 6.0], &Groups::from_ids(&[0, 1, 2, 3])).unwrap();
        assert!((singletons.clustered - singletons.row_independent).abs() < 1e-15);
        assert!(mean_variance(&[1.0, 2.0], &Groups::from_ids(&[4, 4])).is_none(), "one cluster");
        assert!(mean_variance(&[1.0, f64::NAN], &Groups::from_ids(&[0, 1])).is_none());
    }
}
