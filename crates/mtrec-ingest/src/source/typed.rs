//! Reading a Parquet or Arrow IPC file in batches of rows through Polars' streaming engine:
//! a projected scan whose batches arrive in file order over a bounded channel, so memory holds
//! a few batches whatever the file's size.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

use mtrec_schema::Format;
use polars::prelude::*;

use crate::error::IngestError;

/// Batches in flight between the scan and the reader.
const IN_FLIGHT: usize = 2;

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

/// The batches of `columns` of a Parquet or Arrow IPC file, in file order.
pub(crate) struct TypedBatches {
    path: PathBuf,
    batches: Receiver<PolarsResult<DataFrame>>,
}

impl TypedBatches {
    /// Starts the scan on Polars' streaming engine; batches hold about `batch_rows` rows.
    pub(crate) fn open(
        path: &Path,
        format: Format,
        columns: &[String],
        batch_rows: usize,
    ) -> Result<Self, IngestError> {
        let projection: Vec<Expr> = columns.iter().map(|c| col(c.as_str())).collect();
        let (send, batches) = sync_channel::<PolarsResult<DataFrame>>(IN_FLIGHT);
        let on_error = send.clone();
        // The callback's `true` stops the scan: the reader went away.
        let sink = PlanCallback::new(move |df: DataFrame| Ok(send.send(Ok(df)).is_err()));
        let query = scan(path, format)?
            .select(projection)
            .sink_batches(sink, true, NonZeroUsize::new(batch_rows))
            .map_err(|e| IngestError::read(path, e))?;
        std::thread::Builder::new()
            .name("mtrec-scan".into())
            .spawn(move || {
                if let Err(e) = query.collect_with_engine(Engine::Streaming) {
                    on_error.send(Err(e)).ok();
                }
            })
            .map_err(|e| IngestError::read(path, e))?;
        Ok(Self { path: path.to_owned(), batches })
    }
}

impl Iterator for TypedBatches {
    type Item = Result<DataFrame, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.batches.recv().ok()? {
                Ok(df) if df.height() == 0 => continue,
                Ok(df) => return Some(Ok(df)),
                Err(e) => return Some(Err(IngestError::read(&self.path, e))),
            }
        }
    }
}
