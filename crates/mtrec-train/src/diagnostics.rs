//! Task-relatedness diagnostics, recorded in `history.json` and shown in the reports:
//!
//! - **gradient cosine**, per epoch: the cosine similarity between two tasks' gradients on
//!   the dense parameters both reach (the shared network), on a fixed diagnostic batch (the
//!   first rows of the train split). Negative values mean the tasks pull the shared
//!   parameters apart: the conflict PCGrad removes.
//! - **expert usage**, per epoch: for MMoE and PLE, each task's mean gate weight per expert
//!   and mean gate entropy (nats) on the valid split ([`mtrec_model::ValidationSet`]).
//! - **label correlation**, once: Pearson's r between two tasks' labels over the train rows
//!   where both are labeled (binary and regression tasks; a multiclass label is a class index,
//!   not a quantity).
//!
//! Pairs are keyed by [`task_pair_key`]: `"<task a>|<task b>"` with `a` before `b` in task
//! order.

use std::collections::BTreeMap;

use mtrec_model::{feature_views, MultiTaskModel};
use mtrec_schema::{task_pair_key, EncodedDataset, TaskType};

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

/// Pearson's r between every two binary or regression tasks' labels, over the rows where both
/// are labeled, gathered part by part (pairs with fewer than two such rows, or a constant
/// label, are left out).
#[derive(Debug, Clone)]
pub struct LabelCorrelations {
    /// `(task a, task b, co-moments)` of every pair of quantitative tasks.
    pairs: Vec<(usize, usize, CoMoments)>,
}

impl LabelCorrelations {
    pub fn new(model: &MultiTaskModel) -> Self {
        let quantitative: Vec<usize> =
            (0..model.heads.len()).filter(|&t| model.heads[t].kind != TaskType::Multiclass).collect();
        let mut pairs = Vec::new();
        for (i, &a) in quantitative.iter().enumerate() {
            for &b in &quantitative[i + 1..] {
                pairs.push((a, b, CoMoments::default()));
            }
        }
        LabelCorrelations { pairs }
    }

    /// Adds the rows of `data` (only its labels and masks are read).
    pub fn add(&mut self, data: &EncodedDataset) {
        for (a, b, m) in &mut self.pairs {
            let (la, lb, ma, mb) = (&data.labels[*a], &data.labels[*b], &data.masks[*a], &data.masks[*b]);
            for r in (0..data.rows).filter(|&r| ma[r] != 0 && mb[r] != 0) {
                m.add(f64::from(la[r]), f64::from(lb[r]));
            }
        }
    }

    pub fn finish(&self, model: &MultiTaskModel) -> BTreeMap<String, f64> {
        self.pairs
            .iter()
            .filter_map(|(a, b, m)| Some((task_pair_key(&model.heads[*a].name, &model.heads[*b].name), m.pearson()?)))
            .collect()
    }
}

/// Running means and co-moments of pairs (Welford's update, exact up to rounding).
#[derive(Debug, Clone, Copy, Default)]
struct CoMoments {
    n: u64,
    mean_x: f64,
    mean_y: f64,
    sxx: f64,
    syy: f64,
    sxy: f64,
}

impl CoMoments {
    fn add(&mut self, x: f64, y: f64) {
        self.n += 1;
        let n = self.n as f64;
        let (dx, dy) = (x - self.mean_x, y - self.mean_y);
        self.mean_x += dx / n;
        self.mean_y += dy / n;
        self.sxx += dx * (x - self.mean_x);
        self.syy += dy * (y - self.mean_y);
        self.sxy += dx * (y - self.mean_y);
    }

    fn pearson(&self) -> Option<f64> {
        (self.n >= 2 && self.sxx > 0.0 && self.syy > 0.0).then(|| self.sxy / (self.sxx * self.syy).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_matches_hand_computed_values() {
        let pearson = |pairs: &[(f64, f64)]| {
            let mut m = CoMoments::default();
            pairs.iter().for_each(|&(x, y)| m.add(x, y));
            m.pearson()
        };
        assert!((pearson(&[(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&[(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]).unwrap() + 1.0).abs() < 1e-12);
        // x = [0, 0, 1, 1], y = [0, 1, 0, 1]: uncorrelated.
        assert_eq!(pearson(&[(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]), Some(0.0));
        assert_eq!(pearson(&[(1.0, 1.0), (1.0, 2.0)]), None, "a constant label has no correlation");
    }
}
