//! The training loop: seeded shuffling, batches, validation after every epoch, early stopping
//! on the monitored metric, a checkpoint every epoch, and the bundle of the best epoch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use mtrec_ingest::encoded::{load_pipeline, load_split};
use mtrec_model::bundle::{self, ModelMeta};
use mtrec_model::{validation_metrics, AdamState, MultiTaskModel, OutputBias, SparseOptimizer};
use mtrec_schema::{EncodedDataset, EpochRecord, History, Split};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::checkpoint::{self, CheckpointRef};
use crate::config::TrainConfig;
use crate::diagnostics;
use crate::error::TrainError;
use crate::monitor::{check_monitor, epoch_line, epochs_since_best, undefined_on};
use crate::step::{train_step, Optimizers};
use crate::strategy::StrategyState;

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

/// Trains a model and writes its bundle.
pub fn train(opts: &TrainOptions) -> Result<Trained, TrainError> {
    let cfg = &opts.config;
    cfg.validate()?;
    let pipeline = load_pipeline(&opts.data)?;
    let train_set = load_split(&opts.data, Split::Train, &pipeline)?;
    let valid_set = load_split(&opts.data, Split::Valid, &pipeline)?;
    if train_set.rows == 0 {
        return Err(TrainError::EmptyTrainSplit { data: opts.data.clone() });
    }
    let model_config = cfg.model_config();
    let mut model = MultiTaskModel::new(&pipeline, &model_config, cfg.seed)?;
    if model_config.output_bias == OutputBias::Prior {
        model.init_output_biases(&train_set.labels, &train_set.masks);
    }
    let monitor = &cfg.early_stopping.metric;
    check_monitor(monitor, &model)?;
    // Without a valid split there is nothing to monitor: every epoch runs and the last is kept.
    let validating = valid_set.rows > 0;
    if !validating {
        tracing::warn!("the valid split is empty: training runs every epoch without early stopping and keeps the last");
        if opts.progress {
            eprintln!("warning: the valid split is empty: every epoch runs and the last one is kept");
        }
    } else if let Some(reason) = undefined_on(monitor, &model, &valid_set) {
        return Err(TrainError::MonitorUndefined { monitor: monitor.clone(), reason });
    }
    let mut adam = AdamState::new(&model.params);
    let mut sparse = SparseOptimizer::new(cfg.sparse(), &model.tables).with_l2(cfg.embedding_l2 as f32);
    let mut history = History {
        label_correlation: diagnostics::label_correlations(&model, &train_set),
        ..History::new(monitor.clone())
    };
    let mut best: Option<(f64, MultiTaskModel)> = None;
    let mut strategy = StrategyState::default();
    let checkpoint_dir = checkpoint::checkpoint_dir(&opts.out);
    if opts.resume && checkpoint_dir.exists() {
        let ck = checkpoint::load(&checkpoint_dir, &pipeline, cfg)?;
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
    let mut since_best = epochs_since_best(&history);
    for epoch in history.epochs.len()..cfg.epochs {
        if cfg.early_stopping.patience > 0 && since_best >= cfg.early_stopping.patience {
            break;
        }
        let started = Instant::now();
        let mut opt = Optimizers { adam: &mut adam, sparse: &mut sparse, adam_cfg: &adam_cfg, strategy: &mut strategy };
        let dwa = cfg.loss_strategy.epoch_weights(&model, &history);
        let epoch_out = run_epoch(&mut model, &mut opt, &train_set, cfg, epoch, dwa.as_deref(), opts.progress)?;
        let seconds = started.elapsed().as_secs_f64();
        let gradient_cosine = diagnostics::gradient_cosines(&model, &train_set)?;
        let (valid, expert_usage, value) = if validating {
            let validation = validation_metrics(&model, &valid_set, cfg.eval_batch_size);
            let expert_usage = diagnostics::expert_usage(&model, &validation.predictions);
            let valid = validation.metrics;
            let value = *valid.get(monitor).ok_or_else(|| TrainError::MonitorMissing {
                monitor: monitor.clone(),
                available: valid.keys().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            })?;
            (valid, expert_usage, Some(value))
        } else {
            (BTreeMap::new(), BTreeMap::new(), None)
        };
        let improved = match (&best, value) {
            (Some((b, _)), Some(value)) => monitor.improves(value, *b, cfg.early_stopping.min_delta),
            _ => true,
        };
        if improved {
            best = Some((value.unwrap_or(f64::NAN), model.clone()));
            history.best_epoch = Some(epoch);
            since_best = 0;
        } else {
            since_best += 1;
        }
        history.epochs.push(EpochRecord {
            epoch,
            train_loss: epoch_out.losses,
            valid,
            seconds,
            samples_per_second: train_set.rows as f64 / seconds,
            penalty: epoch_out.penalty,
            loss_weights: cfg.loss_strategy.recorded_weights(&model, dwa.as_deref(), &strategy),
            gradient_cosine,
            expert_usage,
        });
        if opts.progress {
            eprintln!("{}", epoch_line(&history.epochs[epoch], monitor));
        }
        let state = CheckpointRef {
            model: &model,
            adam: &adam,
            sparse: &sparse,
            history: &history,
            best: best.as_ref(),
            strategy: &strategy,
        };
        checkpoint::save(&checkpoint_dir, state, &pipeline, cfg)?;
    }
    let (_, mut best_model) = best.ok_or(TrainError::NoEpoch)?;
    if let Some(kept) = history.best() {
        best_model.set_residual_variances(&kept.valid);
    }
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
    bundle::save(&opts.out, &best_model, &pipeline, meta, &history)?;
    // The checkpoint stays: `--resume` with more epochs continues from the last one.
    Ok(Trained { history, model: best_model })
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
