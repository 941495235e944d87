//! One training step: the batch's forward and backward passes, the gradients taken out of
//! dfdx's tape, and the dense and sparse updates.
//!
//! With the static, uncertainty and DWA strategies a step is data-parallel: the batch is cut
//! into one part per thread, each part runs its forward and backward pass on its own thread
//! (dfdx's tapes are per thread), and the gradients are summed in part order, weighted so that
//! the sum is the whole batch's gradient. Across ranks ([`crate::distributed`]) each rank holds
//! its own parts of the batch, and the parts' sums are then added over the ranks in rank order;
//! row-sharded tables fetch the batch's rows first and send their gradients to the rows'
//! owners after. GradNorm and PCGrad take one backward pass per task instead and hand the
//! per-task gradients to their strategy to combine (one process only).

use dfdx::prelude::*;
use mtrec_model::{feature_views, Assembled, BatchIds, FeatureData, InputCodes, Mat, MultiTaskModel};
use mtrec_model::{AdamConfig, AdamState, SparseOptimizer};
use mtrec_schema::EncodedDataset;
use rayon::prelude::*;

use crate::distributed::sharding::Sharding;
use crate::distributed::{self, Collective};
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
/// weights, multiplying λ), or with GradNorm or PCGrad (per-task backward passes, one process
/// only). `rows` are this rank's part of the batch.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &mut MultiTaskModel,
    opt: &mut Optimizers<'_>,
    strategy: LossStrategy,
    data: &EncodedDataset,
    rows: &[usize],
    scale: Option<&[f64]>,
    seed: u64,
    comm: &dyn Collective,
    sharding: &Sharding,
) -> Result<StepOutcome, TrainError> {
    let features = feature_views(&data.features);
    let lambdas: Vec<f32> =
        model.heads.iter().enumerate().map(|(t, h)| h.weight * scale.map_or(1.0, |s| s[t] as f32)).collect();
    if strategy.per_task_gradients() {
        debug_assert_eq!(comm.size(), 1, "the config check refuses per-task strategies across ranks");
        per_task_step(model, opt, strategy, data, &features, rows, &lambdas, seed)
    } else if sharding.is_active() {
        sharded_step(model, opt, data, rows, &lambdas, comm, sharding)
    } else {
        data_parallel_step(model, opt, data, &features, rows, &lambdas, comm)
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

/// One part of a data-parallel step: its embedding rows' gradients, and its pass (`None` for a
/// part without labels, which adds no gradient but whose rows still count as touched).
struct PartGradients {
    sparse: Vec<mtrec_model::embedding::SparseGrad>,
    pass: Option<Pass>,
}

/// A step with the static, uncertainty or DWA strategy, data-parallel ([`batch_gradients`]
/// over [`step_parts`] parts of this rank's rows).
fn data_parallel_step(
    model: &mut MultiTaskModel,
    opt: &mut Optimizers<'_>,
    data: &EncodedDataset,
    features: &[FeatureData<'_>],
    rows: &[usize],
    lambdas: &[f32],
    comm: &dyn Collective,
) -> Result<StepOutcome, TrainError> {
    let parts = step_parts(rows.len());
    let g = batch_gradients(model, data, features, rows, lambdas, parts, comm, SparseRoute::Gather)?;
    opt.adam.update_with(opt.adam_cfg, &mut model.params, &g.dense);
    opt.sparse.apply(&mut model.tables, &g.sparse);
    Ok(StepOutcome { losses: g.losses, penalty: g.penalty })
}

/// A data-parallel step with row-sharded tables: the batch's rows of them fetched from their
/// owners into compact tables for the passes, their gradients sent back to the owners, which
/// update their shards.
fn sharded_step(
    model: &mut MultiTaskModel,
    opt: &mut Optimizers<'_>,
    data: &EncodedDataset,
    rows: &[usize],
    lambdas: &[f32],
    comm: &dyn Collective,
    sharding: &Sharding,
) -> Result<StepOutcome, TrainError> {
    let mut batch = data.take(rows);
    let mut fetched = sharding.fetch(comm, &model.layout, &model.tables, &mut batch);
    let local: Vec<usize> = (0..batch.rows).collect();
    fetched.swap(&mut model.tables);
    let g = batch_gradients(
        model,
        &batch,
        &feature_views(&batch.features),
        &local,
        lambdas,
        step_parts(local.len()),
        comm,
        SparseRoute::Owners,
    );
    fetched.swap(&mut model.tables);
    let g = g?;
    let sparse = sharding.exchange(comm, &model.tables, g.sparse, &fetched);
    opt.adam.update_with(opt.adam_cfg, &mut model.params, &g.dense);
    opt.sparse.apply(&mut model.tables, &sparse);
    Ok(StepOutcome { losses: g.losses, penalty: g.penalty })
}

/// Where a step's embedding gradients go across ranks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SparseRoute {
    /// Every rank gathers every rank's touched rows and merges them (replicated tables).
    Gather,
    /// Left to the caller, to send to the rows' owners ([`Sharding::exchange`]).
    Owners,
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

/// How the parts of a batch, over every rank, are weighted: each part's labeled rows per task
/// and which part takes Ω.
struct BatchParts {
    /// Per part of the batch (every rank's parts, in rank order), its rows and its labeled rows
    /// per task.
    rows: Vec<usize>,
    labeled: Vec<Vec<usize>>,
    /// Per task, the batch's labeled rows.
    batch_labeled: Vec<usize>,
    /// This rank's first part's index among all.
    first: usize,
    /// The part that takes Ω: the first with labels, else the first with rows.
    with_penalty: usize,
}

impl BatchParts {
    fn new(comm: &dyn Collective, local_rows: &[usize], local_labeled: &[Vec<usize>], tasks: usize) -> Self {
        // Per local part: its rows, then its labeled rows per task.
        let flat: Vec<u64> = local_rows
            .iter()
            .zip(local_labeled)
            .flat_map(|(&n, l)| std::iter::once(n as u64).chain(l.iter().map(|&c| c as u64)))
            .collect();
        let gathered = comm.all_gather_u64(&flat);
        let first = gathered[..comm.rank()].iter().map(|g| g.len() / (tasks + 1)).sum();
        let (mut rows, mut labeled) = (Vec::new(), Vec::new());
        for part in gathered.iter().flat_map(|g| g.chunks_exact(tasks + 1)) {
            rows.push(part[0] as usize);
            labeled.push(part[1..].iter().map(|&c| c as usize).collect::<Vec<_>>());
        }
        let batch_labeled = (0..tasks).map(|t| labeled.iter().map(|l: &Vec<usize>| l[t]).sum()).collect();
        let with_penalty = (0..rows.len())
            .find(|&p| labeled[p].iter().any(|&n| n > 0))
            .or_else(|| (0..rows.len()).find(|&p| rows[p] > 0))
            .unwrap_or(0);
        BatchParts { rows, labeled, batch_labeled, first, with_penalty }
    }

    /// Part `p`'s share of task `t`'s labeled rows.
    fn share(&self, p: usize, t: usize) -> f32 {
        if self.batch_labeled[t] == 0 {
            0.0
        } else {
            self.labeled[p][t] as f32 / self.batch_labeled[t] as f32
        }
    }

    /// Whether part `p` runs a pass: it has labels, or takes Ω.
    fn runs(&self, p: usize) -> bool {
        p == self.with_penalty || (self.rows[p] > 0 && self.labeled[p].iter().any(|&n| n > 0))
    }
}

/// The batch's gradients from `count` consecutive parts of this rank's `rows`, each assembled,
/// run forward and backward on its own thread (dfdx's tapes are per thread; a small model's ops
/// are too short to share well between threads), their gradients summed in part order, then
/// over the ranks in rank order ([`crate::distributed`]). Each part's task losses are weighted
/// by its share of the whole batch's labeled rows (every rank's parts), so the sum is the
/// gradient of the whole batch's loss; Ω is taken once. Results depend on the part count
/// (hence on the thread and rank counts, as the trainer promises), not on scheduling: one
/// thread on each of N ranks gives exactly the dense gradients of one process with N parts.
#[allow(clippy::too_many_arguments)]
fn batch_gradients(
    model: &MultiTaskModel,
    data: &EncodedDataset,
    features: &[FeatureData<'_>],
    rows: &[usize],
    lambdas: &[f32],
    count: usize,
    comm: &dyn Collective,
    route: SparseRoute,
) -> Result<BatchGradients, TrainError> {
    let parts: Vec<&[usize]> = (0..count).map(|p| &rows[distributed::part_range(rows.len(), count, p)]).collect();
    let targets: Vec<_> = parts.iter().map(|part| data.targets(part)).collect();
    let labeled =
        |masks: &[Vec<u8>]| -> Vec<usize> { masks.iter().map(|m| m.iter().filter(|&&m| m != 0).count()).collect() };
    let tasks = model.heads.len();
    let local_labeled: Vec<Vec<usize>> = targets.iter().map(|(_, masks)| labeled(masks)).collect();
    let local_rows: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let batch = BatchParts::new(comm, &local_rows, &local_labeled, tasks);
    // A part without labels adds no gradient and runs no passes, but its rows still count as
    // touched (as in one pass over the batch). Each part scatters its own embedding rows'
    // gradients, merged in part order below and then over the ranks in rank order: the same
    // additions whether the parts run on the threads of one process or one on each rank.
    let one_part = |p: usize| -> Result<PartGradients, TrainError> {
        let global = batch.first + p;
        if !batch.runs(global) {
            let ids = BatchIds::new(&model.layout, features, parts[p]);
            let zeros = vec![0.0; parts[p].len() * model.layout.width];
            return Ok(PartGradients { sparse: model.tables.sparse_grads(&model.layout, &ids, &zeros), pass: None });
        }
        let (labels, masks) = &targets[p];
        let Assembled { input: leaf, ids } = model.assemble(features, parts[p]);
        // The input's gradient is only read summed per embedding id (`sparse_grads`), so the
        // first layers may compute per distinct id.
        let codes = model.input_codes(&ids);
        let weights: Vec<f32> = (0..tasks).map(|t| lambdas[t] * batch.share(global, t)).collect();
        let with_penalty = global == batch.with_penalty;
        let mut pass = backward_pass(model, &leaf, Some(&codes), labels, masks, &weights, with_penalty)?;
        let sparse = model.tables.sparse_grads(&model.layout, &ids, &std::mem::take(&mut pass.input));
        Ok(PartGradients { sparse, pass: Some(pass) })
    };
    let results: Vec<PartGradients> = if count == 1 {
        vec![one_part(0)?]
    } else {
        (0..count).into_par_iter().map(one_part).collect::<Result<_, _>>()?
    };
    let passes = || results.iter().enumerate().filter_map(|(p, r)| r.pass.as_ref().map(|pass| (p, pass)));
    let losses: Vec<Option<f32>> = (0..tasks)
        .map(|t| {
            passes()
                .filter_map(|(p, pass)| pass.values[t].map(|v| batch.share(batch.first + p, t) * v))
                .reduce(|a, b| a + b)
        })
        .collect();
    let penalty = passes().find_map(|(_, pass)| pass.penalty);
    // Dense gradients summed in part order (the first part's moved, not copied).
    let mut dense: Option<Vec<Vec<f32>>> = None;
    let mut sparse = Vec::with_capacity(count);
    for r in results {
        if let Some(pass) = r.pass {
            match &mut dense {
                None => dense = Some(pass.dense),
                Some(acc) => {
                    for (acc, g) in acc.iter_mut().zip(&pass.dense) {
                        acc.iter_mut().zip(g).for_each(|(a, g)| *a += g);
                    }
                }
            }
        }
        sparse.push(r.sparse);
    }
    // A rank none of whose parts ran adds zeros (some other rank's part took Ω).
    let mut dense = dense.unwrap_or_else(|| model.params.ids().map(|id| vec![0.0; model.params.numel(id)]).collect());
    let sparse = if count == 1 { sparse.pop().expect("one part") } else { model.tables.merge_sparse_grads(sparse) };
    if comm.size() == 1 {
        return Ok(BatchGradients { dense, sparse, losses, penalty });
    }
    let (losses, penalty) = combine_ranks(comm, &mut dense, &losses, penalty);
    let sparse = match route {
        SparseRoute::Gather => {
            let dims: Vec<usize> = model.tables.tables.iter().map(|t| t.dim).collect();
            model.tables.merge_sparse_grads(distributed::gather_sparse(comm, sparse, &dims))
        }
        SparseRoute::Owners => sparse,
    };
    Ok(BatchGradients { dense, sparse, losses, penalty })
}

/// Every rank's share of a step combined in rank order: the dense gradients summed (in place),
/// the task losses added, and Ω from the rank that took it.
fn combine_ranks(
    comm: &dyn Collective,
    dense: &mut [Vec<f32>],
    losses: &[Option<f32>],
    penalty: Option<f32>,
) -> (Vec<Option<f32>>, Option<f32>) {
    let mut flat: Vec<f32> = dense.concat();
    distributed::sum_in_rank_order(comm, &mut flat);
    let mut at = 0;
    for g in dense.iter_mut() {
        let len = g.len();
        g.copy_from_slice(&flat[at..at + len]);
        at += len;
    }
    // Per task and then for Ω: whether this rank has a value, and the value.
    let tasks = losses.len();
    let local: Vec<f32> = losses
        .iter()
        .chain(std::iter::once(&penalty))
        .flat_map(|v| [f32::from(v.is_some()), v.unwrap_or(0.0)])
        .collect();
    let gathered = comm.all_gather_f32(&local);
    let sum = |i: usize| gathered.iter().filter(|r| r[2 * i] != 0.0).map(|r| r[2 * i + 1]).reduce(|a, b| a + b);
    let losses = (0..tasks).map(sum).collect();
    let penalty = sum(tasks);
    (losses, penalty)
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
    use crate::distributed::tests::on_ranks;
    use crate::distributed::Solo;

    fn close(a: f32, b: f32, what: &str) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-2), "{what}: {a} vs {b}");
    }

    /// A small synthetic train split, with the first 200 of `rows` unlabeled.
    fn split_with_unlabeled_rows() -> (mtrec_schema::FeaturePipeline, EncodedDataset, Vec<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let synth = mtrec_synth::SyntheticConfig { users: 80, items: 40, rows: 1_500, seed: 4, ..Default::default() };
        let ingest = mtrec_testkit::ingest_synthetic(dir.path(), &synth).ingest;
        let pipeline = mtrec_ingest::encoded::load_pipeline(&ingest).unwrap();
        let mut data = mtrec_ingest::encoded::load_split(&ingest, mtrec_schema::Split::Train, &pipeline).unwrap();
        let rows: Vec<usize> = (0..600).map(|r| (r * 7) % data.rows).collect();
        for masks in &mut data.masks {
            rows[..200].iter().for_each(|&r| masks[r] = 0);
        }
        (pipeline, data, rows)
    }

    /// N ranks of one part each compute exactly what one process with N parts does: the same
    /// dense and embedding gradients, losses and Ω, bit for bit (the same additions in the same
    /// order); with a rank whose part has no label (rank 0 of three) and Ω taken on another.
    #[test]
    fn ranks_of_one_part_compute_what_one_process_of_as_many_parts_does() {
        let (pipeline, data, rows) = split_with_unlabeled_rows();
        let features = feature_views(&data.features);
        for architecture in [
            ArchitectureConfig::Mmoe { experts: 3, expert_layers: vec![16] },
            ArchitectureConfig::SoftSharing { layers: vec![16], alpha: 0.1 },
        ] {
            let name = architecture.name();
            let config = ModelConfig { architecture, ..Default::default() };
            let model = MultiTaskModel::new(&pipeline, &config, 5).unwrap();
            let lambdas: Vec<f32> = (0..model.heads.len()).map(|t| 1.0 + t as f32).collect();
            for ranks in [2, 3] {
                let one = batch_gradients(&model, &data, &features, &rows, &lambdas, ranks, &Solo, SparseRoute::Gather)
                    .unwrap();
                let per_rank = on_ranks(ranks, |comm| {
                    let (r, n) = (comm.rank(), comm.size());
                    let mine = &rows[r * rows.len() / n..(r + 1) * rows.len() / n];
                    let g = batch_gradients(&model, &data, &features, mine, &lambdas, 1, comm, SparseRoute::Gather)
                        .unwrap();
                    (g.dense, g.sparse, g.losses, g.penalty)
                });
                for (rank, (dense, sparse, losses, penalty)) in per_rank.into_iter().enumerate() {
                    let what = format!("{name}, rank {rank} of {ranks}");
                    assert_eq!(penalty.is_some(), name == "soft_sharing", "{what}: Ω");
                    assert_eq!((&dense, &sparse), (&one.dense, &one.sparse), "{what}: gradients");
                    assert_eq!((&losses, penalty), (&one.losses, one.penalty), "{what}: losses");
                }
            }
        }
    }

    #[test]
    fn a_batch_in_parts_has_the_gradient_of_the_whole_batch() {
        let (pipeline, data, rows) = split_with_unlabeled_rows();
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
            let whole =
                batch_gradients(&model, &data, &features, &rows, &lambdas, 1, &Solo, SparseRoute::Gather).unwrap();
            assert!(whole.dense.iter().flatten().any(|g| *g != 0.0), "{name}: no gradient");
            assert_eq!(whole.penalty.is_some(), name == "soft_sharing");
            for count in [2, 3] {
                let parts =
                    batch_gradients(&model, &data, &features, &rows, &lambdas, count, &Solo, SparseRoute::Gather)
                        .unwrap();
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
