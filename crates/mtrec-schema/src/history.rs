//! `history.json`: what the trainer records per epoch, saved in every bundle and checkpoint,
//! and read back by serving (`GET /v1/models`), the reports' training curves and the
//! experiment runner. One type, read one way everywhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::metric::MetricKey;

/// The key of a pair of tasks in the relatedness maps: `"<task a>|<task b>"`, with `a` before
/// `b` in task order.
pub fn task_pair_key(a: &str, b: &str) -> String {
    format!("{a}|{b}")
}

/// `history.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The metric early stopping monitors.
    pub monitor: MetricKey,
    /// The epoch whose weights were kept (0-based).
    pub best_epoch: Option<usize>,
    pub epochs: Vec<EpochRecord>,
    /// Pearson's r between two tasks' labels on the train split, keyed by [`task_pair_key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "nullable_map")]
    pub label_correlation: BTreeMap<String, f64>,
}

impl History {
    /// An empty history monitoring `monitor`.
    pub fn new(monitor: MetricKey) -> Self {
        History { monitor, best_epoch: None, epochs: Vec::new(), label_correlation: BTreeMap::new() }
    }

    /// The record of the kept epoch, if any.
    pub fn best(&self) -> Option<&EpochRecord> {
        self.best_epoch.and_then(|b| self.epochs.iter().find(|e| e.epoch == b))
    }

    /// The record of the kept epoch, else of the last one.
    pub fn best_or_last(&self) -> Option<&EpochRecord> {
        self.best().or(self.epochs.last())
    }
}

/// One epoch's record. Values that were not finite when written are `null` in the JSON and
/// read back as NaN, here and in every number of a history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean training loss per task over the epoch (unweighted).
    #[serde(deserialize_with = "nullable_map")]
    pub train_loss: BTreeMap<String, f64>,
    /// Validation metrics: `loss` and `<task>.<metric>`.
    #[serde(deserialize_with = "nullable_map")]
    pub valid: BTreeMap<MetricKey, f64>,
    #[serde(default, deserialize_with = "nullable_f64")]
    pub seconds: f64,
    #[serde(default, deserialize_with = "nullable_f64")]
    pub samples_per_second: f64,
    /// Mean soft-sharing penalty Ω over the epoch's steps (soft sharing only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty: Option<f64>,
    /// The loss strategy's task weights at the end of the epoch (DWA, GradNorm).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "nullable_map")]
    pub loss_weights: BTreeMap<String, f64>,
    /// Cosine similarity of two tasks' gradients on the parameters they share, at the end of
    /// the epoch, keyed by [`task_pair_key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "nullable_map")]
    pub gradient_cosine: BTreeMap<String, f64>,
    /// MMoE and PLE: each task's gate statistics on the valid split.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expert_usage: BTreeMap<String, GateStats>,
    /// Training across processes: the bytes each step handed to the collectives on rank 0
    /// (dense gradients, touched embedding rows, the step's label counts and losses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchanged_bytes_per_step: Option<f64>,
}

/// One task's gate over the valid split: the mean weight of each expert, and the mean entropy
/// (nats) of the gate's distribution per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateStats {
    #[serde(deserialize_with = "nullable_vec")]
    pub mean_weight: Vec<f64>,
    #[serde(deserialize_with = "nullable_f64")]
    pub mean_entropy: f64,
}

fn nullable_map<'de, K, D>(d: D) -> Result<BTreeMap<K, f64>, D::Error>
where
    K: Deserialize<'de> + Ord,
    D: Deserializer<'de>,
{
    let raw: BTreeMap<K, Option<f64>> = Deserialize::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect())
}

fn nullable_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let raw: Vec<Option<f64>> = Deserialize::deserialize(d)?;
    Ok(raw.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

fn nullable_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metric;

    #[test]
    fn a_written_history_reads_back_with_nulls_as_nan() {
        let json = r#"{"monitor": "click.auc", "best_epoch": 0, "epochs": [{"epoch": 0,
            "train_loss": {"click": 0.41}, "valid": {"click.auc": 0.71, "click.logloss": 0.5, "loss": null},
            "seconds": 3.2, "samples_per_second": 100000.0,
            "loss_weights": {"click": null},
            "expert_usage": {"click": {"mean_weight": [0.25, null], "mean_entropy": null}}}],
            "label_correlation": {"click|buy": null}}"#;
        let h: History = serde_json::from_str(json).unwrap();
        assert_eq!(h.monitor, MetricKey::task("click", Metric::Auc));
        let best = h.best().unwrap();
        assert_eq!(best.valid[&MetricKey::task("click", Metric::Auc)], 0.71);
        assert!(best.valid[&MetricKey::Loss].is_nan());
        let gate = &best.expert_usage["click"];
        assert!(gate.mean_weight[0] == 0.25 && gate.mean_weight[1].is_nan() && gate.mean_entropy.is_nan());
        assert!(best.loss_weights["click"].is_nan() && h.label_correlation["click|buy"].is_nan());
        let written = serde_json::to_value(&h).unwrap();
        assert_eq!(written["epochs"][0]["valid"]["loss"], serde_json::Value::Null);
        assert!(written["epochs"][0].get("gradient_cosine").is_none(), "empty maps are left out: {written}");
    }

    #[test]
    fn the_kept_epoch_is_the_best_else_the_last() {
        let mut h = History::new(MetricKey::Loss);
        assert!(h.best_or_last().is_none());
        h.epochs = (0..3).map(|epoch| EpochRecord { epoch, ..Default::default() }).collect();
        assert_eq!(h.best_or_last().map(|e| e.epoch), Some(2));
        h.best_epoch = Some(1);
        assert_eq!(h.best_or_last().map(|e| e.epoch), Some(1));
    }
}
