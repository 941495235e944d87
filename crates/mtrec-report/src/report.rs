//! Report types: what [`crate::evaluate`] and [`crate::compare`] return, serialized as the
//! JSON documented in `REPORT.md`. Every value that can be undefined or non-finite is an
//! `Option` and serializes as `null`.

use std::collections::BTreeMap;

use mtrec_schema::{History, Metric, Scope};
use serde::{Deserialize, Serialize};

use crate::input::ReportOptions;

/// Version of the JSON layout; bumped on incompatible changes (2: verdicts by clustered tests
/// with Benjamini–Hochberg adjusted p-values, `verdict_test` gained `clustered_delong`).
pub const FORMAT_VERSION: u32 = 2;

/// `Some(x)` for finite `x`.
pub(crate) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Who made the scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedModel {
    pub name: String,
    pub description: String,
    pub provenance: serde_json::Value,
}

/// How a task was evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evaluated {
    /// One unit per labeled row.
    PerRow,
    /// One unit per user: a user-scope label constant over each user's labeled rows.
    PerUser,
    /// One unit per item: an item-scope label constant over each item's labeled rows.
    PerItem,
}

/// One point of a ROC curve; `threshold` is `null` for the first point (+inf).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReportRocPoint {
    pub threshold: Option<f64>,
    pub fpr: f64,
    pub tpr: f64,
}

/// Calibration of a binary task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    pub mean_predicted: f64,
    pub observed_rate: f64,
    pub ece: f64,
    pub bins: Vec<mtrec_metrics::ReliabilityBin>,
}

/// How many groups entered a per-user metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCoverage {
    pub evaluated: usize,
    /// GAUC: users with a single class; ranking: users without a positive.
    pub skipped: usize,
}

/// One model on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEval {
    pub task: String,
    /// `binary`, `regression` or `multiclass`.
    pub kind: String,
    pub scope: Scope,
    pub evaluated: Evaluated,
    pub labeled_rows: usize,
    pub masked_rows: usize,
    /// Rows, users or items evaluated (see `evaluated`).
    pub units: usize,
    /// Metric -> value; the metrics per kind are listed in `REPORT.md`.
    pub metrics: BTreeMap<Metric, Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub calibration: Option<CalibrationReport>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub roc: Vec<ReportRocPoint>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gauc_users: Option<UserCoverage>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ranking_users: Option<UserCoverage>,
}

/// MMoE gate usage of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertUsage {
    pub task: String,
    /// Mean gate weight per expert over the task's labeled rows.
    pub mean_weight: Vec<f64>,
    /// Mean over rows of each row's gate entropy (nats): low = rows commit to few experts.
    pub mean_entropy: Option<f64>,
    /// Entropy of `mean_weight` (nats): low = the task uses few experts overall.
    pub entropy_of_mean: Option<f64>,
    /// `ln(experts)`, the largest possible entropy.
    pub max_entropy: f64,
}

/// A single-model report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub format_version: u32,
    /// Always `eval`.
    pub report: String,
    pub model: ReportedModel,
    pub options: ReportOptions,
    pub rows: usize,
    pub tasks: Vec<TaskEval>,
    pub expert_usage: Vec<ExpertUsage>,
    pub history: Option<History>,
}

/// The verdict on a task, from its primary metric: the rule of [`mtrec_metrics::verdict`].
pub use mtrec_metrics::Verdict;

/// The test behind a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictTest {
    /// DeLong's test of two correlated AUCs with units clustered by user (Obuchowski), for
    /// units of which some users hold more than one.
    ClusteredDelong,
    /// DeLong's test, where every cluster holds one unit (it equals the clustered test there).
    Delong,
    /// The paired bootstrap that resamples clusters.
    Bootstrap,
    /// The two-sample bootstrap that resamples each arm's users independently: for arms of an
    /// online experiment, which scored different users.
    TwoSampleBootstrap,
}

impl VerdictTest {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictTest::ClusteredDelong => "clustered_delong",
            VerdictTest::Delong => "delong",
            VerdictTest::Bootstrap => "bootstrap",
            VerdictTest::TwoSampleBootstrap => "two_sample_bootstrap",
        }
    }
}

/// One metric of A against B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    pub metric: Metric,
    /// `null` for metrics without a better direction (e.g. mean prediction).
    pub higher_is_better: Option<bool>,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// `b - a`.
    pub delta: Option<f64>,
    /// Paired cluster-bootstrap percentile interval of `delta`.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Bootstrap two-sided p-value.
    pub p_value: Option<f64>,
    /// Bootstrap standard error of `delta` (the replicate deltas' standard deviation).
    pub std_error: Option<f64>,
    pub valid_replicates: usize,
}

/// DeLong's test of `auc_b - auc_a`, with rows independent or clustered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DelongReport {
    pub auc_a: Option<f64>,
    pub auc_b: Option<f64>,
    pub delta: Option<f64>,
    pub std_error: Option<f64>,
    pub z: Option<f64>,
    pub p_value: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

/// Relative gain of the multi-task models over a single-task baseline, oriented so that a
/// positive gain is an improvement: `(m - base) / |base|` for higher-is-better metrics and
/// `(base - m) / |base|` otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultitaskGain {
    pub metric: Metric,
    pub baseline: Option<f64>,
    pub a_gain: Option<f64>,
    pub b_gain: Option<f64>,
}

/// A against B on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskComparison {
    pub task: String,
    pub kind: String,
    pub scope: Scope,
    pub evaluated: Evaluated,
    pub units: usize,
    /// Clusters of the units: users for per-row and per-user units, items for per-item units.
    pub clusters: usize,
    /// [`Metric::primary`]: `auc` (binary), `rmse` (regression) or `logloss` (multiclass).
    pub primary_metric: Metric,
    /// From `verdict_q_value` and the primary metric's delta.
    pub verdict: Verdict,
    pub verdict_test: VerdictTest,
    /// Why that test, in words (the same text in every rendering).
    pub verdict_reason: String,
    /// The verdict test's p-value.
    pub verdict_p_value: Option<f64>,
    /// `verdict_p_value` adjusted by Benjamini–Hochberg over the tasks' primary metrics.
    pub verdict_q_value: Option<f64>,
    /// The verdict test's `1 - alpha` interval of the primary metric's delta.
    pub verdict_ci_low: Option<f64>,
    pub verdict_ci_high: Option<f64>,
    /// The verdict test's standard error of the delta (the bootstrap's: the replicates' SD).
    pub verdict_std_error: Option<f64>,
    /// Variance of the primary metric's delta with units clustered / with units independent.
    pub design_effect: Option<f64>,
    /// `(z_{1-alpha/(2m)} + z_power) · verdict_std_error`, `m` the tasks with a p-value: the
    /// smallest true |delta| detected with probability `options.power` on this sample even
    /// when no other task differs (Benjamini–Hochberg then tests it at `alpha / m`).
    pub min_detectable_effect: Option<f64>,
    /// Set when DeLong's row-independent test and the clustered tests disagree on
    /// significance at `alpha` (before the adjustment).
    pub disagreement: Option<String>,
    pub metrics: Vec<MetricComparison>,
    /// DeLong's test with every unit independent (binary only).
    pub delong: Option<DelongReport>,
    /// DeLong's test with units clustered (Obuchowski; binary only).
    pub clustered_delong: Option<DelongReport>,
    pub multitask_gain: Option<MultitaskGain>,
    /// Model A's full evaluation of the task (curves included).
    pub a: TaskEval,
    pub b: TaskEval,
}

/// MMoE expert usage of both models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpertUsagePair {
    pub a: Vec<ExpertUsage>,
    pub b: Vec<ExpertUsage>,
}

/// Both models' training histories.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingPair {
    pub a: Option<History>,
    pub b: Option<History>,
}

/// An A/B report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbReport {
    pub format_version: u32,
    /// Always `ab`.
    pub report: String,
    pub model_a: ReportedModel,
    pub model_b: ReportedModel,
    pub baseline: Option<ReportedModel>,
    pub options: ReportOptions,
    pub rows: usize,
    /// The verdict rule in words (the same text in every rendering).
    pub verdict_rule: String,
    pub tasks: Vec<TaskComparison>,
    /// True when some task is `b_better` and another `b_worse`.
    pub seesaw: bool,
    pub improved_tasks: Vec<String>,
    pub degraded_tasks: Vec<String>,
    pub expert_usage: ExpertUsagePair,
    pub training: TrainingPair,
    /// Set for a report of an online experiment (A the stable arm, B the candidate arm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineExperiment>,
}

/// One arm of an online experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    /// `stable` or `candidate`.
    pub arm: String,
    /// The model versions that scored it.
    pub versions: Vec<String>,
    /// Users assigned to it (with at least one exposure).
    pub users: usize,
    /// Scoring requests logged.
    pub requests: usize,
    /// Exposed (user, item) pairs.
    pub exposures: usize,
    /// Exposed pairs with an outcome: the rows evaluated.
    pub rows: usize,
}

/// What an online A/B report rests on: the arms' sizes and the sample-ratio-mismatch check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineExperiment {
    /// A (stable), then B (candidate).
    pub arms: Vec<ArmSummary>,
    /// χ² of the arms' user counts against the configured candidate share.
    pub sample_ratio: Option<mtrec_metrics::SampleRatio>,
    /// The check failed: users were not split as configured (p below `srm_alpha`), so the
    /// comparison is not to be trusted until the cause (routing, logging) is found.
    pub sample_ratio_mismatch: bool,
    pub srm_alpha: f64,
    /// Exposed pairs without an outcome (not evaluated).
    pub unmatched_exposures: usize,
    /// Outcomes without an exposure (not evaluated).
    pub unmatched_outcomes: usize,
    /// Exposures outside the experiment: pinned requests and requests without a user id.
    pub excluded_exposures: usize,
}
