//! Scoring a split with bundles: the split a bundle can read, and each bundle's outputs for
//! the reports' tasks through the model's one forward function.

use std::path::Path;

use mtrec_ingest::encoded::{load_pipeline, load_split};
use mtrec_model::bundle::Bundle;
use mtrec_report::{EvalRows, ModelScores, ReportTask, TaskKind};
use mtrec_schema::{EncodedDataset, Split, TaskType};

use crate::error::EvalError;

/// Split `split` of the ingest directory `data`, which must have been encoded with `bundle`'s
/// feature pipeline so that the model reads the ids it was trained on.
pub fn load_bundle_split(bundle: &Bundle, data: &Path, split: Split) -> Result<EncodedDataset, EvalError> {
    let pipeline = load_pipeline(data)?;
    if let Some(difference) = pipeline.difference(&bundle.pipeline) {
        return Err(EvalError::Incompatible(format!(
            "{} was encoded with another feature pipeline than the bundle's ({difference}, the data's against the \
             bundle's); ingest the data with the bundle's features.json",
            data.display(),
        )));
    }
    Ok(load_split(data, split, &pipeline)?)
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

/// Stable 64-bit keys of the user (item) ids; without ids, every row is its own unit.
fn id_hashes(ids: &Option<Vec<String>>, rows: usize) -> Vec<u64> {
    match ids {
        Some(ids) => ids.iter().map(|id| xxhash_rust::xxh3::xxh3_64(id.as_bytes())).collect(),
        None => (0..rows as u64).collect(),
    }
}

pub(crate) fn eval_rows(data: &EncodedDataset) -> EvalRows {
    EvalRows {
        user: id_hashes(&data.user_ids, data.rows),
        item: id_hashes(&data.item_ids, data.rows),
        labels: data.labels.clone(),
        masks: data.masks.clone(),
    }
}

/// A bundle's outputs for `tasks` (by name). Without `every_task`, a task the bundle lacks is
/// left empty (a single-task baseline need not cover every task); with it, that is an error.
pub(crate) fn model_scores(
    bundle: &Bundle,
    dir: &Path,
    data: &EncodedDataset,
    tasks: &[ReportTask],
    batch_size: usize,
    every_task: bool,
) -> Result<ModelScores, EvalError> {
    let predictions = mtrec_model::predict_all(&bundle.model, data, batch_size);
    let heads = &bundle.model.heads;
    let mut outputs = Vec::with_capacity(tasks.len());
    let mut gates = Vec::with_capacity(tasks.len());
    for task in tasks {
        match heads.iter().position(|h| h.name == task.name) {
            Some(t) if task_info(&heads[t]).kind == task.kind => {
                outputs.push(predictions.outputs[t].clone());
                gates.push(predictions.gates[t].clone());
            }
            Some(_) => {
                return Err(EvalError::Incompatible(format!(
                    "bundle {}: task {:?} has another kind or classes than in the first bundle",
                    dir.display(),
                    task.name
                )))
            }
            None if every_task => {
                return Err(EvalError::Incompatible(format!(
                    "bundle {} has no task {:?}: both models of an A/B report must predict the same tasks",
                    dir.display(),
                    task.name
                )))
            }
            None => {
                outputs.push(Vec::new());
                gates.push(None);
            }
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
        outputs,
        gates,
        history: Some(bundle.history.clone()),
    })
}
