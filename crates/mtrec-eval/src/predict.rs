//! `mtrec predict`: every task's output for every row of an encoded split, written as Parquet
//! or Arrow IPC with the row's ids, labels and masks (what offline evaluation reads).
//! Regression predictions and labels are in the label's units; a label learned as `ln(1 + y)`
//! also has its training-scale columns, `pred.<task>.log1p` and `label.<task>.log1p`.

use std::path::Path;
use std::sync::mpsc::sync_channel;

use mtrec_ingest::encoded::Columns;
use mtrec_ingest::progress::Progress;
use mtrec_model::bundle::Bundle;
use mtrec_model::infer::{columns as output, prediction_columns, PredictionValues};
use mtrec_schema::fs::StagedFile;
use mtrec_schema::{columns, EncodedDataset, Split, TaskType};
use polars::prelude::*;

use crate::EvalError;

/// How a Parquet output is compressed (`mtrec predict --compression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// Fast, and read by every Parquet reader.
    #[default]
    Snappy,
    /// Parquet's LZ4_RAW: as fast as Snappy; older readers lack it.
    Lz4,
    /// The smallest files, for a little more CPU time.
    Zstd,
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "snappy" => Ok(Self::Snappy),
            "lz4" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd),
            "none" => Ok(Self::None),
            _ => Err(format!("unknown compression {s:?} (snappy, lz4, zstd or none)")),
        }
    }
}

impl Compression {
    fn parquet(self) -> ParquetCompression {
        match self {
            Self::Snappy => ParquetCompression::Snappy,
            Self::Lz4 => ParquetCompression::Lz4Raw,
            Self::Zstd => ParquetCompression::Zstd(None),
            Self::None => ParquetCompression::Uncompressed,
        }
    }
}

/// Scores split `split` of the ingest directory `data` with `bundle` and writes `out`; returns
/// the row count. The split is read and written shard by shard (one Parquet row group or Arrow
/// record batch each), so memory holds a couple of shards whatever the split's size.
///
/// A thread writes (and compresses) each shard's predictions while the next shard is read
/// and scored: done in turn, writing left one of the two cores of a small machine idle. The
/// writer takes one table at a time (a rendezvous channel), so at most two are in memory.
pub fn predict(
    bundle: &Bundle,
    data: &Path,
    split: Split,
    out: &Path,
    compression: Compression,
    batch_size: usize,
    progress: bool,
) -> Result<usize, EvalError> {
    let format = TableFormat::of(out)?;
    let shards = crate::open_bundle_split(bundle, data, split)?;
    let bar = Progress::new(progress, "predicting", Some(shards.rows() as u64));
    let io_error = |source| EvalError::Write { path: out.to_owned(), source };
    let table_error = |source| EvalError::Table { path: out.to_owned(), source };
    let mut staged = StagedFile::new(out).map_err(io_error)?;
    let file = staged.file().try_clone().map_err(io_error)?;
    let rows = std::thread::scope(|scope| -> Result<usize, EvalError> {
        let (write_tx, write_rx) = sync_channel::<DataFrame>(0);
        let writer = scope.spawn(move || -> PolarsResult<()> {
            let mut writer: Option<TableWriter> = None;
            for mut df in write_rx {
                let w = match &mut writer {
                    Some(w) => w,
                    None => writer.insert(TableWriter::new(format, compression, file.try_clone()?, &df)?),
                };
                w.write(&mut df)?;
            }
            // No part at all: scoring failed before the first, and says why.
            writer.map_or(Ok(()), TableWriter::finish)
        });
        let mut rows = 0;
        // An empty split still gets a file with every column.
        for i in 0..shards.shard_count().max(1) {
            let ds = if shards.shard_count() == 0 {
                mtrec_ingest::encoded::empty_dataset(split, &bundle.pipeline, Columns::All)
            } else {
                shards.read(i, Columns::All)?
            };
            let df = prediction_frame(bundle, &ds, batch_size).map_err(table_error)?;
            drop(ds);
            rows += df.height();
            bar.advance(df.height());
            if write_tx.send(df).is_err() {
                break; // the writer failed: its error is below
            }
        }
        drop(write_tx);
        writer.join().expect("the prediction writer does not panic").map_err(table_error)?;
        Ok(rows)
    })?;
    bar.finish();
    staged.commit().map_err(io_error)?;
    Ok(rows)
}

/// The prediction table of one part of a split: ids, every task's prediction, label and mask
/// columns, and gate weights.
fn prediction_frame(bundle: &Bundle, ds: &EncodedDataset, batch_size: usize) -> PolarsResult<DataFrame> {
    let p = mtrec_model::predict_all(&bundle.model, ds, batch_size);
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
        if let Some(experts) = model.gate_experts(t) {
            let g = p.gates[t].as_deref().unwrap_or_default();
            for k in 0..experts {
                let w: Vec<f32> = g.chunks_exact(experts).map(|row| row[k]).collect();
                cols.push(Series::new(output::gate(&head.name, k).into(), w).into());
            }
        }
    }
    DataFrame::new(n, cols)
}

/// A table written part by part: Parquet row groups or Arrow IPC record batches.
enum TableWriter {
    Parquet(Box<polars::io::parquet::write::BatchedWriter<std::fs::File>>),
    Ipc(Box<polars::io::ipc::BatchedWriter<std::fs::File>>),
}

impl TableWriter {
    fn new(
        format: TableFormat,
        compression: Compression,
        file: std::fs::File,
        first: &DataFrame,
    ) -> PolarsResult<Self> {
        Ok(match format {
            TableFormat::Parquet => {
                let writer = ParquetWriter::new(file).with_compression(compression.parquet());
                TableWriter::Parquet(Box::new(writer.batched(first.schema())?))
            }
            TableFormat::Ipc => {
                let arrow = first.schema().to_arrow(CompatLevel::oldest());
                let fields = polars_arrow::io::ipc::write::default_ipc_fields(arrow.iter_values());
                let writer = IpcWriter::new(file).with_compat_level(CompatLevel::oldest());
                TableWriter::Ipc(Box::new(writer.batched(first.schema(), fields)?))
            }
        })
    }

    fn write(&mut self, df: &mut DataFrame) -> PolarsResult<()> {
        df.rechunk_mut();
        match self {
            TableWriter::Parquet(w) => w.write_batch(df),
            TableWriter::Ipc(w) => w.write_batch(df),
        }
    }

    fn finish(self) -> PolarsResult<()> {
        match self {
            TableWriter::Parquet(w) => w.finish().map(drop),
            TableWriter::Ipc(mut w) => w.finish(),
        }
    }
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
