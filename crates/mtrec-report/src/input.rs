//! Inputs: the shared evaluation rows, task descriptions, one model's scores (with the
//! trainer's [`History`]), and report options.

use mtrec_schema::{History, Scope, TaskType};
use serde::{Deserialize, Serialize};

/// The rows every model is scored on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalRows {
    /// User id per row (hashed or dense); the bootstrap's clusters and the GAUC/ranking groups.
    pub user: Vec<u64>,
    /// Item id per row; groups `item`-scope tasks.
    pub item: Vec<u64>,
    /// Per task, one label per row (binary: nonzero = positive; multiclass: class index).
    pub labels: Vec<Vec<f32>>,
    /// Per task, one flag per row: nonzero = labeled, 0 = masked out (the trainer's convention).
    pub masks: Vec<Vec<u8>>,
}

impl EvalRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }
}

/// What a task predicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum TaskKind {
    /// One probability per row.
    Binary,
    /// One value per row. With `label_log1p`, the model learned `ln(1 + y)`: outputs and labels
    /// are on that scale, and the report adds the metrics on the label's own scale
    /// (`label_rmse`, `label_mae`, `label_r2`, of `exp(output) − 1` against `exp(label) − 1`).
    Regression {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        label_log1p: bool,
    },
    /// One probability per class per row.
    Multiclass { classes: Vec<String> },
}

impl TaskKind {
    /// Outputs per row.
    pub fn width(&self) -> usize {
        match self {
            TaskKind::Multiclass { classes } => classes.len(),
            _ => 1,
        }
    }

    /// A regression learned as `ln(1 + y)`.
    pub fn label_log1p(&self) -> bool {
        matches!(self, TaskKind::Regression { label_log1p: true })
    }

    /// `binary`, `regression` or `multiclass`.
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Binary => "binary",
            TaskKind::Regression { .. } => "regression",
            TaskKind::Multiclass { .. } => "multiclass",
        }
    }

    /// The schema's task type of this kind.
    pub fn task_type(&self) -> TaskType {
        match self {
            TaskKind::Binary => TaskType::Binary,
            TaskKind::Regression { .. } => TaskType::Regression,
            TaskKind::Multiclass { .. } => TaskType::Multiclass,
        }
    }
}

/// One task of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportTask {
    pub name: String,
    pub kind: TaskKind,
    pub scope: Scope,
}

/// One model's predictions on [`EvalRows`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelScores {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Free-form provenance (bundle metadata, config hash, ...), copied into the report.
    #[serde(default)]
    pub provenance: serde_json::Value,
    /// Per task, rows x outputs row-major. A single-task baseline may leave a task empty.
    pub outputs: Vec<Vec<f32>>,
    /// Per task, its MMoE or PLE gate weights summed over its labeled rows ([`GateSums::add`]);
    /// empty, or `None` for a task without a gate.
    #[serde(default)]
    pub gates: Vec<Option<GateSums>>,
    #[serde(default)]
    pub history: Option<History>,
}

/// One task's gate weights summed over its labeled rows: what the expert-usage heatmap reads,
/// gathered batch by batch so that no row's weights need be kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateSums {
    /// Per expert, the sum of its weight.
    pub weights: Vec<f64>,
    /// The sum of the gate's entropy (nats).
    pub entropy: f64,
    /// The rows summed.
    pub rows: usize,
}

impl GateSums {
    /// Adds the rows of `gates` (rows × experts, row-major) whose mask is not 0.
    pub fn add(&mut self, gates: &[f32], masks: &[u8]) {
        if masks.is_empty() {
            return;
        }
        let experts = gates.len() / masks.len();
        self.weights.resize(self.weights.len().max(experts), 0.0);
        for (row, _) in gates.chunks_exact(experts.max(1)).zip(masks).filter(|(_, &m)| m != 0) {
            for (sum, &w) in self.weights.iter_mut().zip(row) {
                *sum += f64::from(w);
            }
            self.entropy += entropy(row.iter().map(|&w| f64::from(w)));
            self.rows += 1;
        }
    }
}

/// The entropy (nats) of a distribution's weights.
pub(crate) fn entropy(weights: impl Iterator<Item = f64>) -> f64 {
    weights.filter(|&w| w > 0.0).map(|w| -w * w.ln()).sum()
}

/// Knobs of a report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportOptions {
    /// Paired cluster bootstrap replicates.
    pub bootstrap_replicates: usize,
    pub seed: u64,
    /// K of NDCG@K and Recall@K.
    pub ranking_k: usize,
    /// Equal-width bins of the ECE and reliability curve.
    pub ece_bins: usize,
    /// Significance level of verdicts (the false discovery rate over tasks); intervals have
    /// coverage `1 - alpha`.
    pub alpha: f64,
    /// Power at which the minimum detectable effect is stated.
    pub power: f64,
    /// Most ROC points kept per curve.
    pub roc_points: usize,
}

impl ReportOptions {
    /// The cluster bootstrap these options ask for: intervals of coverage `1 - alpha`.
    pub fn bootstrap(&self) -> mtrec_metrics::BootstrapOptions {
        mtrec_metrics::BootstrapOptions {
            replicates: self.bootstrap_replicates,
            seed: self.seed,
            confidence: 1.0 - self.alpha,
        }
    }
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            bootstrap_replicates: 1000,
            seed: 0,
            ranking_k: 10,
            ece_bins: 10,
            alpha: 0.05,
            power: 0.8,
            roc_points: 200,
        }
    }
}
