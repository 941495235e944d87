//! The training loop: seeded shuffling, batches, dense Adam and sparse embedding steps,
//! validation after every epoch, early stopping on a chosen metric, a checkpoint every epoch,
//! and the bundle of the best epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dfdx::prelude::*;
use mtrec_ingest::encoded::{load_pipeline, load_split, EncodedDataset};
use mtrec_model::bundle::{self, ModelMeta};
use mtrec_model::{AdamState, MultiTaskModel, SparseOptimizer};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointRef};
use crate::config::TrainConfig;
use crate::eval::{evaluate, feature_data};
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
}

/// `history.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub monitor: String,
    pub best_epoch: Option<usize>,
    pub epochs: Vec<EpochRecord>,
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
    let mut model = MultiTaskModel::new(&pipeline, &cfg.model, cfg.seed)?;
    check_monitor(&cfg.early_stopping.metric, &model)?;
    let mut adam = AdamState::new(&model.params);
    let mut sparse = SparseOptimizer::new(cfg.sparse(), &model.tables).with_l2(cfg.embedding_l2 as f32);
    let mut history = History { monitor: cfg.early_stopping.metric.clone(), ..Default::default() };
    let mut best: Option<(f64, MultiTaskModel)> = None;
    let ckpt_dir = checkpoint_dir(&opts.out);
    if opts.resume && ckpt_dir.exists() {
        let ck = checkpoint::load(&ckpt_dir, &pipeline, cfg)?;
        model = ck.model;
        adam = ck.adam;
        sparse = ck.sparse;
        history = ck.history;
        best = ck.best;
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
        let train_loss =
            run_epoch(&mut model, &mut adam, &mut sparse, &adam_cfg, &train_set, cfg, epoch, opts.progress)?;
        let seconds = started.elapsed().as_secs_f64();
        let valid = evaluate(&model, &valid_set, cfg.eval_batch_size).metrics;
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
        history.epochs.push(EpochRecord {
            epoch,
            train_loss,
            valid,
            seconds,
            samples_per_second: train_set.rows as f64 / seconds,
        });
        if opts.progress {
            eprintln!("{}", epoch_line(&history.epochs[epoch], &history.monitor));
        }
        checkpoint::save(
            &ckpt_dir,
            CheckpointRef { model: &model, adam: &adam, sparse: &sparse, history: &history, best: best.as_ref() },
            &pipeline,
            cfg,
        )?;
    }
    let (_, best_model) = best.ok_or_else(|| TrainError::Config("no epoch was run".to_owned()))?;
    let meta = ModelMeta {
        format_version: bundle::BUNDLE_FORMAT_VERSION,
        architecture: cfg.model.architecture.name().to_owned(),
        model: cfg.model.clone(),
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
fn batch_targets(data: &EncodedDataset, rows: &[usize]) -> (Vec<Vec<f32>>, Vec<Vec<u8>>) {
    let labels = data.labels.iter().map(|l| rows.iter().map(|&r| l[r]).collect()).collect();
    let masks = data.masks.iter().map(|m| rows.iter().map(|&r| m[r]).collect()).collect();
    (labels, masks)
}

/// One training step on `rows`; returns each task's loss (unweighted) on the batch.
pub fn train_step(
    model: &mut MultiTaskModel,
    adam: &mut AdamState,
    sparse: &mut SparseOptimizer,
    adam_cfg: &mtrec_model::AdamConfig,
    data: &EncodedDataset,
    rows: &[usize],
) -> Result<Vec<Option<f32>>, TrainError> {
    let features = feature_data(data);
    let leaf = model.assemble(&features, rows);
    let forward = model.forward(leaf.trace(Gradients::leaky()));
    let (labels, masks) = batch_targets(data, rows);
    let (loss, per_task) = model.loss(forward, &labels, &masks)?;
    let mut grads = loss.backward();
    let input_grad = grads.get_or_alloc_mut(&leaf).expect("cpu allocation").to_vec();
    let sparse_grads = model.tables.sparse_grads(&model.layout, &features, rows, &input_grad);
    adam.update(adam_cfg, &mut model.params, &mut grads);
    sparse.apply(&mut model.tables, &sparse_grads);
    Ok(per_task)
}

#[allow(clippy::too_many_arguments)]
fn run_epoch(
    model: &mut MultiTaskModel,
    adam: &mut AdamState,
    sparse: &mut SparseOptimizer,
    adam_cfg: &mtrec_model::AdamConfig,
    data: &EncodedDataset,
    cfg: &TrainConfig,
    epoch: usize,
    progress: bool,
) -> Result<BTreeMap<String, f64>, TrainError> {
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
    for rows in order.chunks(cfg.batch_size) {
        let losses = train_step(model, adam, sparse, adam_cfg, data, rows)?;
        for (t, l) in losses.iter().enumerate() {
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
    Ok(model
        .heads
        .iter()
        .enumerate()
        .filter(|(t, _)| counts[*t] > 0)
        .map(|(t, h)| (h.name.clone(), sums[t] / counts[t] as f64))
        .collect())
}
