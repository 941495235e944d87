//! The training loop: the train split read whole or by windows of shards ([`crate::data`]),
//! epochs of seeded shuffled batches ([`crate::epoch`]), validation after every epoch, early
//! stopping on the monitored metric, checkpoints, and the bundle of the best epoch.

use std::path::PathBuf;

use mtrec_ingest::encoded::{load_pipeline, Columns};
use mtrec_model::bundle::{self, ModelMeta};
use mtrec_model::{AdamState, LabelTotals, MultiTaskModel, OutputBias, SparseOptimizer, Validation, ValidationSet};
use mtrec_schema::{EncodedDataset, EpochRecord, History, MetricKey, Split};

use crate::checkpoint::{self, CheckpointRef};
use crate::config::TrainConfig;
use crate::data::{RankShare, SplitData};
use crate::diagnostics::{self, LabelCorrelations};
use crate::distributed::sharding::Sharding;
use crate::distributed::{Collective, Solo};
use crate::epoch::{run_epoch, EpochContext};
use crate::error::TrainError;
use crate::monitor::{
    check_monitor, epoch_line, epochs_since_best, primary_keys, tasks_value, undefined_on, LabelCounts,
};
use crate::step::Optimizers;
use crate::strategy::StrategyState;

/// What `mtrec train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub config: TrainConfig,
    pub out: PathBuf,
    /// Continue from the checkpoint in `<out>.checkpoint` (where an interrupted or shorter run
    /// with the same config stopped: after an epoch, or between two windows of one) when there
    /// is one.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop after this many windows of shards have trained in this run, with a checkpoint that
    /// `resume` continues from (for time-boxed or preemptible jobs): [`TrainError::Stopped`].
    pub stop_after_windows: Option<usize>,
    /// Keep `<out>.checkpoint` once the bundle is written, so that `resume` with more epochs
    /// continues from the last one; off for runs that are never resumed (an experiment's runs,
    /// the quickstart, a repository version).
    pub keep_checkpoint: bool,
}

impl TrainOptions {
    /// Training `config` on the ingest directory `data` into the bundle `out`, quietly.
    pub fn new(data: &std::path::Path, config: TrainConfig, out: &std::path::Path) -> Self {
        TrainOptions {
            data: data.to_owned(),
            config,
            out: out.to_owned(),
            resume: false,
            progress: false,
            stop_after_windows: None,
            keep_checkpoint: true,
        }
    }
}

/// The result of a training run.
#[derive(Debug)]
pub struct Trained {
    pub history: History,
    pub model: MultiTaskModel,
}

/// Trains a model and writes its bundle.
pub fn train(opts: &TrainOptions) -> Result<Trained, TrainError> {
    train_on(opts, &Solo)
}

/// Trains a model as one of the ranks of `comm`, data-parallel ([`crate::distributed`]): each
/// rank trains its part of every batch, the ranks combine their gradients before every update,
/// and every rank validates and decides alike; rank 0 writes the checkpoints (each rank its rows
/// of row-sharded tables) and the bundle. Every rank returns the same model, except that on
/// ranks other than 0 row-sharded tables hold that rank's rows only.
pub fn train_on(opts: &TrainOptions, comm: &dyn Collective) -> Result<Trained, TrainError> {
    let cfg = &opts.config;
    cfg.validate()?;
    let (rank, ranks) = (comm.rank(), comm.size());
    if ranks > 1 && cfg.loss_strategy.per_task_gradients() {
        return Err(TrainError::Config(format!(
            "loss_strategy {} takes one backward pass per task on the whole batch, which is not split \
             across ranks: train it in one process, or choose static, uncertainty or dwa",
            cfg.loss_strategy.name()
        )));
    }
    // Only rank 0 talks (its progress is the job's).
    let progress = opts.progress && rank == 0;
    let pipeline = load_pipeline(&opts.data)?;
    let share = RankShare { rank, ranks };
    let train_data = SplitData::open(&opts.data, Split::Train, &pipeline, cfg.window_rows, share)?;
    let valid_data = SplitData::open(&opts.data, Split::Valid, &pipeline, cfg.window_rows, RankShare::ALONE)?;
    if train_data.rows() == 0 {
        return Err(TrainError::EmptyTrainSplit { data: opts.data.clone() });
    }
    let model_config = cfg.model_config();
    // Row-sharded tables hold this rank's rows only, from the start.
    let sharding = Sharding::plan(&cfg.embedding_sharding, &pipeline, rank, ranks)?;
    let mut model = sharding.model(&pipeline, &model_config, cfg.seed)?;
    // One pass over the train labels: the output biases' priors and the label correlations.
    let mut totals = LabelTotals::new(&model);
    let mut correlations = LabelCorrelations::new(&model);
    train_data.for_each_part(Columns::LabelsOnly, |part| {
        totals.add(&part.labels, &part.masks);
        correlations.add(part);
        Ok(())
    })?;
    if model_config.output_bias == OutputBias::Prior {
        model.init_output_biases_from(&totals);
    }
    let monitor = &cfg.early_stopping.metric;
    check_monitor(monitor, &model)?;
    // Without a valid split there is nothing to monitor: every epoch runs and the last is kept.
    let validating = valid_data.rows() > 0;
    if !validating {
        tracing::warn!("the valid split is empty: training runs every epoch without early stopping and keeps the last");
        if progress {
            eprintln!("warning: the valid split is empty: every epoch runs and the last one is kept");
        }
    } else {
        let mut counts = LabelCounts::new(model.heads.len());
        valid_data.for_each_part(Columns::LabelsOnly, |part| {
            counts.add(part);
            Ok(())
        })?;
        if let Some(reason) = undefined_on(monitor, &model, &counts) {
            return Err(TrainError::MonitorUndefined { monitor: monitor.clone(), reason });
        }
    }
    let diagnostic_batch = train_data.first_rows(diagnostics::DIAGNOSTIC_ROWS)?;
    let mut adam = AdamState::new(&model.params);
    let mut sparse = SparseOptimizer::new(cfg.sparse(), &model.tables).with_l2(cfg.embedding_l2 as f32);
    let mut history = History { label_correlation: correlations.finish(&model), ..History::new(monitor.clone()) };
    let mut best: Option<(f64, MultiTaskModel)> = None;
    let mut strategy = StrategyState::default();
    let mut resumed = None;
    let checkpoint_dir = checkpoint::checkpoint_dir(&opts.out);
    if opts.resume && checkpoint_dir.exists() {
        let ck = checkpoint::load(&checkpoint_dir, &pipeline, cfg, comm, &sharding)?;
        model = ck.model;
        adam = ck.adam;
        sparse = ck.sparse;
        history = ck.history;
        best = ck.best;
        strategy = ck.strategy;
        resumed = ck.progress;
    }

    let threads = rayon::current_num_threads();
    if progress {
        let reading = if train_data.is_kept() { "in memory" } else { "by windows of shards" };
        eprintln!(
            "training {} ({} parameters) on {} rows ({reading}), {threads} threads",
            cfg.model.architecture.name(),
            model.parameter_count(),
            train_data.rows()
        );
    }
    let adam_cfg = cfg.adam();
    let mut since_best = epochs_since_best(&history);
    let mut windows_run = 0;
    for epoch in history.epochs.len()..cfg.epochs {
        if cfg.early_stopping.patience > 0 && since_best >= cfg.early_stopping.patience {
            break;
        }
        if opts.stop_after_windows.is_some_and(|limit| windows_run >= limit) {
            return Err(TrainError::Stopped { windows: windows_run, checkpoint: checkpoint_dir });
        }
        let mut opt = Optimizers { adam: &mut adam, sparse: &mut sparse, adam_cfg: &adam_cfg, strategy: &mut strategy };
        let dwa = cfg.loss_strategy.epoch_weights(&model, &history);
        let ctx = EpochContext {
            data: &train_data,
            cfg,
            pipeline: &pipeline,
            epoch,
            dwa: dwa.as_deref(),
            history: &history,
            best: best.as_ref(),
            checkpoint_dir: &checkpoint_dir,
            progress_bar: progress,
            stop_after_windows: opts.stop_after_windows,
            comm,
            sharding: &sharding,
        };
        let resume_at = resumed.take().filter(|p| p.epoch == epoch);
        let epoch_out = run_epoch(&mut model, &mut opt, &ctx, resume_at, &mut windows_run)?;
        let gradient_cosine = with_rows_of(&mut model, comm, &sharding, &diagnostic_batch, |model, batch| {
            diagnostics::gradient_cosines(model, batch)
        })?;
        let (valid, expert_usage, value) = if validating {
            let Validation { mut metrics, expert_usage } =
                validate_on(&mut model, &valid_data, cfg.eval_batch_size, comm, &sharding)?;
            let first = history.epochs.first().map(|e| &e.valid);
            if let Some(tasks) = tasks_value(&primary_keys(&model), &metrics, first) {
                metrics.insert(MetricKey::Tasks, tasks);
            }
            let value = *metrics.get(monitor).ok_or_else(|| TrainError::MonitorMissing {
                monitor: monitor.clone(),
                available: metrics.keys().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            })?;
            (metrics, expert_usage, Some(value))
        } else {
            Default::default()
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
            seconds: epoch_out.seconds,
            samples_per_second: train_data.rows() as f64 / epoch_out.seconds,
            penalty: epoch_out.penalty,
            loss_weights: cfg.loss_strategy.recorded_weights(&model, dwa.as_deref(), &strategy),
            gradient_cosine,
            expert_usage,
            exchanged_bytes_per_step: epoch_out.exchanged_bytes_per_step,
        });
        if progress {
            eprintln!("{}", epoch_line(&history.epochs[epoch], monitor));
        }
        let state = CheckpointRef {
            model: &model,
            adam: &adam,
            sparse: &sparse,
            history: &history,
            best: best.as_ref(),
            strategy: &strategy,
            progress: None,
        };
        checkpoint::save(&checkpoint_dir, state, &pipeline, cfg, comm, &sharding)?;
    }
    let (_, mut best_model) = best.ok_or(TrainError::NoEpoch)?;
    if sharding.is_active() {
        // The bundle holds whole tables: rank 0 gathers the shards.
        match sharding.gather_tables(comm, &best_model.tables) {
            Some(whole) => best_model.tables = whole,
            None => return Ok(Trained { history, model: best_model }),
        }
    }
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
        provenance: bundle::provenance(
            &opts.data,
            train_data.rows(),
            history.best_epoch,
            history.epochs.len(),
            threads,
            ranks,
        ),
    };
    if rank != 0 {
        return Ok(Trained { history, model: best_model });
    }
    bundle::save(&opts.out, &best_model, &pipeline, meta, &history)?;
    if !opts.keep_checkpoint {
        // The run is complete and will not be resumed: its checkpoint is dead weight.
        let _ = std::fs::remove_dir_all(&checkpoint_dir);
    }
    Ok(Trained { history, model: best_model })
}

/// The validation metrics of `model` on a split, read part by part.
pub fn validate(model: &MultiTaskModel, data: &SplitData, batch_size: usize) -> Result<Validation, TrainError> {
    let mut set = ValidationSet::new(model);
    data.for_each_part(Columns::ForTraining, |part| {
        set.add(model, part, batch_size);
        Ok(())
    })?;
    Ok(set.finish(model))
}

/// [`validate`] as a rank of distributed training: with row-sharded tables, each part's rows of
/// them are fetched from their owners first (every rank validates the whole split alike).
fn validate_on(
    model: &mut MultiTaskModel,
    data: &SplitData,
    batch_size: usize,
    comm: &dyn Collective,
    sharding: &Sharding,
) -> Result<Validation, TrainError> {
    if !sharding.is_active() {
        return validate(model, data, batch_size);
    }
    let mut set = ValidationSet::new(model);
    data.for_each_part(Columns::ForTraining, |part| {
        with_rows_of(model, comm, sharding, part, |model, part| {
            set.add(model, part, batch_size);
            Ok(())
        })
    })?;
    Ok(set.finish(model))
}

/// Runs `f` on `data` with the rows it looks up in row-sharded tables fetched from their owners
/// (every rank calls it together), on a copy whose ids are renumbered to the fetched rows;
/// without sharding, on `data` as it is.
fn with_rows_of<T>(
    model: &mut MultiTaskModel,
    comm: &dyn Collective,
    sharding: &Sharding,
    data: &EncodedDataset,
    f: impl FnOnce(&MultiTaskModel, &EncodedDataset) -> Result<T, TrainError>,
) -> Result<T, TrainError> {
    if !sharding.is_active() {
        return f(model, data);
    }
    let mut data = data.clone();
    let mut fetched = sharding.fetch(comm, &model.layout, &model.tables, &mut data);
    fetched.swap(&mut model.tables);
    let out = f(model, &data);
    fetched.swap(&mut model.tables);
    out
}
