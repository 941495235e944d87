//! The training loop: seeded shuffling, batches, dense Adam and sparse embedding steps,
//! validation after every epoch, early stopping on a chosen metric, a checkpoint every epoch,
//! and the bundle of the best epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dfdx::prelude::*;
use mtrec_ingest::encoded::{load_pipeline, load_split, EncodedDataset};
use mtrec_model::bundle::{self, ModelMeta};
use mtrec_model::{AdamState, Assembled, InputCodes, MultiTaskModel, OutputBias, SparseOptimizer};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointRef};
use crate::config::TrainConfig;
use crate::eval::{evaluate, feature_data};
use crate::strategy::{self, LossStrategy, StrategyState};
use crate::TrainError;

/// One epoch's record in `history.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean training loss per task over the epoch (unweighted).
    pub train_loss: BTreeMap<String, f64>,
    /// Validation metrics, `<task>.<metric>` and `loss`.
    pub valid: BTreeMap<String, f64>,
    pub seconds: f64,
    pub samples_per_second: f64,
    /// Mean soft-sharing penalty Ω over the epoch's steps (soft sharing only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty: Option<f64>,
    /// The loss strategy's task weights at the end of the epoch (DWA, GradNorm).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loss_weights: BTreeMap<String, f64>,
    /// Cosine similarity of two tasks' gradients on their shared parameters, `"a|b"`, at the
    /// end of the epoch (see [`crate::diagnostics`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gradient_cosine: BTreeMap<String, f64>,
    /// MMoE and PLE: each task's gate statistics on the valid split.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expert_usage: BTreeMap<String, crate::diagnostics::ExpertUsage>,
}

/// `history.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub monitor: String,
    pub best_epoch: Option<usize>,
    pub epochs: Vec<EpochRecord>,
    /// Pearson's r between two tasks' labels on the train split, `"a|b"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_correlation: BTreeMap<String, f64>,
}

/// What `mtrec train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub config: TrainConfig,
    pub out: PathBuf,
    /// Continue from the checkpoint in `<out>.checkpoint` (the last finished epoch of an
    /// interrupted or shorter run with the same config) when there is one.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// The result of a training run.
#[derive(Debug)]
pub struct Trained {
    pub history: History,
    pub model: MultiTaskModel,
}

/// Whether a higher value of `metric` is better.
pub fn higher_is_better(metric: &str) -> bool {
    metric.ends_with(".auc") || metric.ends_with(".accuracy")
}

/// The checkpoint directory of a bundle path.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".to_owned());
    out.with_file_name(format!("{name}.checkpoint"))
}

/// Trains a model and writes its bundle.
pub fn train(opts: &TrainOptions) -> Result<Trained, TrainError> {
    let cfg = &opts.config;
    cfg.validate()?;
    let pipeline = load_pipeline(&opts.data)?;
    let train_set = load_split(&opts.data, "train", &pipeline)?;
    let valid_set = load_split(&opts.data, "valid", &pipeline)?;
    if train_set.rows == 0 {
        return Err(TrainError::Config(format!("{}: the train split is empty", opts.data.display())));
    }
    let model_config = cfg.model_config();
    let mut model = MultiTaskModel::new(&pipeline, &model_config, cfg.seed)?;
    if model_config.output_bias == OutputBias::Prior {
        model.init_output_biases(&train_set.labels, &train_set.masks);
    }
    check_monitor(&cfg.early_stopping.metric, &model)?;
    let mut adam = AdamState::new(&model.params);
    let mut sparse = SparseOptimizer::new(cfg.sparse(), &model.tables).with_l2(cfg.embedding_l2 as f32);
    let mut history = History {
        monitor: cfg.early_stopping.metric.clone(),
        label_correlation: crate::diagnostics::label_correlations(&model, &train_set),
        ..Default::default()
    };
    let mut best: Option<(f64, MultiTaskModel)> = None;
    let mut strategy = StrategyState::default();
    let ckpt_dir = checkpoint_dir(&opts.out);
    if opts.resume && ckpt_dir.exists() {
        let ck = checkpoint::load(&ckpt_dir, &pipeline, cfg)?;
        model = ck.model;
        adam = ck.adam;
        sparse = ck.sparse;
        history = ck.history;
        best = ck.best;
        strategy = ck.strategy;
    }

    let threads = rayon::current_num_threads();
    if opts.progress {
        eprintln!(
            "training {} ({} parameters) on {} rows, {threads} threads",
            cfg.model.architecture.name(),
            model.parameter_count(),
            train_set.rows
        );
    }
    let adam_cfg = cfg.adam();
    let start_epoch = history.epochs.len();
    let mut since_best =
        history.best_epoch.map_or(history.epochs.len(), |b| history.epochs.len().saturating_sub(b + 1));
    for epoch in start_epoch..cfg.epochs {
        if cfg.early_stopping.patience > 0 && since_best >= cfg.early_stopping.patience {
            break;
        }
        let started = Instant::now();
        let mut opt = Optimizers { adam: &mut adam, sparse: &mut sparse, adam_cfg: &adam_cfg, strategy: &mut strategy };
        let dwa = dwa_for_epoch(cfg, &model, &history);
        let epoch_out = run_epoch(&mut model, &mut opt, &train_set, cfg, epoch, dwa.as_deref(), opts.progress)?;
        let seconds = started.elapsed().as_secs_f64();
        let gradient_cosine = crate::diagnostics::gradient_cosines(&model, &train_set)?;
        let evaluation = evaluate(&model, &valid_set, cfg.eval_batch_size);
        let expert_usage = crate::diagnostics::expert_usage(&model, &evaluation.predictions);
        let valid = evaluation.metrics;
        let value = *valid.get(&cfg.early_stopping.metric).ok_or_else(|| {
            TrainError::Config(format!(
                "early_stopping.metric {:?} is not computed on the valid split (available: {})",
                cfg.early_stopping.metric,
                valid.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let improved = match &best {
            None => true,
            Some((b, _)) => {
                let delta = cfg.early_stopping.min_delta;
                if higher_is_better(&cfg.early_stopping.metric) {
                    value > b + delta
                } else {
                    value < b - delta
                }
            }
        };
        if improved {
            best = Some((value, model.clone()));
            history.best_epoch = Some(epoch);
            since_best = 0;
        } else {
            since_best += 1;
        }
        let loss_weights = match (&dwa, cfg.loss_strategy) {
            (Some(w), _) => named(&model, w),
            (None, LossStrategy::GradNorm { .. }) if !strategy.weights.is_empty() => named(&model, &strategy.weights),
            _ => BTreeMap::new(),
        };
        history.epochs.push(EpochRecord {
            epoch,
            train_loss: epoch_out.losses,
            valid,
            seconds,
            samples_per_second: train_set.rows as f64 / seconds,
            penalty: epoch_out.penalty,
            loss_weights,
            gradient_cosine,
            expert_usage,
        });
        if opts.progress {
            eprintln!("{}", epoch_line(&history.epochs[epoch], &history.monitor));
        }
        checkpoint::save(
            &ckpt_dir,
            CheckpointRef {
                model: &model,
                adam: &adam,
                sparse: &sparse,
                history: &history,
                best: best.as_ref(),
                strategy: &strategy,
            },
            &pipeline,
            cfg,
        )?;
    }
    let (_, best_model) = best.ok_or_else(|| TrainError::Config("no epoch was run".to_owned()))?;
    let meta = ModelMeta {
        format_version: bundle::BUNDLE_FORMAT_VERSION,
        architecture: cfg.model.architecture.name().to_owned(),
        model: model_config.clone(),
        tasks: bundle::task_meta(&best_model),
        dataset: pipeline.dataset.clone(),
        schema_hash: pipeline.schema_hash.clone(),
        weights_sha256: String::new(),
        seed: cfg.seed,
        training: serde_json::to_value(cfg).expect("configs serialize"),
        provenance: bundle::provenance(&opts.data, train_set.rows, history.best_epoch, history.epochs.len(), threads),
    };
    let history_json = serde_json::to_value(&history).expect("history serializes");
    bundle::save(&opts.out, &best_model, &pipeline, meta, &history_json)?;
    // The checkpoint stays: `--resume` with more epochs continues from the last one.
    Ok(Trained { history, model: best_model })
}

fn check_monitor(metric: &str, model: &MultiTaskModel) -> Result<(), TrainError> {
    if metric == "loss" {
        return Ok(());
    }
    let ok = metric.split_once('.').is_some_and(|(task, m)| {
        model.heads.iter().any(|h| {
            h.name == task
                && match h.kind {
                    mtrec_schema::TaskType::Binary => matches!(m, "auc" | "logloss"),
                    mtrec_schema::TaskType::Regression => m == "rmse",
                    mtrec_schema::TaskType::Multiclass => matches!(m, "accuracy" | "logloss"),
                }
        })
    });
    if ok {
        Ok(())
    } else {
        Err(TrainError::Config(format!(
            "early_stopping.metric {metric:?}: use \"loss\" or <task>.<metric> (binary: auc, logloss; regression: rmse; multiclass: accuracy, logloss)"
        )))
    }
}

fn epoch_line(r: &EpochRecord, monitor: &str) -> String {
    let valid: Vec<String> = r.valid.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
    format!(
        "epoch {} ({:.1}s, {:.0} samples/s; monitor {monitor}): {}",
        r.epoch + 1,
        r.seconds,
        r.samples_per_second,
        valid.join(", ")
    )
}

/// The labels and masks of `rows`, per task.
pub(crate) fn batch_targets(data: &EncodedDataset, rows: &[usize]) -> (Vec<Vec<f32>>, Vec<Vec<u8>>) {
    let labels = data.labels.iter().map(|l| rows.iter().map(|&r| l[r]).collect()).collect();
    let masks = data.masks.iter().map(|m| rows.iter().map(|&r| m[r]).collect()).collect();
    (labels, masks)
}

/// The optimizers and the loss strategy's state, threaded through the steps.
#[derive(Debug)]
pub struct Optimizers<'a> {
    pub adam: &'a mut AdamState,
    pub sparse: &'a mut SparseOptimizer,
    pub adam_cfg: &'a mtrec_model::AdamConfig,
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

/// The task weights names, for `history.json`.
fn named(model: &MultiTaskModel, weights: &[f64]) -> BTreeMap<String, f64> {
    model.heads.iter().zip(weights).map(|(h, w)| (h.name.clone(), *w)).collect()
}

/// DWA's weights for `epoch` from the history's training losses, `None` for other strategies.
fn dwa_for_epoch(cfg: &TrainConfig, model: &MultiTaskModel, history: &History) -> Option<Vec<f64>> {
    let LossStrategy::Dwa { temperature } = cfg.loss_strategy else { return None };
    let n = history.epochs.len();
    let losses = |back: usize| -> Vec<Option<f64>> {
        model
            .heads
            .iter()
            .map(|h| n.checked_sub(back).and_then(|e| history.epochs[e].train_loss.get(&h.name).copied()))
            .collect()
    };
    Some(strategy::dwa_weights(&losses(1), &losses(2), temperature))
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
    let features = feature_data(data);
    let lambdas: Vec<f32> =
        model.heads.iter().enumerate().map(|(t, h)| h.weight * scale.map_or(1.0, |s| s[t] as f32)).collect();
    if !strategy.per_task_gradients() {
        return data_parallel_step(model, opt, data, &features, rows, &lambdas);
    }
    let Assembled { input: leaf, ids } = model.assemble(&features, rows);
    // The input's gradient is only read summed per embedding id (`sparse_grads`), so the first
    // layers may compute per distinct id.
    let codes = model.input_codes(&ids);
    let (labels, masks) = batch_targets(data, rows);

    let weight_of = |t: usize| match strategy {
        LossStrategy::GradNorm { .. } => 1.0,
        _ => lambdas[t],
    };
    let TaskGradients { values, dense, input } =
        task_gradients(model, &leaf, Some(&codes), &labels, &masks, &weight_of)?;
    let tasks = model.heads.len();
    let mut total: Vec<Vec<f32>> = model.params.ids().map(|id| vec![0.0; model.params.numel(id)]).collect();
    let mut input_total = vec![0.0f32; leaf.shape().0 * leaf.shape().1];
    let add = |acc: &mut [f32], g: &[f32], c: f32| acc.iter_mut().zip(g).for_each(|(a, g)| *a += c * g);
    match strategy {
        LossStrategy::GradNorm { alpha, lr } => {
            let st = &mut *opt.strategy;
            if st.weights.len() != tasks {
                st.weights = vec![1.0; tasks];
                st.initial_losses = vec![None; tasks];
            }
            for t in 0..tasks {
                if let (Some(d), Some(i)) = (&dense[t], &input[t]) {
                    let c = st.weights[t] as f32;
                    for (acc, g) in total.iter_mut().zip(d) {
                        add(acc, g, c);
                    }
                    add(&mut input_total, i, c);
                }
            }
            // The weights' update uses this step's gradients and applies from the next step.
            let mut norms = vec![None; tasks];
            let mut ratios = vec![None; tasks];
            for t in 0..tasks {
                let (Some(d), Some(l)) = (&dense[t], values[t]) else { continue };
                let l = f64::from(l);
                let l0 = *st.initial_losses[t].get_or_insert(l);
                let sq: f64 =
                    model.gradnorm_params(t).iter().flat_map(|id| &d[id.0]).map(|g| f64::from(*g).powi(2)).sum();
                norms[t] = Some(sq.sqrt());
                ratios[t] = (l0 > 0.0).then(|| l / l0);
            }
            strategy::gradnorm_update(&mut st.weights, &norms, &ratios, alpha, lr);
        }
        _ => {
            // PCGrad: project on the parameters two or more tasks reach, plain sums elsewhere.
            let present: Vec<usize> = (0..tasks).filter(|&t| dense[t].is_some()).collect();
            let shared = shared_parameters(&dense);
            let flat: Vec<Vec<f32>> = present
                .iter()
                .map(|&t| {
                    let d = dense[t].as_ref().expect("present");
                    shared.iter().flat_map(|&p| d[p].iter().copied()).collect()
                })
                .collect();
            let mut rng = StdRng::seed_from_u64(seed ^ opt.adam.step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let projected = strategy::pcgrad_project(&flat, &mut rng);
            for (k, &t) in present.iter().enumerate() {
                let d = dense[t].as_ref().expect("present");
                let mut at = 0;
                for p in 0..total.len() {
                    if shared.binary_search(&p).is_ok() {
                        let len = total[p].len();
                        add(&mut total[p], &projected[k][at..at + len], 1.0);
                        at += len;
                    } else {
                        add(&mut total[p], &d[p], 1.0);
                    }
                }
                add(&mut input_total, input[t].as_ref().expect("present"), 1.0);
            }
        }
    }
    // Ω, added once and unprojected.
    let penalty = model.penalty().map(|omega| {
        let value = omega.array();
        let mut grads = omega.backward();
        for id in model.params.ids() {
            add(&mut total[id.0], &model.params.grad(&mut grads, id), 1.0);
        }
        value
    });
    let sparse_grads = model.tables.sparse_grads(&model.layout, &ids, &input_total);
    opt.adam.update_with(opt.adam_cfg, &mut model.params, &total);
    opt.sparse.apply(&mut model.tables, &sparse_grads);
    Ok(StepOutcome { losses: values, penalty })
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
    leaf: &mtrec_model::Mat,
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
    ids: mtrec_model::BatchIds,
    pass: Option<Pass>,
}

/// A step with the static, uncertainty or DWA strategy, data-parallel ([`batch_gradients`]
/// over [`step_parts`] parts).
fn data_parallel_step(
    model: &mut MultiTaskModel,
    opt: &mut Optimizers<'_>,
    data: &EncodedDataset,
    features: &[mtrec_model::FeatureData<'_>],
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
    features: &[mtrec_model::FeatureData<'_>],
    rows: &[usize],
    lambdas: &[f32],
    count: usize,
) -> Result<BatchGradients, TrainError> {
    let parts: Vec<&[usize]> =
        (0..count).map(|p| &rows[p * rows.len() / count..(p + 1) * rows.len() / count]).collect();
    let targets: Vec<_> = parts.iter().map(|part| batch_targets(data, part)).collect();
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
            return Ok(PartGradients {
                ids: mtrec_model::BatchIds::new(&model.layout, features, parts[p]),
                pass: None,
            });
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
    let ids = if ids.len() == 1 { ids.pop().expect("one part") } else { mtrec_model::BatchIds::concat(&ids) };
    let sparse = model.tables.sparse_grads(&model.layout, &ids, &input);
    Ok(BatchGradients { dense, sparse, losses, penalty })
}

/// Per task with a label in the batch (`None` elsewhere): its loss, its gradients on every
/// dense parameter, and on the assembled input (for the embedding rows).
pub(crate) struct TaskGradients {
    pub values: Vec<Option<f32>>,
    pub dense: Vec<Option<Vec<Vec<f32>>>>,
    pub input: Vec<Option<Vec<f32>>>,
}

/// Each task's gradients of `weight_of(t) · L_t`: one forward and one backward per task, since
/// dfdx's backward consumes the tape. With `codes`, the input's gradients are only meaningful
/// summed per embedding id.
pub(crate) fn task_gradients(
    model: &MultiTaskModel,
    leaf: &mtrec_model::Mat,
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

/// The dense parameters (indices, ascending) that two or more tasks' gradients reach: what
/// the tasks share, and where their gradients can conflict.
pub(crate) fn shared_parameters(dense: &[Option<Vec<Vec<f32>>>]) -> Vec<usize> {
    let n_params = dense.iter().flatten().next().map_or(0, Vec::len);
    (0..n_params).filter(|&p| dense.iter().flatten().filter(|d| d[p].iter().any(|g| *g != 0.0)).count() >= 2).collect()
}

/// An epoch's mean training losses per task and mean Ω.
struct EpochOutcome {
    losses: BTreeMap<String, f64>,
    penalty: Option<f64>,
}

fn run_epoch(
    model: &mut MultiTaskModel,
    opt: &mut Optimizers<'_>,
    data: &EncodedDataset,
    cfg: &TrainConfig,
    epoch: usize,
    dwa: Option<&[f64]>,
    progress: bool,
) -> Result<EpochOutcome, TrainError> {
    // One shuffle per epoch from (seed, epoch): a resumed run shuffles as an uninterrupted one.
    let mut order: Vec<usize> = (0..data.rows).collect();
    order.shuffle(&mut StdRng::seed_from_u64(cfg.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(data.rows as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        bar
    });
    let tasks = model.heads.len();
    let mut sums = vec![0.0f64; tasks];
    let mut counts = vec![0usize; tasks];
    let mut running: Vec<Option<f64>> = vec![None; tasks];
    let (mut penalty_sum, mut penalty_steps) = (0.0f64, 0usize);
    for rows in order.chunks(cfg.batch_size) {
        let step = train_step(model, opt, cfg.loss_strategy, data, rows, dwa, cfg.seed)?;
        if let Some(p) = step.penalty {
            penalty_sum += f64::from(p);
            penalty_steps += 1;
        }
        for (t, l) in step.losses.iter().enumerate() {
            if let Some(l) = l {
                let l = f64::from(*l);
                if !l.is_finite() {
                    return Err(TrainError::Diverged { epoch, task: model.heads[t].name.clone() });
                }
                sums[t] += l;
                counts[t] += 1;
                running[t] = Some(running[t].map_or(l, |r| 0.98 * r + 0.02 * l));
            }
        }
        if let Some(bar) = &bar {
            bar.inc(rows.len() as u64);
            let msg: Vec<String> =
                model.heads.iter().zip(&running).filter_map(|(h, r)| r.map(|r| format!("{} {r:.4}", h.name))).collect();
            bar.set_message(msg.join(" "));
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let losses = model
        .heads
        .iter()
        .enumerate()
        .filter(|(t, _)| counts[*t] > 0)
        .map(|(t, h)| (h.name.clone(), sums[t] / counts[t] as f64))
        .collect();
    Ok(EpochOutcome { losses, penalty: (penalty_steps > 0).then(|| penalty_sum / penalty_steps as f64) })
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
        let pipeline = load_pipeline(&ingest).unwrap();
        let mut data = load_split(&ingest, "train", &pipeline).unwrap();
        let rows: Vec<usize> = (0..600).map(|r| (r * 7) % data.rows).collect();
        // The first 200 rows of the batch (a whole part when cut in three) unlabeled.
        for masks in &mut data.masks {
            rows[..200].iter().for_each(|&r| masks[r] = 0);
        }
        let features = feature_data(&data);
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
