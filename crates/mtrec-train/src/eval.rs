//! Scoring a whole split in batches with the model's one forward function, and the
//! validation metrics computed from the scores.

use std::collections::BTreeMap;

use mtrec_ingest::encoded::{EncodedDataset, FeatureColumn};
use mtrec_model::{FeatureData, MultiTaskModel, Predictions, RegressionLoss};
use mtrec_schema::TaskType;
use rayon::prelude::*;

/// The model's view of an encoded split's feature columns.
pub fn feature_data(data: &EncodedDataset) -> Vec<FeatureData<'_>> {
    feature_views(&data.features)
}

/// The model's view of encoded feature columns (a split's, or a request's).
pub fn feature_views(columns: &[FeatureColumn]) -> Vec<FeatureData<'_>> {
    columns
        .iter()
        .map(|c| match c {
            FeatureColumn::Ids(ids) => FeatureData::Ids(ids),
            FeatureColumn::Lists { offsets, values } => FeatureData::Lists { offsets, values },
            FeatureColumn::Values(v) => FeatureData::Values(v),
        })
        .collect()
}

/// Predictions for every row of `data`, in row order: batches scored in parallel (one per
/// thread at a time, as training's parts), each exactly as it would be alone.
pub fn predict_all(model: &MultiTaskModel, data: &EncodedDataset, batch_size: usize) -> Predictions {
    let features = feature_data(data);
    let mut all =
        Predictions { rows: 0, outputs: vec![Vec::new(); model.heads.len()], gates: vec![None; model.heads.len()] };
    let rows: Vec<usize> = (0..data.rows).collect();
    let batches: Vec<Predictions> =
        rows.par_chunks(batch_size.max(1)).map(|chunk| model.predict(&features, chunk)).collect();
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

/// Predictions and the metrics over them.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub predictions: Predictions,
    /// `<task>.auc`, `<task>.logloss` (binary), `<task>.rmse` (regression), `<task>.accuracy`,
    /// `<task>.logloss` (multiclass), and `loss`: Σ λ_i L_i over the labeled rows.
    pub metrics: BTreeMap<String, f64>,
}

/// Scores `data` and computes the metrics of every task over its labeled rows.
pub fn evaluate(model: &MultiTaskModel, data: &EncodedDataset, batch_size: usize) -> Evaluation {
    let predictions = predict_all(model, data, batch_size);
    let mut metrics = BTreeMap::new();
    let mut loss = 0.0;
    for (t, head) in model.heads.iter().enumerate() {
        let keep: Vec<usize> = (0..data.rows).filter(|&r| data.masks[t][r] != 0).collect();
        if keep.is_empty() {
            continue;
        }
        let y: Vec<f32> = keep.iter().map(|&r| data.labels[t][r]).collect();
        let out = &predictions.outputs[t];
        let name = &head.name;
        match head.kind {
            TaskType::Binary => {
                let p: Vec<f32> = keep.iter().map(|&r| out[r]).collect();
                if let Some(auc) = mtrec_metrics::auc(&p, &y, None) {
                    metrics.insert(format!("{name}.auc"), auc);
                }
                let ll = mtrec_metrics::logloss(&p, &y).expect("non-empty");
                metrics.insert(format!("{name}.logloss"), ll);
                loss += f64::from(head.weight) * ll;
            }
            TaskType::Regression => {
                let p: Vec<f32> = keep.iter().map(|&r| out[r]).collect();
                let rmse = mtrec_metrics::rmse(&p, &y).expect("non-empty");
                metrics.insert(format!("{name}.rmse"), rmse);
                let l = match model.config.regression_loss {
                    RegressionLoss::Mse => rmse * rmse,
                    RegressionLoss::Huber { delta } => {
                        let d = f64::from(delta);
                        p.iter()
                            .zip(&y)
                            .map(|(&a, &b)| {
                                let e = (f64::from(a) - f64::from(b)).abs();
                                if e <= d {
                                    0.5 * e * e
                                } else {
                                    d * (e - 0.5 * d)
                                }
                            })
                            .sum::<f64>()
                            / p.len() as f64
                    }
                };
                loss += f64::from(head.weight) * l;
            }
            TaskType::Multiclass => {
                let c = head.outputs;
                let p: Vec<f32> = keep.iter().flat_map(|&r| out[r * c..(r + 1) * c].iter().copied()).collect();
                let (acc, ll) = mtrec_metrics::multiclass(&p, c, &y).expect("non-empty");
                metrics.insert(format!("{name}.accuracy"), acc);
                metrics.insert(format!("{name}.logloss"), ll);
                loss += f64::from(head.weight) * ll;
            }
        }
    }
    metrics.insert("loss".to_owned(), loss);
    Evaluation { predictions, metrics }
}
