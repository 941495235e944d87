//! Inference over encoded data, shared by prediction, evaluation, validation and serving: the
//! model's view of encoded columns, scoring a whole split with the packed model ([`crate::packed`]),
//! the validation metrics of a split, and the names of prediction columns.

use std::collections::BTreeMap;

use mtrec_schema::{EncodedDataset, FeatureColumn, GateStats, Metric, MetricKey, TaskType};
use rayon::prelude::*;

use crate::embedding::FeatureData;
use crate::loss::mean_task_loss;
use crate::model::{MultiTaskModel, Predictions};
use crate::packed::PackedModel;

impl<'a> From<&'a FeatureColumn> for FeatureData<'a> {
    fn from(column: &'a FeatureColumn) -> Self {
        match column {
            FeatureColumn::Ids(ids) => FeatureData::Ids(ids),
            FeatureColumn::Lists { offsets, values } => FeatureData::Lists { offsets, values },
            FeatureColumn::Values(v) => FeatureData::Values(v),
        }
    }
}

/// The model's view of encoded feature columns (a split's, or a request's).
pub fn feature_views(columns: &[FeatureColumn]) -> Vec<FeatureData<'_>> {
    columns.iter().map(FeatureData::from).collect()
}

/// Predictions for every row of `data`, in row order: batches scored in parallel (one per
/// thread at a time, as training's parts) by the model packed for inference, each exactly as
/// it would be alone.
pub fn predict_all(model: &MultiTaskModel, data: &EncodedDataset, batch_size: usize) -> Predictions {
    let packed = PackedModel::new(model);
    let features = feature_views(&data.features);
    let mut all =
        Predictions { rows: 0, outputs: vec![Vec::new(); model.heads.len()], gates: vec![None; model.heads.len()] };
    let rows: Vec<usize> = (0..data.rows).collect();
    let batches: Vec<Predictions> =
        rows.par_chunks(batch_size.max(1)).map(|chunk| packed.predict(model, &features, chunk)).collect();
    for p in batches {
        all.rows += p.rows;
        for (acc, out) in all.outputs.iter_mut().zip(p.outputs) {
            acc.extend(out);
        }
        for (acc, g) in all.gates.iter_mut().zip(p.gates) {
            if let Some(g) = g {
                acc.get_or_insert_with(Vec::new).extend(g);
            }
        }
    }
    all
}

/// The validation metrics of a split, and how the gated tasks used their experts on it.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Every task's [`Metric::validation`] metrics over its labeled rows (AUC is left out where
    /// only one class occurs), and [`MetricKey::Loss`]: Σ λ_i L_i over each task's labeled
    /// rows. Tasks without a labeled row have none.
    pub metrics: BTreeMap<MetricKey, f64>,
    /// Per MMoE or PLE task, its mean gate weight per expert and mean gate entropy (nats).
    pub expert_usage: BTreeMap<String, GateStats>,
}

/// Scores `data` and computes every task's validation metrics over its labeled rows: what the
/// trainer monitors on the valid split after every epoch, and experiments report on the test
/// split.
pub fn validation_metrics(model: &MultiTaskModel, data: &EncodedDataset, batch_size: usize) -> Validation {
    let mut set = ValidationSet::new(model);
    set.add(model, data, batch_size);
    set.finish(model)
}

/// A split scored part by part (its shards, one after another): the outputs, labels and masks
/// the metrics need, and running sums of the gates' weights, which are not kept per row.
#[derive(Debug, Clone)]
pub struct ValidationSet {
    rows: usize,
    /// Per task, `rows x outputs`.
    outputs: Vec<Vec<f32>>,
    labels: Vec<Vec<f32>>,
    masks: Vec<Vec<u8>>,
    /// Per gated task: the sum of each expert's weight and of the gate's entropy over rows.
    gates: Vec<Option<(Vec<f64>, f64)>>,
}

impl ValidationSet {
    pub fn new(model: &MultiTaskModel) -> Self {
        let tasks = model.heads.len();
        ValidationSet {
            rows: 0,
            outputs: vec![Vec::new(); tasks],
            labels: vec![Vec::new(); tasks],
            masks: vec![Vec::new(); tasks],
            gates: vec![None; tasks],
        }
    }

    /// Rows scored so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Scores `data` and keeps what the metrics need.
    pub fn add(&mut self, model: &MultiTaskModel, data: &EncodedDataset, batch_size: usize) {
        let predictions = predict_all(model, data, batch_size);
        self.rows += data.rows;
        for t in 0..model.heads.len() {
            self.outputs[t].extend_from_slice(&predictions.outputs[t]);
            self.labels[t].extend_from_slice(&data.labels[t]);
            self.masks[t].extend_from_slice(&data.masks[t]);
            let Some(g) = &predictions.gates[t] else { continue };
            if data.rows == 0 {
                continue;
            }
            let experts = g.len() / data.rows;
            let (weights, entropy) = self.gates[t].get_or_insert_with(|| (vec![0.0; experts], 0.0));
            for row in g.chunks_exact(experts) {
                for (m, &w) in weights.iter_mut().zip(row) {
                    *m += f64::from(w);
                }
                *entropy -= row.iter().filter(|&&w| w > 0.0).map(|&w| f64::from(w) * f64::from(w).ln()).sum::<f64>();
            }
        }
    }

    /// The metrics over every row added.
    pub fn finish(&self, model: &MultiTaskModel) -> Validation {
        Validation { metrics: self.metrics(model), expert_usage: self.expert_usage(model) }
    }

    fn metrics(&self, model: &MultiTaskModel) -> BTreeMap<MetricKey, f64> {
        let mut metrics = BTreeMap::new();
        let mut loss = 0.0;
        let unweighted = mtrec_metrics::UNWEIGHTED;
        for (t, head) in model.heads.iter().enumerate() {
            let keep: Vec<usize> = (0..self.rows).filter(|&r| self.masks[t][r] != 0).collect();
            if keep.is_empty() {
                continue;
            }
            let y: Vec<f32> = keep.iter().map(|&r| self.labels[t][r]).collect();
            let width = head.outputs;
            let out = &self.outputs[t];
            let p: Vec<f32> = keep.iter().flat_map(|&r| out[r * width..(r + 1) * width].iter().copied()).collect();
            let values: Vec<(Metric, Option<f64>)> = match head.kind {
                TaskType::Binary => vec![
                    (Metric::Auc, mtrec_metrics::auc(&p, &y, None)),
                    (Metric::Logloss, mtrec_metrics::logloss(&p, &y, unweighted)),
                ],
                TaskType::Regression => {
                    vec![(Metric::Rmse, mtrec_metrics::regression_metrics(&p, &y, unweighted).map(|m| m.rmse))]
                }
                TaskType::Multiclass => {
                    let m = mtrec_metrics::multiclass_metrics(&p, width, &y, unweighted);
                    vec![(Metric::Accuracy, m.map(|m| m.accuracy)), (Metric::Logloss, m.map(|m| m.logloss))]
                }
            };
            debug_assert!(values.iter().map(|(m, _)| *m).eq(Metric::validation(head.kind).iter().copied()));
            for (metric, value) in values {
                if let Some(value) = value {
                    metrics.insert(MetricKey::task(&head.name, metric), value);
                }
            }
            let task_loss =
                mean_task_loss(head.kind, width, model.config.regression_loss, &p, &y).expect("labeled rows");
            loss += f64::from(head.weight) * task_loss;
        }
        metrics.insert(MetricKey::Loss, loss);
        metrics
    }

    fn expert_usage(&self, model: &MultiTaskModel) -> BTreeMap<String, GateStats> {
        let n = self.rows as f64;
        model
            .heads
            .iter()
            .zip(&self.gates)
            .filter_map(|(head, gates)| {
                let (weights, entropy) = gates.as_ref()?;
                let mean_weight = weights.iter().map(|w| w / n).collect();
                Some((head.name.clone(), GateStats { mean_weight, mean_entropy: entropy / n }))
            })
            .collect()
    }
}

impl MultiTaskModel {
    /// Sets each `ln(1 + y)` regression head's residual variance from the kept epoch's
    /// validation metrics: its RMSE (on the training scale), squared. Prediction and serving
    /// need it for the label's mean in its units ([`crate::Head::label_mean`]); a head whose
    /// RMSE is unknown (no valid split, no labeled row) keeps none.
    pub fn set_residual_variances(&mut self, valid: &BTreeMap<MetricKey, f64>) {
        for head in self.heads.iter_mut().filter(|h| h.label_log1p) {
            let rmse = valid.get(&MetricKey::task(&head.name, Metric::Rmse));
            head.residual_variance = rmse.filter(|r| r.is_finite()).map(|r| r * r);
        }
    }
}

/// Names of the columns that hold predictions, in `mtrec predict`'s files and the scoring
/// API's Arrow answers.
pub mod columns {
    /// Task `task`'s score: `pred.<task>` (probability, value in the label's units, or top
    /// class).
    pub fn pred(task: &str) -> String {
        format!("pred.{task}")
    }

    /// A regression learned as `ln(1 + y)`: the model's own output, on that scale,
    /// `pred.<task>.log1p`.
    pub fn pred_log1p(task: &str) -> String {
        format!("pred.{task}.log1p")
    }

    /// A regression learned as `ln(1 + y)`: the label's mean in its units under a log-normal
    /// error, `pred.<task>.mean` (where training measured the residual variance).
    pub fn pred_mean(task: &str) -> String {
        format!("pred.{task}.mean")
    }

    /// One class probability of a multiclass task: `prob.<task>.<class>`.
    pub fn prob(task: &str, class: &str) -> String {
        format!("prob.{task}.{class}")
    }

    /// An MMoE or PLE gate weight: `gate.<task>.<expert>`.
    pub fn gate(task: &str, expert: usize) -> String {
        format!("gate.{task}.{expert}")
    }
}

/// One task's outputs as the columns a prediction file or an Arrow answer holds.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictionValues {
    /// Model outputs as computed: probabilities, regression outputs on the training scale.
    Numbers(Vec<f32>),
    /// Regression values in the label's units (`exp_m1` of a log-scale output can exceed
    /// what `f32` represents exactly).
    LabelUnits(Vec<f64>),
    Classes(Vec<String>),
}

/// The prediction columns of `tasks` (indices into `model.heads`) for `rows` rows of
/// `outputs` (per task, `rows x outputs`): `pred.<task>` (probability, value in the label's
/// units, or top class); for a regression learned as `ln(1 + y)`, `pred.<task>.log1p` (the
/// output itself) and, where the residual variance is known, `pred.<task>.mean`; for
/// multiclass tasks, `prob.<task>.<class>` per class.
pub fn prediction_columns(
    model: &MultiTaskModel,
    outputs: &[Vec<f32>],
    tasks: &[usize],
    rows: usize,
) -> Vec<(String, PredictionValues)> {
    let mut out = Vec::new();
    for &t in tasks {
        let head = &model.heads[t];
        let values = &outputs[t][..rows * head.outputs];
        match head.kind {
            TaskType::Binary => {
                out.push((columns::pred(&head.name), PredictionValues::Numbers(values.to_vec())));
            }
            TaskType::Regression => {
                let label_units = values.iter().map(|&v| head.to_label_units(v)).collect();
                out.push((columns::pred(&head.name), PredictionValues::LabelUnits(label_units)));
                if head.label_log1p {
                    out.push((columns::pred_log1p(&head.name), PredictionValues::Numbers(values.to_vec())));
                }
                if head.residual_variance.is_some() {
                    let means = values.iter().filter_map(|&v| head.label_mean(v)).collect();
                    out.push((columns::pred_mean(&head.name), PredictionValues::LabelUnits(means)));
                }
            }
            TaskType::Multiclass => {
                let c = head.outputs;
                let top = values
                    .chunks_exact(c)
                    .map(|row| head.classes[mtrec_metrics::predicted_class(row)].clone())
                    .collect();
                out.push((columns::pred(&head.name), PredictionValues::Classes(top)));
                for (k, class) in head.classes.iter().enumerate() {
                    let probs = values.chunks_exact(c).map(|row| row[k]).collect();
                    out.push((columns::prob(&head.name, class), PredictionValues::Numbers(probs)));
                }
            }
        }
    }
    out
}
