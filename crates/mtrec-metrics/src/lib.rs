//! # mtrec-metrics
//!
//! Exact metrics over plain slices: no bucketing, no batch averaging. Ties in scores are
//! averaged (a tied positive-negative pair counts one half), as in the Mann-Whitney statistic.
//! Scores are ordered by `f32::total_cmp`.
//!
//! Modules:
//! - [`weight`]: row weights ([`Weight`], [`UNWEIGHTED`]).
//! - [`binary`]: fast AUC ([`RankedScores`] for repeated weighted evaluation), ROC points,
//!   GAUC, log loss, calibration (ECE, reliability curve).
//! - [`regression`]: RMSE, MAE, R².
//! - [`classification`]: multiclass accuracy, macro-F1, log loss.
//! - [`ranking`]: per-user NDCG@K, Recall@K, MRR.
//! - [`delong`]: DeLong's test for two correlated AUCs.
//! - [`clustered`]: the same with rows clustered by user (Obuchowski), and the variance of a
//!   mean under clustering; design effects.
//! - [`verdict`]: the verdict rule over a family of comparisons (Benjamini–Hochberg), and the
//!   minimum detectable effect.
//! - [`bootstrap`]: paired and two-sample cluster bootstrap of metric deltas.
//! - [`groups`]: rows grouped by user or item id.
//! - [`normal`]: standard normal CDF and quantile.
//! - [`student`]: Student's t p-values.
//! - [`srm`]: the sample-ratio-mismatch check of an online experiment (χ² on arm counts).
//! - [`seeds`]: summaries over seeds (mean and 95% CI) and the paired t-test.
//! - [`sort`]: sortable f32 keys and the radix sort behind the AUC.
//!
//! Functions that take `weights: Option<&[W]>` accept any [`Weight`] (`f32`, `f64`, `u32`
//! bootstrap multiplicities); pass [`UNWEIGHTED`] for none. Length mismatches are caller
//! bugs and panic; undefined metrics (one class, no rows) are `None`.

pub mod binary;
pub mod bootstrap;
pub mod classification;
pub mod clustered;
pub mod delong;
pub mod groups;
pub mod normal;
pub mod ranking;
pub mod regression;
pub mod seeds;
pub mod sort;
pub mod srm;
pub mod student;
pub mod verdict;
pub mod weight;

pub use binary::{
    auc, binary_cross_entropy, calibration, calibration_bin, calibration_from_bin_sums, gauc, gauc_by_user,
    gauc_from_parts, logloss, per_group_auc, roc_curve, Calibration, Gauc, RankedScores, ReliabilityBin, RocPoint,
};
pub use bootstrap::{
    paired_cluster_bootstrap, paired_cluster_bootstrap_many, two_sample_cluster_bootstrap_many, BootstrapError,
    BootstrapOptions, BootstrapResult, MetricPair, Resample,
};
pub use classification::{multiclass_metrics, predicted_class, MulticlassMetrics};
pub use clustered::{clustered_delong_test, mean_variance, ClusteredDelongTest, MeanVariance};
pub use delong::{delong_test, DelongTest};
pub use groups::Groups;
pub use ranking::{per_user_ranking, ranking, ranking_from_parts, RankingMetrics, UserRanking};
pub use regression::{regression_metrics, RegressionMetrics};
pub use seeds::{mean_ci95, paired_t_test, MeanCi, PairedTTest};
pub use srm::{sample_ratio_mismatch, SampleRatio};
pub use student::student_t_two_sided_p;
pub use verdict::{benjamini_hochberg, min_detectable_effect, verdict, Verdict};
pub use weight::{Weight, UNWEIGHTED};
