//! `mtrec predict`: every task's output for every row of an encoded split, written as Parquet
//! or Arrow IPC with the row's ids, labels and masks (what offline evaluation reads).
//! Regression predictions and labels are in the label's units; a label learned as `ln(1 + y)`
//! also has its training-scale columns, `pred.<task>.log1p` and `label.<task>.log1p`.

use std::path::Path;

use mtrec_model::bundle::Bundle;
use mtrec_model::infer::{columns as output, prediction_columns, PredictionValues};
use mtrec_schema::fs::StagedFile;
use mtrec_schema::{columns, Split, TaskType};
use polars::prelude::*;

use crate::EvalError;

/// Scores split `split` of the ingest directory `data` with `bundle` and writes `out`; returns
/// the row count.
pub fn predict(bundle: &Bundle, data: &Path, split: Split, out: &Path, batch_size: usize) -> Result<usize, EvalError> {
    TableFormat::of(out)?;
    let ds = crate::load_bundle_split(bundle, data, split)?;
    let p = mtrec_model::predict_all(&bundle.model, &ds, batch_size);
    let n = ds.rows;
    let model = &bundle.model;
    let mut cols: Vec<Column> = vec![Series::new(columns::ROW.into(), ds.row_ids.clone()).into()];
    for (name, ids) in [(columns::USER_ID, &ds.user_ids), (columns::ITEM_ID, &ds.item_ids)] {
        if let Some(ids) = ids {
            cols.push(Series::new(name.into(), ids.clone()).into());
        }
    }
    for (t, head) in model.heads.iter().enumerate() {
        for (name, values) in prediction_columns(model, &p.outputs, &[t], n) {
            cols.push(match values {
                PredictionValues::Numbers(v) => Series::new(name.into(), v).into(),
                PredictionValues::LabelUnits(v) => Series::new(name.into(), v).into(),
                PredictionValues::Classes(v) => Series::new(name.into(), v).into(),
            });
        }
        let label = columns::label(&head.name);
        if head.kind == TaskType::Regression {
            let label_units: Vec<f64> = ds.labels[t].iter().map(|&y| head.to_label_units(y)).collect();
            cols.push(Series::new(label.as_str().into(), label_units).into());
            if head.label_log1p {
                cols.push(Series::new(format!("{label}.log1p").into(), ds.labels[t].clone()).into());
            }
        } else {
            cols.push(Series::new(label.into(), ds.labels[t].clone()).into());
        }
        cols.push(Series::new(columns::mask(&head.name).into(), ds.masks[t].clone()).into());
        if let Some(g) = &p.gates[t] {
            let e = g.len() / n.max(1);
            for k in 0..e {
                let w: Vec<f32> = g.chunks_exact(e).map(|row| row[k]).collect();
                cols.push(Series::new(output::gate(&head.name, k).into(), w).into());
            }
        }
    }
    let mut df = DataFrame::new(n, cols).map_err(|source| EvalError::Table { path: out.to_owned(), source })?;
    write_table(&mut df, out)?;
    Ok(n)
}

/// The file formats of a written table, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableFormat {
    Parquet,
    Ipc,
}

impl TableFormat {
    fn of(path: &Path) -> Result<Self, EvalError> {
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        match ext.as_str() {
            "parquet" => Ok(TableFormat::Parquet),
            "arrow" | "ipc" | "feather" => Ok(TableFormat::Ipc),
            _ => Err(EvalError::OutputFormat { path: path.to_owned() }),
        }
    }
}

/// Writes a frame as Parquet (`.parquet`) or Arrow IPC (`.arrow`, `.ipc`, `.feather`),
/// atomically.
fn write_table(df: &mut DataFrame, out: &Path) -> Result<(), EvalError> {
    let format = TableFormat::of(out)?;
    let io_error = |source| EvalError::Write { path: out.to_owned(), source };
    let mut staged = StagedFile::new(out).map_err(io_error)?;
    let written = match format {
        TableFormat::Parquet => ParquetWriter::new(staged.file()).finish(df).map(drop),
        TableFormat::Ipc => IpcWriter::new(staged.file()).with_compat_level(CompatLevel::oldest()).finish(df),
    };
    written.map_err(|source| EvalError::Table { path: out.to_owned(), source })?;
    staged.commit().map_err(io_error)
}
