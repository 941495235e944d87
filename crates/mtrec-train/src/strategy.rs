//! Loss weighting and gradient strategies, chosen with `loss_strategy` in the training config.
//!
//! | `type` | reference | what a step does | cost per step |
//! | --- | --- | --- | --- |
//! | `static` | — | L = Σ λ_i L_i (+ Ω) | one forward and backward |
//! | `uncertainty` | Kendall, Gal and Cipolla, CVPR 2018 | learned log-variances s_i: L = Σ λ_i (c_i e^{−s_i} L_i + s_i/2) | one forward and backward |
//! | `dwa` | Liu, Johns and Davison, CVPR 2019 (dynamic weight average) | L = Σ λ_i w_i L_i with w_i = K exp(r_i/T) / Σ_j exp(r_j/T), r_i = L_i(e−1)/L_i(e−2) from the mean training losses of the last two epochs (w_i = 1 in the first two epochs) | one forward and backward (the weights change once per epoch) |
//! | `gradnorm` | Chen et al., ICML 2018 | L = Σ w_i L_i with learned w_i: after each step, with G_i = w_i ‖∇_W L_i‖ on the last shared layer W, r_i = (L_i/L_i(0)) / mean_j(L_j/L_j(0)) and the target Ḡ r_i^α (held constant), w_i moves by −lr · ∂/∂w_i Σ_j abs(G_j − Ḡ r_j^α) and the weights are renormalized to sum to K | one forward and backward **per task** (K of each) |
//! | `pcgrad` | Yu et al., NeurIPS 2020 (gradient surgery) | per-task gradients g_i of λ_i L_i; on the shared parameters each g_i is projected, against the other tasks' original gradients in a random order, off every g_j it conflicts with (g_i · g_j < 0): g_i ← g_i − (g_i · g_j / ‖g_j‖²) g_j; the projected gradients are summed. Task-specific parameters and the embedding rows get the plain sum | one forward and backward **per task** (K of each) plus O(K² · shared parameters) for the projections |
//!
//! With K tasks, `gradnorm` and `pcgrad` do about K times a `static` step's work: dfdx 0.13
//! keeps one tape per forward pass and `backward` consumes it, so each task's gradient needs
//! its own forward pass. The tasks' passes run one per thread (a `static` step instead cuts its
//! batch into one part per thread). Where Ω (soft sharing) is part of the loss it is added
//! once, unprojected.
//!
//! Which parameters are shared (for PCGrad): those that receive a non-zero gradient from two or
//! more tasks in the step: the scope group's sharing network (a task's own tower, head, gate or
//! PLE experts of the last level receive only its own). GradNorm's W for each task is
//! [`mtrec_model::MultiTaskModel::gradnorm_params`]: its group's last shared layer, or, where
//! the architecture shares none (single-task, soft sharing), the first layer of the task's tower
//! (its head without a tower).

use std::collections::BTreeMap;

use mtrec_model::MultiTaskModel;
use mtrec_schema::History;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::gradients::{add_scaled, TaskGradients};

/// `loss_strategy` in the training config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossStrategy {
    /// L = Σ λ_i L_i; with `model.loss_weighting: "uncertainty"`, the same as `uncertainty`.
    #[default]
    Static,
    /// Homoscedastic uncertainty weighting (sets the model's `loss_weighting` to `uncertainty`).
    Uncertainty,
    /// GradNorm: `alpha` is the asymmetry (the paper uses 0.5 – 3; 1.5 is common), `lr` the
    /// step size of the weights.
    #[serde(rename = "gradnorm")]
    GradNorm { alpha: f64, lr: f64 },
    /// Dynamic weight average with temperature `temperature` (the paper uses 2).
    Dwa { temperature: f64 },
    /// Projecting conflicting gradients on the shared parameters.
    Pcgrad,
}

impl LossStrategy {
    pub fn name(&self) -> &'static str {
        match self {
            LossStrategy::Static => "static",
            LossStrategy::Uncertainty => "uncertainty",
            LossStrategy::GradNorm { .. } => "gradnorm",
            LossStrategy::Dwa { .. } => "dwa",
            LossStrategy::Pcgrad => "pcgrad",
        }
    }

    /// Whether a step needs one backward pass per task.
    pub fn per_task_gradients(&self) -> bool {
        matches!(self, LossStrategy::GradNorm { .. } | LossStrategy::Pcgrad)
    }

    /// The weight of task loss L_t in its own backward pass, given its λ_t: GradNorm's passes
    /// are unweighted (its learned weights apply when the gradients are combined).
    pub(crate) fn pass_weight(&self, lambda: f32) -> f32 {
        match self {
            LossStrategy::GradNorm { .. } => 1.0,
            _ => lambda,
        }
    }

    /// DWA's task weights for the next epoch from the history's mean training losses (multiplying
    /// each λ), `None` for the other strategies.
    pub(crate) fn epoch_weights(&self, model: &MultiTaskModel, history: &History) -> Option<Vec<f64>> {
        let LossStrategy::Dwa { temperature } = *self else { return None };
        let n = history.epochs.len();
        let losses = |back: usize| -> Vec<Option<f64>> {
            model
                .heads
                .iter()
                .map(|h| n.checked_sub(back).and_then(|e| history.epochs[e].train_loss.get(&h.name).copied()))
                .collect()
        };
        Some(dwa_weights(&losses(1), &losses(2), temperature))
    }

    /// The task weights to record for an epoch: DWA's for the epoch, GradNorm's as they stand,
    /// none for the other strategies.
    pub(crate) fn recorded_weights(
        &self,
        model: &MultiTaskModel,
        dwa: Option<&[f64]>,
        state: &StrategyState,
    ) -> BTreeMap<String, f64> {
        let named = |w: &[f64]| model.heads.iter().zip(w).map(|(h, w)| (h.name.clone(), *w)).collect();
        match (dwa, self) {
            (Some(w), _) => named(w),
            (None, LossStrategy::GradNorm { .. }) if !state.weights.is_empty() => named(&state.weights),
            _ => BTreeMap::new(),
        }
    }

    /// GradNorm's or PCGrad's step gradient from each task's gradients: per dense parameter,
    /// and on the assembled input (`input_len` values). GradNorm weighs each task by its
    /// learned weight, then updates the weights from this step's losses and gradient norms
    /// (they apply from the next step); PCGrad projects conflicting gradients on the shared
    /// parameters (in an order drawn from `step_seed`) and sums the rest.
    pub(crate) fn combine(
        &self,
        state: &mut StrategyState,
        model: &MultiTaskModel,
        grads: &TaskGradients,
        input_len: usize,
        step_seed: u64,
    ) -> (Vec<Vec<f32>>, Vec<f32>) {
        let mut dense: Vec<Vec<f32>> = model.params.ids().map(|id| vec![0.0; model.params.numel(id)]).collect();
        let mut input = vec![0.0f32; input_len];
        match *self {
            LossStrategy::GradNorm { alpha, lr } => {
                gradnorm_combine(state, model, grads, &mut dense, &mut input, alpha, lr)
            }
            LossStrategy::Pcgrad => pcgrad_combine(grads, &mut dense, &mut input, step_seed),
            other => unreachable!("{} takes one backward pass per batch", other.name()),
        }
        (dense, input)
    }
}

/// GradNorm's combination and weight update; see [`LossStrategy::combine`].
fn gradnorm_combine(
    state: &mut StrategyState,
    model: &MultiTaskModel,
    grads: &TaskGradients,
    dense: &mut [Vec<f32>],
    input: &mut [f32],
    alpha: f64,
    lr: f64,
) {
    let tasks = model.heads.len();
    if state.weights.len() != tasks {
        state.weights = vec![1.0; tasks];
        state.initial_losses = vec![None; tasks];
    }
    for t in 0..tasks {
        if let (Some(d), Some(i)) = (&grads.dense[t], &grads.input[t]) {
            let c = state.weights[t] as f32;
            for (acc, g) in dense.iter_mut().zip(d) {
                add_scaled(acc, g, c);
            }
            add_scaled(input, i, c);
        }
    }
    let mut norms = vec![None; tasks];
    let mut ratios = vec![None; tasks];
    for t in 0..tasks {
        let (Some(d), Some(l)) = (&grads.dense[t], grads.values[t]) else { continue };
        let l = f64::from(l);
        let l0 = *state.initial_losses[t].get_or_insert(l);
        let sq: f64 = model.gradnorm_params(t).iter().flat_map(|id| &d[id.0]).map(|g| f64::from(*g).powi(2)).sum();
        norms[t] = Some(sq.sqrt());
        ratios[t] = (l0 > 0.0).then(|| l / l0);
    }
    gradnorm_update(&mut state.weights, &norms, &ratios, alpha, lr);
}

/// PCGrad's combination; see [`LossStrategy::combine`].
fn pcgrad_combine(grads: &TaskGradients, dense: &mut [Vec<f32>], input: &mut [f32], step_seed: u64) {
    let present = grads.present();
    let shared = grads.shared_parameters();
    let flat: Vec<Vec<f32>> = present
        .iter()
        .map(|&t| {
            let d = grads.dense[t].as_ref().expect("present");
            shared.iter().flat_map(|&p| d[p].iter().copied()).collect()
        })
        .collect();
    let projected = pcgrad_project(&flat, &mut StdRng::seed_from_u64(step_seed));
    for (k, &t) in present.iter().enumerate() {
        let d = grads.dense[t].as_ref().expect("present");
        let mut at = 0;
        for p in 0..dense.len() {
            if shared.binary_search(&p).is_ok() {
                let len = dense[p].len();
                add_scaled(&mut dense[p], &projected[k][at..at + len], 1.0);
                at += len;
            } else {
                add_scaled(&mut dense[p], &d[p], 1.0);
            }
        }
        add_scaled(input, grads.input[t].as_ref().expect("present"), 1.0);
    }
}

/// State a strategy carries between steps (saved in checkpoints).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StrategyState {
    /// GradNorm's task weights (empty before the first step).
    #[serde(default)]
    pub weights: Vec<f64>,
    /// GradNorm's L_i(0): each task's loss at the first step where it had a label.
    #[serde(default)]
    pub initial_losses: Vec<Option<f64>>,
}

/// DWA's weights for the coming epoch from the mean training losses of the last two epochs
/// (`last`: epoch e−1, `before`: e−2; `None` where a task had no label or there is no such
/// epoch yet, which gives it a ratio of 1). The weights sum to the number of tasks.
pub fn dwa_weights(last: &[Option<f64>], before: &[Option<f64>], temperature: f64) -> Vec<f64> {
    let k = last.len();
    let ratios: Vec<f64> = last
        .iter()
        .zip(before)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if *b > 0.0 && a.is_finite() && b.is_finite() => a / b,
            _ => 1.0,
        })
        .collect();
    let top = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = ratios.iter().map(|r| ((r - top) / temperature).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| k as f64 * x / sum).collect()
}

/// One GradNorm update of `weights` (in place). `norms[i]` = ‖∇_W L_i‖ of the unweighted loss,
/// `ratios[i]` = L_i(t) / L_i(0); tasks with `None` (no label in the step) keep their weight
/// and take no part. Tasks that train slower than the others (a larger loss ratio) or whose
/// weighted gradient norm is below the target gain weight; the weights are renormalized to sum
/// to the number of tasks (and stay above a small floor).
pub fn gradnorm_update(weights: &mut [f64], norms: &[Option<f64>], ratios: &[Option<f64>], alpha: f64, lr: f64) {
    let active: Vec<usize> = (0..weights.len()).filter(|&i| norms[i].is_some() && ratios[i].is_some()).collect();
    if active.len() < 2 {
        return;
    }
    let n = active.len() as f64;
    let g: Vec<f64> = active.iter().map(|&i| weights[i] * norms[i].unwrap_or(0.0)).collect();
    let g_mean = g.iter().sum::<f64>() / n;
    let r_mean = active.iter().map(|&i| ratios[i].unwrap_or(1.0)).sum::<f64>() / n;
    for (j, &i) in active.iter().enumerate() {
        let target = g_mean * (ratios[i].unwrap_or(1.0) / r_mean).powf(alpha);
        let d = g[j] - target;
        let grad = if d > 0.0 {
            1.0
        } else if d < 0.0 {
            -1.0
        } else {
            0.0
        } * norms[i].unwrap_or(0.0);
        weights[i] = (weights[i] - lr * grad).max(1e-3);
    }
    let k = weights.len() as f64;
    let sum: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w *= k / sum);
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

/// PCGrad's projection: each task's gradient, projected off the original gradients of the
/// other tasks it conflicts with, visited in a random order. Returns the projected gradients
/// (sum them for the update).
pub fn pcgrad_project(grads: &[Vec<f32>], rng: &mut impl Rng) -> Vec<Vec<f32>> {
    let k = grads.len();
    (0..k)
        .map(|i| {
            let mut g = grads[i].clone();
            let mut others: Vec<usize> = (0..k).filter(|&j| j != i).collect();
            others.shuffle(rng);
            for j in others {
                let d = dot(&g, &grads[j]);
                let nn = dot(&grads[j], &grads[j]);
                if d < 0.0 && nn > 0.0 {
                    let c = (d / nn) as f32;
                    g.iter_mut().zip(&grads[j]).for_each(|(x, y)| *x -= c * y);
                }
            }
            g
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn pcgrad_removes_the_conflicting_component_and_keeps_agreeing_gradients() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // Negative cosine: g1 · g2 = -1 + 0.5 = -0.5.
        let g1 = vec![1.0f32, 1.0];
        let g2 = vec![-1.0f32, 0.5];
        let p = pcgrad_project(&[g1.clone(), g2.clone()], &mut rng);
        assert!(dot(&p[0], &g2) >= -1e-6 && dot(&p[1], &g1) >= -1e-6, "{p:?}");
        // Hand-computed: g1 - (g1·g2/|g2|²) g2 = (1,1) + (0.5/1.25)(-1,0.5) = (0.6, 1.2);
        // g2 - (g2·g1/|g1|²) g1 = (-1,0.5) + (0.5/2)(1,1) = (-0.75, 0.75).
        for (got, want) in p.iter().flatten().zip([0.6f32, 1.2, -0.75, 0.75]) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
        // Non-conflicting gradients are left as they are.
        let a = vec![1.0f32, 0.0, 2.0];
        let b = vec![0.5f32, 3.0, 0.0];
        assert_eq!(pcgrad_project(&[a.clone(), b.clone()], &mut rng), vec![a, b]);
    }

    #[test]
    fn dwa_weights_follow_the_loss_ratios() {
        // Before two epochs of history every weight is 1.
        assert_eq!(dwa_weights(&[Some(0.5), Some(0.4)], &[None, None], 2.0), vec![1.0, 1.0]);
        // Ratios 0.5 and 1.0, T = 2: w = 2 e^{r/2} / (e^{0.25} + e^{0.5}).
        let w = dwa_weights(&[Some(0.5), Some(0.8)], &[Some(1.0), Some(0.8)], 2.0);
        let (e1, e2) = (0.25f64.exp(), 0.5f64.exp());
        let want = [2.0 * e1 / (e1 + e2), 2.0 * e2 / (e1 + e2)];
        assert!((w[0] - want[0]).abs() < 1e-12 && (w[1] - want[1]).abs() < 1e-12, "{w:?} vs {want:?}");
        assert!((w[0] - 0.875_65).abs() < 1e-5, "{w:?}");
        // The task whose loss fell less gets the larger weight; the weights sum to K.
        assert!(w[1] > w[0] && (w.iter().sum::<f64>() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn gradnorm_raises_the_weight_of_the_slower_task_and_keeps_the_sum() {
        // Equal gradient norms; task 0's loss fell less (ratio 0.9 against 0.5): it is behind,
        // so its target norm is above the mean and its weight must grow.
        let mut w = vec![1.0, 1.0];
        gradnorm_update(&mut w, &[Some(2.0), Some(2.0)], &[Some(0.9), Some(0.5)], 1.5, 0.01);
        assert!(w[0] > 1.0 && w[1] < 1.0, "{w:?}");
        assert!((w[0] + w[1] - 2.0).abs() < 1e-12);
        // Hand-computed: both move by lr · norm = 0.02 before renormalization (sum stays 2).
        assert!((w[0] - 1.02).abs() < 1e-12 && (w[1] - 0.98).abs() < 1e-12, "{w:?}");
        // Equal ratios, task 1's gradient norm larger: weight moves to task 0.
        let mut w = vec![1.0, 1.0];
        gradnorm_update(&mut w, &[Some(1.0), Some(3.0)], &[Some(0.7), Some(0.7)], 1.5, 0.01);
        assert!(w[0] > 1.0 && w[1] < 1.0, "{w:?}");
        // A task without a label this step keeps out of it.
        let mut w = vec![1.0, 1.0, 1.0];
        gradnorm_update(&mut w, &[Some(1.0), None, Some(3.0)], &[Some(0.7), None, Some(0.7)], 1.5, 0.01);
        assert!(w[0] > w[1] && w[1] > w[2], "{w:?}");
    }
}
