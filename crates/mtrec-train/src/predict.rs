//! `mtrec predict`: every task's output for every row of an encoded split, written as Parquet
//! or Arrow IPC with the row's ids, labels and masks (what offline evaluation reads).

use std::path::Path;

use mtrec_ingest::encoded::{load_pipeline, load_split, EncodedDataset};
use mtrec_model::bundle::Bundle;
use mtrec_schema::{columns, TaskType};
use polars::prelude::*;

use crate::eval::predict_all;
use crate::TrainError;

/// Output column of task `task`'s score: `pred.<task>` (probability, value, or top class).
pub fn pred_column(task: &str) -> String {
    format!("pred.{task}")
}

/// Output column of one class probability of a multiclass task: `prob.<task>.<class>`.
pub fn prob_column(task: &str, class: &str) -> String {
    format!("prob.{task}.{class}")
}

/// Output column of an MMoE gate weight: `gate.<task>.<expert>`.
pub fn gate_column(task: &str, expert: usize) -> String {
    format!("gate.{task}.{expert}")
}

/// Split `split` of the ingest directory `data`, which must have been encoded with `bundle`'s
/// feature pipeline so that the model reads the ids it was trained on.
pub fn load_bundle_split(bundle: &Bundle, data: &Path, split: &str) -> Result<EncodedDataset, TrainError> {
    let pipeline = load_pipeline(data)?;
    if pipeline != bundle.pipeline {
        return Err(TrainError::Incompatible(format!(
            "{} was encoded with another feature pipeline than the bundle's (schema hash {} vs {}); ingest the data with the bundle's features.json",
            data.display(),
            pipeline.schema_hash,
            bundle.pipeline.schema_hash
        )));
    }
    Ok(load_split(data, split, &pipeline)?)
}

/// Scores split `split` of `data` with `bundle` and writes `out`; returns the row count.
pub fn predict(bundle: &Bundle, data: &Path, split: &str, out: &Path, batch_size: usize) -> Result<usize, TrainError> {
    let ds = load_bundle_split(bundle, data, split)?;
    let p = predict_all(&bundle.model, &ds, batch_size);
    let n = ds.rows;
    let mut cols: Vec<Column> = vec![Series::new(columns::ROW.into(), ds.row_ids.clone()).into()];
    for (name, ids) in [(columns::USER_ID, &ds.user_ids), (columns::ITEM_ID, &ds.item_ids)] {
        if let Some(ids) = ids {
            cols.push(Series::new(name.into(), ids.clone()).into());
        }
    }
    for (t, head) in bundle.model.heads.iter().enumerate() {
        let out = &p.outputs[t];
        match head.kind {
            TaskType::Binary | TaskType::Regression => {
                cols.push(Series::new(pred_column(&head.name).into(), out.clone()).into())
            }
            TaskType::Multiclass => {
                let c = head.outputs;
                let top: Vec<&str> =
                    out.chunks_exact(c).map(|row| head.classes[mtrec_metrics::predicted_class(row)].as_str()).collect();
                cols.push(Series::new(pred_column(&head.name).into(), top).into());
                for (k, class) in head.classes.iter().enumerate() {
                    let probs: Vec<f32> = out.chunks_exact(c).map(|row| row[k]).collect();
                    cols.push(Series::new(prob_column(&head.name, class).into(), probs).into());
                }
            }
        }
        cols.push(Series::new(columns::label(&head.name).into(), ds.labels[t].clone()).into());
        cols.push(Series::new(columns::mask(&head.name).into(), ds.masks[t].clone()).into());
        if let Some(g) = &p.gates[t] {
            let e = g.len() / n.max(1);
            for k in 0..e {
                let w: Vec<f32> = g.chunks_exact(e).map(|row| row[k]).collect();
                cols.push(Series::new(gate_column(&head.name, k).into(), w).into());
            }
        }
    }
    let mut df =
        DataFrame::new(n, cols).map_err(|e| TrainError::Io { path: out.to_owned(), message: e.to_string() })?;
    write_table(&mut df, out)?;
    Ok(n)
}

/// Writes a frame as Parquet (`.parquet`) or Arrow IPC (`.arrow`, `.ipc`, `.feather`),
/// through a temporary file renamed into place.
pub fn write_table(df: &mut DataFrame, out: &Path) -> Result<(), TrainError> {
    let fail = |m: String| TrainError::Io { path: out.to_owned(), message: m };
    let ext = out.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    let tmp = tempfile::Builder::new().prefix(".mtrec-").tempfile_in(parent).map_err(|e| fail(e.to_string()))?;
    let file = tmp.reopen().map_err(|e| fail(e.to_string()))?;
    match ext.as_str() {
        "parquet" => ParquetWriter::new(file).finish(df).map(|_| ()),
        "arrow" | "ipc" | "feather" => IpcWriter::new(file).with_compat_level(CompatLevel::oldest()).finish(df),
        other => return Err(fail(format!("unknown output format {other:?}: use .parquet or .arrow"))),
    }
    .map_err(|e| fail(e.to_string()))?;
    tmp.persist(out).map_err(|e| fail(e.to_string()))?;
    Ok(())
}
