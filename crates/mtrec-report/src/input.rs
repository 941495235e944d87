//! Inputs: the shared evaluation rows, task descriptions, one model's scores, the trainer's
//! `history.json`, and report options.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

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
    /// One value per row.
    Regression,
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

    /// `binary`, `regression` or `multiclass`.
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Binary => "binary",
            TaskKind::Regression => "regression",
            TaskKind::Multiclass { .. } => "multiclass",
        }
    }
}

/// What one label describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A (user, item) interaction.
    Pair,
    /// A property of the user.
    User,
    /// A property of the item.
    Item,
}

/// One task of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
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
    /// Per task, rows x experts row-major MMoE gate weights; empty or `None` without gates.
    #[serde(default)]
    pub gates: Vec<Option<Vec<f32>>>,
    #[serde(default)]
    pub history: Option<History>,
}

/// The trainer's `history.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The early-stopping metric, e.g. `click.auc`.
    pub monitor: String,
    pub best_epoch: Option<usize>,
    pub epochs: Vec<EpochRecord>,
    /// Pearson's r between two tasks' labels on the train split, keyed `"a|b"`.
    #[serde(default)]
    pub label_correlation: BTreeMap<String, f64>,
}

/// One epoch of [`History`]. A `null` metric (non-finite when written) reads as NaN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean training loss per task.
    #[serde(deserialize_with = "nullable_map")]
    pub train_loss: BTreeMap<String, f64>,
    /// Validation metrics, `<task>.<metric>` and `loss`.
    #[serde(deserialize_with = "nullable_map")]
    pub valid: BTreeMap<String, f64>,
    #[serde(default, deserialize_with = "nullable_f64")]
    pub seconds: f64,
    #[serde(default, deserialize_with = "nullable_f64")]
    pub samples_per_second: f64,
    /// Cosine similarity of two tasks' gradients on their shared parameters, keyed `"a|b"`.
    #[serde(default, deserialize_with = "nullable_map")]
    pub gradient_cosine: BTreeMap<String, f64>,
}

fn nullable_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let raw: BTreeMap<String, Option<f64>> = Deserialize::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect())
}

fn nullable_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
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
    /// Significance level of verdicts; intervals have coverage `1 - alpha`.
    pub alpha: f64,
    /// Most ROC points kept per curve.
    pub roc_points: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { bootstrap_replicates: 1000, seed: 0, ranking_k: 10, ece_bins: 10, alpha: 0.05, roc_points: 200 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_json_of_the_trainer_deserializes() {
        let json = r#"{"monitor": "click.auc", "best_epoch": 3, "epochs": [{"epoch": 1,
            "train_loss": {"click": 0.41}, "valid": {"click.auc": 0.71, "click.logloss": 0.5, "loss": null},
            "seconds": 3.2, "samples_per_second": 100000.0}]}"#;
        let h: History = serde_json::from_str(json).unwrap();
        assert_eq!((h.monitor.as_str(), h.best_epoch, h.epochs.len()), ("click.auc", Some(3), 1));
        assert_eq!(h.epochs[0].valid["click.auc"], 0.71);
        assert!(h.epochs[0].valid["loss"].is_nan());
        assert_eq!(h.epochs[0].train_loss["click"], 0.41);
    }
}
