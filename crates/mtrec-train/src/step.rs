//! One training step: the batch's forward and backward passes, the gradients taken out of
//! dfdx's tape, and the dense and sparse updates.
//!
//! With the static, uncertainty and DWA strategies a step is data-parallel: the batch is cut
//! into one part per thread, each part runs its forward and backward pass on its own thread
//! (dfdx's tapes are per thread), and the gradients are summed in part order, weighted so that
//! the sum is the whole batch's gradient. GradNorm and PCGrad take one backward pass per task
//! instead and hand the per-task gradients to their strategy to combine.

use dfdx::prelude::*;
use mtrec_model::{feature_views, Assembled, BatchIds, FeatureData, InputCodes, Mat, MultiTaskModel};
use mtrec_model::{AdamConfig, AdamState, SparseOptimizer};
use mtrec_schema::EncodedDataset;
use rayon::prelude::*;

use crate::error::TrainError;
use crate::gradients::{add_scaled, TaskGradients};
use crate::strategy::{LossStrategy, StrategyState};

/// The optimizers and the loss strategy's state, threaded through the steps.
#[derive(Debug)]
pub struct Optimizers<'a> {
    pub adam: &'a mut AdamState,
    pub sparse: &'a mut SparseOptimizer,
    pub adam_cfg: &'a AdamConfig,
    pub strategy: &'a mut StrategyState,
}

/// What one step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Each task's unweighted loss on the batch (`None`: no labeled row).
    pub losses: Vec<Option<f32>>,
    /// The soft-sharing penalty Ω, where the architecture has one.
    pub penalty: Option<f32>,
}

/// One training step on `rows` with the static, uncertainty or DWA strategy (`scale`: DWA's
/// weights, multiplying λ), or with GradNorm or PCGrad (per-task backward passes).
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &mut MultiTaskModel,
    opt: &mut Optimizers<'_>,
    strategy: LossStrategy,
    data: &EncodedDataset,
    rows: &[usize],
    scale: Option<&[f64]>,
    seed: u64,
) -> Result<StepOutcome, TrainError> {
    let features = feature_views(&data.features);
    let lambdas: Vec<f32> =
        model.heads.iter().enumerate().map(|(t, h)| h.weight * scale.map_or(1.0, |s| s[t] as f32)).collect();
    if strategy.per_task_gradients() {
        per_task_step(model, opt, strategy, data, &features, rows, &lambdas, seed)
    } else {
        data_parallel_step(model, opt, data, &features, rows, &lambdas)
    }
}

/// A step with GradNorm or PCGrad: one backward pass per task, the gradients combined by the
/// strategy, Ω added once and unprojected.
#[allow(clippy::too_many_arguments)]
fn per_task_step(
    model: &mut MultiTaskModel,
    opt: &mut Optimizers<'_>,
    strategy: LossStrategy,
    data: &EncodedDataset,
    features: &[FeatureData<'_>],
    rows: &[usize],
    lambdas: &[f32],
    seed: u64,
) -> Result<StepOutcome, TrainError> {
    let Assembled { input: leaf, ids } = model.assemble(features, rows);
    // The input's gradient is only read summed per embedding id (`sparse_grads`), so the first
    // layers may compute per distinct id.
    let codes = model.input_codes(&ids);
    let (labels, masks) = data.targets(rows);
    let weight_of = |t: usize| strategy.pass_weight(lambdas[t]);
    let grads = task_gradients(model, &leaf, Some(&codes), &labels, &masks, &weight_of)?;
    let step_seed = seed ^ opt.adam.step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let input_len = leaf.shape().0 * leaf.shape().1;
    let (mut dense, input) = strategy.combine(opt.strategy, model, &grads, input_len, step_seed);
    let penalty = model.penalty().map(|omega| {
        let value = omega.array();
        let mut omega_grads = omega.backward();
        for id in model.params.ids() {
            add_scaled(&mut dense[id.0], &model.params.grad(&mut omega_grads, id), 1.0);
        }
        value
    });
    let sparse_grads = model.tables.sparse_grads(&model.layout, &ids, &input);
    opt.adam.update_with(opt.adam_cfg, &mut model.params, &dense);
    opt.sparse.apply(&mut model.tables, &sparse_grads);
    Ok(StepOutcome { losses: grads.values, penalty })
}

/// The fewest rows a part of a data-parallel step gets: smaller parts spend more on each op's
/// fixed costs than the extra thread gives back.
const STEP_PART_MIN_ROWS: usize = 256;

/// How many parts a step over `rows` rows is split into: one per thread, each of at least
/// [`STEP_PART_MIN_ROWS`] rows.
fn step_parts(rows: usize) -> usize {
    rayon::current_num_threads().min(rows / STEP_PART_MIN_ROWS).max(1)
}

/// One forward and backward pass of Σ_t weights[t] L_t (+ Ω) over an assembled input.
struct Pass {
    /// Each task's unweighted loss (`None`: no labeled row).
    values: Vec<Option<f32>>,
    /// Ω's value, where it was taken.
    penalty: Option<f32>,
    /// Per dense parameter, in store order.
    dense: Vec<Vec<f32>>,
    /// The input's gradient (with `codes`, only meaningful summed per embedding id).
    input: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn backward_pass(
    model: &MultiTaskModel,
    leaf: &Mat,
    codes: Option<&InputCodes>,
    labels: &[Vec<f32>],
    masks: &[Vec<u8>],
    weights: &[f32],
    penalty: bool,
) -> Result<Pass, TrainError> {
    let forward = model.forward_coded(leaf.trace(Gradients::leaky()), codes);
    let losses = model.task_losses(forward, labels, masks)?;
    let values = losses.values.clone();
    let (loss, penalty) = model.combine(losses, weights, penalty);
    let mut grads = loss.backward();
    let input = mtrec_model::params::take_grad(&mut grads, leaf).expect("cpu allocation");
    let dense = model.params.ids().map(|id| model.params.grad(&mut grads, id)).collect();
    Ok(Pass { values, penalty, dense, input })
}

/// One part of a data-parallel step: its ids, and its pass (`None` for a part without labels,
/// which adds no gradient).
struct PartGradients {
    ids: BatchIds,
    pass: Option<Pass>,
}

/// A step with the static, uncertainty or DWA strategy, data-parallel ([`batch_gradients`]
/// over [`step_parts`] parts).
fn data_parallel_step(
    model: &mut MultiTaskModel,
    opt: &mut Optimizers<'_>,
    data: &EncodedDataset,
    features: &[FeatureData<'_>],
    rows: &[usize],
    lambdas: &[f32],
) -> Result<StepOutcome, TrainError> {
    let g = batch_gradients(model, data, features, rows, lambdas, step_parts(rows.len()))?;
    opt.adam.update_with(opt.adam_cfg, &mut model.params, &g.dense);
    opt.sparse.apply(&mut model.tables, &g.sparse);
    Ok(StepOutcome { losses: g.losses, penalty: g.penalty })
}

/// The gradients of a batch's loss (Σ λ_t L_t, + Ω), and its task losses.
struct BatchGradients {
    /// Per dense parameter, in store order.
    dense: Vec<Vec<f32>>,
    /// Per embedding table.
    sparse: Vec<mtrec_model::embedding::SparseGrad>,
    losses: Vec<Option<f32>>,
    penalty: Option<f32>,
}

/// The batch's gradients from `count` consecutive parts of `rows`, each assembled, run forward
/// and backward on its own thread (dfdx's tapes are per thread; a small model's ops are too
/// short to share well between threads), their gradients summed in part order. Each part's
/// task losses are weighted by its share of the batch's labeled rows, so the sum is the
/// gradient of the whole batch's loss; Ω is taken once. Results depend on the part count
/// (hence on the thread count, as the trainer promises), not on scheduling.
fn batch_gradients(
    model: &MultiTaskModel,
    data: &EncodedDataset,
    features: &[FeatureData<'_>],
    rows: &[usize],
    lambdas: &[f32],
    count: usize,
) -> Result<BatchGradients, TrainError> {
    let parts: Vec<&[usize]> =
        (0..count).map(|p| &rows[p * rows.len() / count..(p + 1) * rows.len() / count]).collect();
    let targets: Vec<_> = parts.iter().map(|part| data.targets(part)).collect();
    let labeled =
        |masks: &[Vec<u8>]| -> Vec<usize> { masks.iter().map(|m| m.iter().filter(|&&m| m != 0).count()).collect() };
    let part_labeled: Vec<Vec<usize>> = targets.iter().map(|(_, masks)| labeled(masks)).collect();
    let tasks = model.heads.len();
    let batch_labeled: Vec<usize> = (0..tasks).map(|t| part_labeled.iter().map(|l| l[t]).sum()).collect();
    // A part without labels adds no gradient and runs no passes, but its rows still count as
    // touched (as in one pass over the batch). The first part with labels takes Ω; a batch
    // without any runs its first part, whose loss reports it.
    let with_penalty = (0..count).find(|&p| part_labeled[p].iter().any(|&n| n > 0)).unwrap_or(0);
    let share = |p: usize, t: usize| {
        if batch_labeled[t] == 0 {
            0.0
        } else {
            part_labeled[p][t] as f32 / batch_labeled[t] as f32
        }
    };
    let one_part = |p: usize| -> Result<PartGradients, TrainError> {
        let (labels, masks) = &targets[p];
        if p != with_penalty && part_labeled[p].iter().all(|&n| n == 0) {
            return Ok(PartGradients { ids: BatchIds::new(&model.layout, features, parts[p]), pass: None });
        }
        let Assembled { input: leaf, ids } = model.assemble(features, parts[p]);
        // The input's gradient is only read summed per embedding id (`sparse_grads`), so the
        // first layers may compute per distinct id.
        let codes = model.input_codes(&ids);
        let weights: Vec<f32> = (0..tasks).map(|t| lambdas[t] * share(p, t)).collect();
        let pass = backward_pass(model, &leaf, Some(&codes), labels, masks, &weights, p == with_penalty)?;
        Ok(PartGradients { ids, pass: Some(pass) })
    };
    let results: Vec<PartGradients> = if count == 1 {
        vec![one_part(0)?]
    } else {
        (0..count).into_par_iter().map(one_part).collect::<Result<_, _>>()?
    };
    let passes = || results.iter().enumerate().filter_map(|(p, r)| r.pass.as_ref().map(|pass| (p, pass)));
    let losses: Vec<Option<f32>> = (0..tasks)
        .map(|t| passes().filter_map(|(p, pass)| pass.values[t].map(|v| share(p, t) * v)).reduce(|a, b| a + b))
        .collect();
    let penalty = results[with_penalty].pass.as_ref().and_then(|pass| pass.penalty);
    // Dense gradients summed and input gradients concatenated in part order (the first part's
    // moved, not copied; a part without labels adds zeros for its rows).
    let mut dense: Option<Vec<Vec<f32>>> = None;
    let mut input: Vec<f32> = Vec::new();
    let mut ids = Vec::with_capacity(count);
    for (part, r) in parts.iter().zip(results) {
        match r.pass {
            Some(pass) => {
                match &mut dense {
                    None => dense = Some(pass.dense),
                    Some(acc) => {
                        for (acc, g) in acc.iter_mut().zip(&pass.dense) {
                            acc.iter_mut().zip(g).for_each(|(a, g)| *a += g);
                        }
                    }
                }
                if input.is_empty() {
                    input = pass.input;
                } else {
                    input.extend_from_slice(&pass.input);
                }
            }
            None => input.resize(input.len() + part.len() * model.layout.width, 0.0),
        }
        ids.push(r.ids);
    }
    let dense = dense.expect("the part that takes Ω always runs its pass");
    let ids = if ids.len() == 1 { ids.pop().expect("one part") } else { BatchIds::concat(&ids) };
    let sparse = model.tables.sparse_grads(&model.layout, &ids, &input);
    Ok(BatchGradients { dense, sparse, losses, penalty })
}

/// Each task's gradients of `weight_of(t) · L_t`: one forward and one backward per task, since
/// dfdx's backward consumes the tape. With `codes`, the input's gradients are only meaningful
/// summed per embedding id.
pub(crate) fn task_gradients(
    model: &MultiTaskModel,
    leaf: &Mat,
    codes: Option<&InputCodes>,
    labels: &[Vec<f32>],
    masks: &[Vec<u8>],
    weight_of: &(dyn Fn(usize) -> f32 + Sync),
) -> Result<TaskGradients, TrainError> {
    let tasks = model.heads.len();
    // The tasks' passes are independent, so they run one per thread (each on its own tape);
    // each gives the same gradients as it would alone.
    let per_task: Vec<Option<_>> = (0..tasks)
        .into_par_iter()
        .map(|t| -> Result<_, TrainError> {
            if masks[t].iter().all(|&m| m == 0) {
                return Ok(None);
            }
            let mut w = vec![0.0f32; tasks];
            w[t] = weight_of(t);
            backward_pass(model, leaf, codes, labels, masks, &w, false).map(Some)
        })
        .collect::<Result<_, _>>()?;
    let mut out = TaskGradients { values: vec![None; tasks], dense: vec![None; tasks], input: vec![None; tasks] };
    for (t, pass) in per_task.into_iter().enumerate() {
        if let Some(pass) = pass {
            (out.values[t], out.dense[t], out.input[t]) = (pass.values[t], Some(pass.dense), Some(pass.input));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use mtrec_model::{ArchitectureConfig, LossWeighting, ModelConfig};

    use super::*;

    fn close(a: f32, b: f32, what: &str) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-2), "{what}: {a} vs {b}");
    }

    /// Cutting a batch into parts changes only rounding: the summed gradients, sparse rows and
    /// losses match one pass over the batch, for plain, coded and soft-sharing models (Ω taken
    /// once), with uncertainty weighting, and when a part has no labeled row at all.
    #[test]
    fn a_batch_in_parts_has_the_gradient_of_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let synth = mtrec_synth::SyntheticConfig { users: 80, items: 40, rows: 1_500, seed: 4, ..Default::default() };
        let ingest = mtrec_testkit::ingest_synthetic(dir.path(), &synth).ingest;
        let pipeline = mtrec_ingest::encoded::load_pipeline(&ingest).unwrap();
        let mut data = mtrec_ingest::encoded::load_split(&ingest, mtrec_schema::Split::Train, &pipeline).unwrap();
        let rows: Vec<usize> = (0..600).map(|r| (r * 7) % data.rows).collect();
        // The first 200 rows of the batch (a whole part when cut in three) unlabeled.
        for masks in &mut data.masks {
            rows[..200].iter().for_each(|&r| masks[r] = 0);
        }
        let features = feature_views(&data.features);
        let configs = [
            ModelConfig {
                architecture: ArchitectureConfig::Mmoe { experts: 3, expert_layers: vec![16] },
                loss_weighting: LossWeighting::Uncertainty,
                ..Default::default()
            },
            ModelConfig {
                architecture: ArchitectureConfig::Mmoe {
                    experts: 2,
                    expert_layers: vec![mtrec_model::fused::CODED_MIN_WIDTH],
                },
                ..Default::default()
            },
            ModelConfig {
                architecture: ArchitectureConfig::SoftSharing { layers: vec![16], alpha: 0.1 },
                ..Default::default()
            },
        ];
        for config in configs {
            let name = config.architecture.name();
            let model = MultiTaskModel::new(&pipeline, &config, 5).unwrap();
            let lambdas: Vec<f32> = (0..model.heads.len()).map(|t| 1.0 + t as f32).collect();
            let whole = batch_gradients(&model, &data, &features, &rows, &lambdas, 1).unwrap();
            assert!(whole.dense.iter().flatten().any(|g| *g != 0.0), "{name}: no gradient");
            assert_eq!(whole.penalty.is_some(), name == "soft_sharing");
            for count in [2, 3] {
                let parts = batch_gradients(&model, &data, &features, &rows, &lambdas, count).unwrap();
                let what = |item: &str| format!("{name}, {count} parts: {item}");
                for (t, (a, b)) in whole.losses.iter().zip(&parts.losses).enumerate() {
                    close(a.unwrap(), b.unwrap(), &what(&format!("task {t} loss")));
                }
                assert_eq!(whole.penalty, parts.penalty, "{}", what("Ω"));
                for (id, (a, b)) in whole.dense.iter().zip(&parts.dense).enumerate() {
                    let scale = a.iter().fold(0.0f32, |m, g| m.max(g.abs()));
                    let diff = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(
                        diff <= 1e-5 * scale + 1e-9,
                        "{}: off by {diff} at scale {scale}",
                        what(&format!("parameter {id}"))
                    );
                }
                for (a, b) in whole.sparse.iter().zip(&parts.sparse) {
                    assert_eq!(a.ids, b.ids, "{}", what("touched rows"));
                    for (x, y) in a.values.iter().zip(&b.values) {
                        assert!((x - y).abs() <= 1e-6, "{}: {x} vs {y}", what("embedding gradient"));
                    }
                }
            }
        }
    }
}
