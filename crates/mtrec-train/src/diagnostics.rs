//! Task-relatedness diagnostics, recorded in `history.json` and shown in the reports:
//!
//! - **gradient cosine**, per epoch: the cosine similarity between two tasks' gradients on
//!   the dense parameters both reach (the shared network), on a fixed diagnostic batch (the
//!   first rows of the train split). Negative values mean the tasks pull the shared
//!   parameters apart: the conflict PCGrad removes.
//! - **expert usage**, per epoch: for MMoE and PLE, each task's mean gate weight per expert
//!   and mean gate entropy (nats) on the valid split.
//! - **label correlation**, once: Pearson's r between two tasks' labels over the train rows
//!   where both are labeled (binary and regression tasks; a multiclass label is a class index,
//!   not a quantity).
//!
//! Pairs are keyed by [`task_pair_key`]: `"<task a>|<task b>"` with `a` before `b` in task
//! order.

use std::collections::BTreeMap;

use mtrec_model::{feature_views, MultiTaskModel, Predictions};
use mtrec_schema::{task_pair_key, EncodedDataset, GateStats, TaskType};

use crate::error::TrainError;
use crate::step::task_gradients;

/// Rows of the diagnostic batch.
pub const DIAGNOSTIC_ROWS: usize = 1024;

/// Cosine similarity between every two tasks' gradients on their common dense parameters
/// (pairs whose gradients do not both reach a shared parameter are left out).
pub fn gradient_cosines(model: &MultiTaskModel, data: &EncodedDataset) -> Result<BTreeMap<String, f64>, TrainError> {
    let rows: Vec<usize> = (0..data.rows.min(DIAGNOSTIC_ROWS)).collect();
    let features = feature_views(&data.features);
    let leaf = model.assemble(&features, &rows).input;
    let (labels, masks) = data.targets(&rows);
    let grads = task_gradients(model, &leaf, None, &labels, &masks, &|_| 1.0)?;
    let shared = grads.shared_parameters();
    let mut out = BTreeMap::new();
    let tasks = model.heads.len();
    for a in 0..tasks {
        for b in a + 1..tasks {
            let (Some(ga), Some(gb)) = (&grads.dense[a], &grads.dense[b]) else { continue };
            let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
            for &p in &shared {
                for (x, y) in ga[p].iter().zip(&gb[p]) {
                    let (x, y) = (f64::from(*x), f64::from(*y));
                    dot += x * y;
                    na += x * x;
                    nb += y * y;
                }
            }
            if na > 0.0 && nb > 0.0 {
                out.insert(task_pair_key(&model.heads[a].name, &model.heads[b].name), dot / (na.sqrt() * nb.sqrt()));
            }
        }
    }
    Ok(out)
}

/// Each gated task's mean gate weight per expert and mean gate entropy over `predictions`.
pub fn expert_usage(model: &MultiTaskModel, predictions: &Predictions) -> BTreeMap<String, GateStats> {
    let mut out = BTreeMap::new();
    for (head, gates) in model.heads.iter().zip(&predictions.gates) {
        let Some(g) = gates else { continue };
        if predictions.rows == 0 {
            continue;
        }
        let experts = g.len() / predictions.rows;
        let mut mean_weight = vec![0.0f64; experts];
        let mut entropy = 0.0f64;
        for row in g.chunks_exact(experts) {
            for (m, &w) in mean_weight.iter_mut().zip(row) {
                *m += f64::from(w);
            }
            entropy -= row.iter().filter(|&&w| w > 0.0).map(|&w| f64::from(w) * f64::from(w).ln()).sum::<f64>();
        }
        let n = predictions.rows as f64;
        mean_weight.iter_mut().for_each(|m| *m /= n);
        out.insert(head.name.clone(), GateStats { mean_weight, mean_entropy: entropy / n });
    }
    out
}

/// Pearson's r between every two binary or regression tasks' labels, over the rows where both
/// are labeled (pairs with fewer than two such rows, or a constant label, are left out).
pub fn label_correlations(model: &MultiTaskModel, data: &EncodedDataset) -> BTreeMap<String, f64> {
    let quantitative: Vec<usize> =
        (0..model.heads.len()).filter(|&t| model.heads[t].kind != TaskType::Multiclass).collect();
    let mut out = BTreeMap::new();
    for (i, &a) in quantitative.iter().enumerate() {
        for &b in &quantitative[i + 1..] {
            let both: Vec<(f64, f64)> = (0..data.rows)
                .filter(|&r| data.masks[a][r] != 0 && data.masks[b][r] != 0)
                .map(|r| (f64::from(data.labels[a][r]), f64::from(data.labels[b][r])))
                .collect();
            if let Some(r) = pearson(&both) {
                out.insert(task_pair_key(&model.heads[a].name, &model.heads[b].name), r);
            }
        }
    }
    out
}

fn pearson(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 2 {
        return None;
    }
    let n = pairs.len() as f64;
    let (mx, my) = pairs.iter().fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (mx / n, my / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_matches_hand_computed_values() {
        assert!((pearson(&[(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&[(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]).unwrap() + 1.0).abs() < 1e-12);
        // x = [0, 0, 1, 1], y = [0, 1, 0, 1]: uncorrelated.
        assert_eq!(pearson(&[(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]), Some(0.0));
        assert_eq!(pearson(&[(1.0, 1.0), (1.0, 2.0)]), None, "a constant label has no correlation");
    }
}
