//! Scoring a split with bundles: the split a bundle can read, and each bundle's outputs for
//! the reports' tasks with the model packed for inference, shard by shard.

use std::path::Path;

use mtrec_ingest::encoded::{load_pipeline, open_split, Columns, ShardedSplit};
use mtrec_model::bundle::Bundle;
use mtrec_report::{EvalRows, ModelScores, ReportTask, TaskKind};
use mtrec_schema::{EncodedDataset, Split, TaskType};

use crate::error::EvalError;

/// Split `split` of the ingest directory `data`, which must have been encoded with `bundle`'s
/// feature pipeline so that the model reads the ids it was trained on.
pub fn open_bundle_split(bundle: &Bundle, data: &Path, split: Split) -> Result<ShardedSplit, EvalError> {
    let pipeline = load_pipeline(data)?;
    if let Some(difference) = pipeline.difference(&bundle.pipeline) {
        return Err(EvalError::Incompatible(format!(
            "{} was encoded with another feature pipeline than the bundle's ({difference}, the data's against the \
             bundle's); ingest the data with the bundle's features.json",
            data.display(),
        )));
    }
    Ok(open_split(data, split, &pipeline)?)
}

/// The whole of [`open_bundle_split`]'s split in memory, every column: for small data.
pub fn load_bundle_split(bundle: &Bundle, data: &Path, split: Split) -> Result<EncodedDataset, EvalError> {
    Ok(open_bundle_split(bundle, data, split)?.read_all(Columns::All)?)
}

/// A bundle to score a split with, for the reports.
pub(crate) struct Scorer<'a> {
    pub bundle: &'a Bundle,
    pub dir: &'a Path,
    /// Whether the bundle must predict every task (not so a single-task baseline).
    pub every_task: bool,
}

/// The rows of `split` and each scorer's outputs on them, for `tasks`, read shard by shard:
/// memory holds one shard of features and, for every row, only what the reports read (ids'
/// hashes, labels, masks, outputs; gate weights are summed as they come).
pub(crate) fn score_split(
    split: &ShardedSplit,
    scorers: &[Scorer<'_>],
    tasks: &[ReportTask],
    batch_size: usize,
    progress: bool,
) -> Result<(EvalRows, Vec<ModelScores>), EvalError> {
    let bar = mtrec_ingest::progress::Progress::new(progress, "scoring", Some(split.rows() as u64));
    let mut rows =
        EvalRows { labels: vec![Vec::new(); tasks.len()], masks: vec![Vec::new(); tasks.len()], ..Default::default() };
    let mut scores: Vec<ModelScores> = scorers.iter().map(|s| model_scores(s, tasks)).collect::<Result<_, _>>()?;
    let mut first_row = 0u64;
    for i in 0..split.shard_count() {
        let shard = split.read(i, Columns::All)?;
        append_rows(&mut rows, &shard, first_row);
        first_row += shard.rows as u64;
        for (scorer, scores) in scorers.iter().zip(&mut scores) {
            append_scores(scores, scorer.bundle, &shard, tasks, batch_size);
        }
        bar.advance(shard.rows);
    }
    bar.finish();
    Ok((rows, scores))
}

pub(crate) fn check_same_pipeline(a: &Bundle, a_dir: &Path, other: &Bundle, other_dir: &Path) -> Result<(), EvalError> {
    if let Some(difference) = a.pipeline.difference(&other.pipeline) {
        return Err(EvalError::Incompatible(format!(
            "bundles {} and {} were trained on different feature pipelines ({difference}): they cannot score the \
             same encoded rows",
            a_dir.display(),
            other_dir.display(),
        )));
    }
    Ok(())
}

/// The tasks to report, in the first bundle's order.
pub(crate) fn task_infos(bundle: &Bundle) -> Vec<ReportTask> {
    bundle.model.heads.iter().map(task_info).collect()
}

fn task_info(h: &mtrec_model::Head) -> ReportTask {
    ReportTask {
        name: h.name.clone(),
        kind: match h.kind {
            TaskType::Binary => TaskKind::Binary,
            TaskType::Regression => TaskKind::Regression { label_log1p: h.label_log1p },
            TaskType::Multiclass => TaskKind::Multiclass { classes: h.classes.clone() },
        },
        scope: h.scope,
    }
}

/// Appends the rows of a shard: stable 64-bit keys of the user (item) ids (without ids, each
/// row is its own unit, numbered from `first_row`), labels and masks.
fn append_rows(rows: &mut EvalRows, data: &EncodedDataset, first_row: u64) {
    let hashes = |ids: &Option<Vec<String>>| -> Vec<u64> {
        match ids {
            Some(ids) => ids.iter().map(|id| xxhash_rust::xxh3::xxh3_64(id.as_bytes())).collect(),
            None => (first_row..first_row + data.rows as u64).collect(),
        }
    };
    rows.user.extend(hashes(&data.user_ids));
    rows.item.extend(hashes(&data.item_ids));
    for (t, (labels, masks)) in data.labels.iter().zip(&data.masks).enumerate() {
        rows.labels[t].extend_from_slice(labels);
        rows.masks[t].extend_from_slice(masks);
    }
}

/// Where each report task is among a bundle's heads (`None`: a baseline without it).
fn head_of(bundle: &Bundle, task: &ReportTask) -> Option<usize> {
    bundle.model.heads.iter().position(|h| h.name == task.name)
}

/// A scorer's (still empty) scores, once its tasks are checked against the report's: without
/// `every_task`, a task the bundle lacks is left empty (a single-task baseline need not cover
/// every task); with it, that is an error.
fn model_scores(scorer: &Scorer<'_>, tasks: &[ReportTask]) -> Result<ModelScores, EvalError> {
    let (bundle, dir) = (scorer.bundle, scorer.dir);
    let heads = &bundle.model.heads;
    for task in tasks {
        match head_of(bundle, task) {
            Some(t) if task_info(&heads[t]).kind == task.kind => {}
            Some(_) => {
                return Err(EvalError::Incompatible(format!(
                    "bundle {}: task {:?} has another kind or classes than in the first bundle",
                    dir.display(),
                    task.name
                )))
            }
            None if scorer.every_task => {
                return Err(EvalError::Incompatible(format!(
                    "bundle {} has no task {:?}: both models of an A/B report must predict the same tasks",
                    dir.display(),
                    task.name
                )))
            }
            None => {}
        }
    }
    let meta = &bundle.meta;
    Ok(ModelScores {
        name: dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
        description: format!(
            "{} on {} ({} parameters)",
            meta.architecture,
            meta.dataset,
            bundle.model.parameter_count()
        ),
        provenance: serde_json::json!({
            "bundle": dir.display().to_string(),
            "weights_sha256": meta.weights_sha256,
            "seed": meta.seed,
            "created_at": meta.provenance.created_at,
            "train_rows": meta.provenance.train_rows,
            "best_epoch": meta.provenance.best_epoch,
        }),
        outputs: vec![Vec::new(); tasks.len()],
        gates: vec![None; tasks.len()],
        history: Some(bundle.history.clone()),
    })
}

/// Appends a bundle's outputs (and gate weights) on a shard.
fn append_scores(
    scores: &mut ModelScores,
    bundle: &Bundle,
    data: &EncodedDataset,
    tasks: &[ReportTask],
    batch_size: usize,
) {
    let predictions = mtrec_model::predict_all(&bundle.model, data, batch_size);
    for (k, task) in tasks.iter().enumerate() {
        let Some(t) = head_of(bundle, task) else { continue };
        scores.outputs[k].extend_from_slice(&predictions.outputs[t]);
        if let Some(g) = &predictions.gates[t] {
            scores.gates[k].get_or_insert_with(Default::default).add(g, &data.masks[k]);
        }
    }
}
