//! One epoch: its windows of shards in order (the next one read while one trains), each
//! window's rows shuffled into batches, a checkpoint after every window but the last (the
//! epoch's own checkpoint follows validation), and a resumed epoch continuing after the last
//! window it finished.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use mtrec_model::MultiTaskModel;
use mtrec_schema::{FeaturePipeline, History};

use crate::checkpoint::{self, CheckpointRef, EpochProgress};
use crate::config::TrainConfig;
use crate::data::{dealt_steps, window_order, SplitData};
use crate::distributed::sharding::Sharding;
use crate::distributed::Collective;
use crate::error::TrainError;
use crate::step::{train_step, Optimizers};

/// What an epoch reads and where it saves its progress.
#[derive(Debug)]
pub(crate) struct EpochContext<'a> {
    pub data: &'a SplitData,
    pub cfg: &'a TrainConfig,
    pub pipeline: &'a FeaturePipeline,
    pub epoch: usize,
    /// DWA's loss weights for this epoch.
    pub dwa: Option<&'a [f64]>,
    /// The run's state besides the model and optimizers, for the checkpoints between windows.
    pub history: &'a History,
    pub best: Option<&'a (f64, MultiTaskModel)>,
    pub checkpoint_dir: &'a Path,
    pub progress_bar: bool,
    /// Stop (with a checkpoint) once this many windows have trained in this run.
    pub stop_after_windows: Option<usize>,
    /// The ranks training together (rank 0 writes the checkpoints) and where the embedding
    /// tables' rows live.
    pub comm: &'a dyn Collective,
    pub sharding: &'a Sharding,
}

/// An epoch's mean training losses per task, mean Ω, and seconds (before a resume included).
pub(crate) struct EpochOutcome {
    pub losses: BTreeMap<String, f64>,
    pub penalty: Option<f64>,
    pub seconds: f64,
    /// Across ranks: bytes handed to the collectives per step of this run.
    pub exchanged_bytes_per_step: Option<f64>,
}

/// Trains epoch `ctx.epoch`, from `resumed` when it was cut short; `windows_run` counts the
/// windows trained in this run.
pub(crate) fn run_epoch(
    model: &mut MultiTaskModel,
    opt: &mut Optimizers<'_>,
    ctx: &EpochContext<'_>,
    resumed: Option<EpochProgress>,
    windows_run: &mut usize,
) -> Result<EpochOutcome, TrainError> {
    let (cfg, epoch, tasks) = (ctx.cfg, ctx.epoch, model.heads.len());
    let windows = ctx.data.windows(cfg.seed, epoch);
    let mut progress = resumed.unwrap_or(EpochProgress {
        epoch,
        windows_done: 0,
        loss_sums: vec![0.0; tasks],
        loss_counts: vec![0; tasks],
        penalty_sum: 0.0,
        penalty_steps: 0,
        seconds: 0.0,
    });
    let started = Instant::now();
    let (bytes_before, mut steps_run) = (ctx.comm.bytes_sent(), 0usize);
    let bar = ctx.progress_bar.then(|| epoch_bar(ctx.data.rows(), epoch, cfg.epochs));
    let mut running: Vec<Option<f64>> = vec![None; tasks];
    let mut reading = windows.get(progress.windows_done).map(|w| ctx.data.start_reading(w));
    for w in progress.windows_done..windows.len() {
        let window = reading.take().expect("the window was started").wait()?;
        reading = windows.get(w + 1).map(|next| ctx.data.start_reading(next));
        let order = window_order(&window, cfg.seed, epoch, w);
        let steps: Box<dyn Iterator<Item = &[usize]>> = if ctx.data.is_dealt() {
            // As many steps as the rank with the most rows needs at its share of the batch.
            let ranks = ctx.comm.size();
            let most = ctx.comm.all_gather_u64(&[order.len() as u64]).into_iter().flatten().max().unwrap_or(0);
            Box::new(dealt_steps(&order, (most as usize).div_ceil(cfg.batch_size.div_ceil(ranks))))
        } else {
            let share = crate::data::RankShare { rank: ctx.comm.rank(), ranks: ctx.comm.size() };
            Box::new(order.chunks(cfg.batch_size).map(move |batch| share.slice(batch)))
        };
        for rows in steps {
            let step =
                train_step(model, opt, cfg.loss_strategy, &window, rows, ctx.dwa, cfg.seed, ctx.comm, ctx.sharding)?;
            steps_run += 1;
            if let Some(p) = step.penalty {
                progress.penalty_sum += f64::from(p);
                progress.penalty_steps += 1;
            }
            for (t, l) in step.losses.iter().enumerate() {
                if let Some(l) = l {
                    let l = f64::from(*l);
                    if !l.is_finite() {
                        return Err(TrainError::Diverged { epoch, task: model.heads[t].name.clone() });
                    }
                    progress.loss_sums[t] += l;
                    progress.loss_counts[t] += 1;
                    running[t] = Some(running[t].map_or(l, |r| 0.98 * r + 0.02 * l));
                }
            }
            if let Some(bar) = &bar {
                bar.inc((rows.len() * ctx.comm.size()) as u64);
                let msg: Vec<String> = model
                    .heads
                    .iter()
                    .zip(&running)
                    .filter_map(|(h, r)| r.map(|r| format!("{} {r:.4}", h.name)))
                    .collect();
                bar.set_message(msg.join(" "));
            }
        }
        progress.windows_done = w + 1;
        *windows_run += 1;
        if w + 1 < windows.len() {
            let mut saved = progress.clone();
            saved.seconds += started.elapsed().as_secs_f64();
            let state = CheckpointRef {
                model,
                adam: opt.adam,
                sparse: opt.sparse,
                history: ctx.history,
                best: ctx.best,
                strategy: opt.strategy,
                progress: Some(&saved),
            };
            checkpoint::save(ctx.checkpoint_dir, state, ctx.pipeline, cfg, ctx.comm, ctx.sharding)?;
            if ctx.stop_after_windows.is_some_and(|limit| *windows_run >= limit) {
                return Err(TrainError::Stopped { windows: *windows_run, checkpoint: ctx.checkpoint_dir.to_owned() });
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let losses = model
        .heads
        .iter()
        .enumerate()
        .filter(|(t, _)| progress.loss_counts[*t] > 0)
        .map(|(t, h)| (h.name.clone(), progress.loss_sums[t] / progress.loss_counts[t] as f64))
        .collect();
    let penalty = (progress.penalty_steps > 0).then(|| progress.penalty_sum / progress.penalty_steps as f64);
    let exchanged_bytes_per_step = (ctx.comm.size() > 1 && steps_run > 0)
        .then(|| (ctx.comm.bytes_sent() - bytes_before) as f64 / steps_run as f64);
    Ok(EpochOutcome {
        losses,
        penalty,
        seconds: progress.seconds + started.elapsed().as_secs_f64(),
        exchanged_bytes_per_step,
    })
}

fn epoch_bar(rows: usize, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(rows as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {human_pos}/{human_len} {per_sec} {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    bar
}
