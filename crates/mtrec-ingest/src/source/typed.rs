//! Reading a Parquet or Arrow IPC file in batches of rows through Polars' streaming engine:
//! a projected scan whose batches arrive in file order over a bounded channel, so memory holds
//! a few batches whatever the file's size.
//!
//! Polars memory-maps a local file and keeps the map until the scan ends, so every page read
//! stays in the process's resident set: one scan of a 3 GB file ends with 3 GB resident. The
//! file is therefore scanned in segments of [`SEGMENT_ROWS`] rows, each its own scan (Polars
//! reads only the row groups a slice needs), and the resident set holds one segment's pages.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

use mtrec_schema::Format;
use polars::prelude::*;

use crate::error::IngestError;

/// Batches in flight between the scan and the reader.
const IN_FLIGHT: usize = 2;

/// Rows of one scan of a file: the resident pages of its memory map.
const SEGMENT_ROWS: usize = 1 << 21;

/// A lazy scan of a Parquet or Arrow IPC file (projection happens when it is collected).
pub(crate) fn scan(path: &Path, format: Format) -> Result<LazyFrame, IngestError> {
    let pl_path = PlRefPath::new(path.to_string_lossy().as_ref());
    match format {
        Format::Parquet => LazyFrame::scan_parquet(pl_path, ScanArgsParquet::default()),
        _ => LazyFrame::scan_ipc(pl_path, Default::default(), Default::default()),
    }
    .map_err(|e| IngestError::read(path, e))
}

/// The column names of a Parquet or Arrow IPC file, from its metadata.
pub(crate) fn column_names(path: &Path, format: Format) -> Result<Vec<String>, IngestError> {
    let schema = scan(path, format)?.collect_schema().map_err(|e| IngestError::read(path, e))?;
    Ok(schema.iter_names().map(|n| n.to_string()).collect())
}

/// The rows of a Parquet or Arrow IPC file, from its metadata; `None` for CSV or on an error
/// (which reading the file reports).
pub(crate) fn row_count(path: &Path, format: Format) -> Option<u64> {
    if format == Format::Csv {
        return None;
    }
    let df = scan(path, format).ok()?.select([len()]).collect().ok()?;
    df.columns().first()?.get(0).ok()?.extract::<u64>()
}

/// The batches of `columns` of a Parquet or Arrow IPC file, in file order.
pub(crate) struct TypedBatches {
    path: PathBuf,
    format: Format,
    columns: Vec<String>,
    batch_rows: usize,
    /// Rows per segment ([`SEGMENT_ROWS`]).
    segment_size: usize,
    /// The first row of the segment being read, and the rows it has yielded so far.
    segment_start: usize,
    segment_rows: usize,
    batches: Option<Receiver<PolarsResult<DataFrame>>>,
}

impl TypedBatches {
    /// Starts the scan on Polars' streaming engine; batches hold about `batch_rows` rows.
    pub(crate) fn open(
        path: &Path,
        format: Format,
        columns: &[String],
        batch_rows: usize,
    ) -> Result<Self, IngestError> {
        Self::open_in_segments(path, format, columns, batch_rows, SEGMENT_ROWS)
    }

    fn open_in_segments(
        path: &Path,
        format: Format,
        columns: &[String],
        batch_rows: usize,
        segment_size: usize,
    ) -> Result<Self, IngestError> {
        let mut batches = Self {
            path: path.to_owned(),
            format,
            columns: columns.to_vec(),
            batch_rows,
            segment_size,
            segment_start: 0,
            segment_rows: 0,
            batches: None,
        };
        batches.batches = Some(batches.scan_segment()?);
        Ok(batches)
    }

    /// Starts the scan of the segment at `segment_start` on its own thread.
    fn scan_segment(&self) -> Result<Receiver<PolarsResult<DataFrame>>, IngestError> {
        let projection: Vec<Expr> = self.columns.iter().map(|c| col(c.as_str())).collect();
        let (send, batches) = sync_channel::<PolarsResult<DataFrame>>(IN_FLIGHT);
        let on_error = send.clone();
        // The callback's `true` stops the scan: the reader went away.
        let sink = PlanCallback::new(move |df: DataFrame| Ok(send.send(Ok(df)).is_err()));
        let query = scan(&self.path, self.format)?
            .select(projection)
            .slice(self.segment_start as i64, self.segment_size as IdxSize)
            .sink_batches(sink, true, NonZeroUsize::new(self.batch_rows))
            .map_err(|e| IngestError::read(&self.path, e))?;
        std::thread::Builder::new()
            .name("mtrec-scan".into())
            .spawn(move || {
                if let Err(e) = query.collect_with_engine(Engine::Streaming) {
                    on_error.send(Err(e)).ok();
                }
            })
            .map_err(|e| IngestError::read(&self.path, e))?;
        Ok(batches)
    }
}

impl Iterator for TypedBatches {
    type Item = Result<DataFrame, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // The channel closes when the segment's scan has ended and dropped its map.
            match self.batches.as_ref()?.recv() {
                Ok(Ok(df)) if df.height() == 0 => continue,
                Ok(Ok(df)) => {
                    self.segment_rows += df.height();
                    return Some(Ok(df));
                }
                Ok(Err(e)) => {
                    self.batches = None;
                    return Some(Err(IngestError::read(&self.path, e)));
                }
                // A full segment may have rows after it; a short one was the file's end.
                Err(_) if self.segment_rows == self.segment_size => {
                    self.segment_start += self.segment_size;
                    self.segment_rows = 0;
                    match self.scan_segment() {
                        Ok(next) => self.batches = Some(next),
                        Err(e) => {
                            self.batches = None;
                            return Some(Err(e));
                        }
                    }
                }
                Err(_) => {
                    self.batches = None;
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_yield_every_row_once_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        let values: Vec<i64> = (0..10_000).collect();
        let mut df = df!("v" => &values, "w" => values.iter().map(|v| v * 2).collect::<Vec<_>>()).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        ParquetWriter::new(file).with_row_group_size(Some(1_000)).finish(&mut df).unwrap();
        // Segments that end inside a row group, on the file's end, and one larger than the file.
        for segment in [3_000, 2_500, 700, 1 << 21] {
            let batches =
                TypedBatches::open_in_segments(&path, Format::Parquet, &["v".to_owned()], 600, segment).unwrap();
            let mut read = Vec::new();
            for df in batches {
                let df = df.unwrap();
                assert!(df.height() <= 600, "{segment}: a batch of {} rows", df.height());
                assert_eq!(df.get_column_names(), ["v"]);
                read.extend(df.column("v").unwrap().i64().unwrap().into_no_null_iter());
            }
            assert_eq!(read, values, "segments of {segment} rows");
        }
        assert_eq!(row_count(&path, Format::Parquet), Some(10_000));
    }
}
