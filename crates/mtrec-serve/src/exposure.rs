//! The exposure log: what every `/v1/score` request was answered (user id, arm, model version,
//! item ids and every task's output), appended to Parquet files off the request path, for the
//! online A/B report (`mtrec ab --exposures`).
//!
//! Scoring hands each record to a bounded queue without waiting; a writer thread drains it.
//! When the queue is full the record is dropped and counted
//! (`mtrec_exposure_records_dropped_total`): scoring never waits for the log. Files are written
//! as `exposures-<start ms>-<process token>-<seq>.parquet.partial` (replicas may share the
//! directory) and renamed to `.parquet` when complete (rotated by size or age, on shutdown, and
//! when a record brings an output the file lacks), so a reader only ever sees whole files.
//!
//! Layout: one row per request: `time_ms`, `request` (sequence number of this server process),
//! `model`, `version`, `arm`, `user_id` (the id's text, null when the request had none),
//! `item_id` (a list: the items in request order), then a list column per output, its values in
//! item order: `binary.<task>` (the probability), `regression.<task>` (the value in the label's
//! units) and `multiclass.<task>.<class>` (each class's probability); null where the version that
//! scored the request has no such task. Lists keep what a request shares out of every item's row:
//! the writer's CPU per item stays small next to scoring's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use polars::prelude::*;
use prometheus_client::metrics::counter::Counter;

use crate::repository::Arm;

/// Where and how the exposure log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposureConfig {
    pub dir: PathBuf,
    /// Records (requests) waiting for the writer at most; more are dropped.
    pub queue: usize,
    /// A file is completed once it holds this many bytes...
    pub rotate_bytes: u64,
    /// ... or once it is this old.
    pub rotate_after: Duration,
}

impl ExposureConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), queue: 10_000, rotate_bytes: 64 << 20, rotate_after: Duration::from_secs(300) }
    }
}

/// One answered request.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    pub time_ms: i64,
    pub model: String,
    pub version: String,
    pub arm: Arm,
    pub user_id: Option<String>,
    /// The items in request order: each id's text as a category key (a number 1.0 and a string
    /// "1" are one item), none when the item had no id.
    pub item_ids: Vec<Option<String>>,
    /// Every output's column ([`output_column`]'s name) and its values in item order.
    pub outputs: Vec<(String, Vec<f64>)>,
}

/// Counters the log keeps (registered in the server's metrics).
#[derive(Debug, Clone, Default)]
pub struct ExposureCounters {
    /// Records handed to the writer.
    pub queued: Counter,
    /// Records dropped because the queue was full.
    pub dropped: Counter,
    /// Records written to a file.
    pub written: Counter,
    /// Batches lost to a write error (logged with the error).
    pub write_errors: Counter,
}

/// The sending side; [`ExposureLog::close`] flushes and completes the current file.
#[derive(Debug)]
pub struct ExposureLog {
    sender: Mutex<Option<SyncSender<Exposure>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    counters: ExposureCounters,
}

impl ExposureLog {
    /// Creates the directory and starts the writer thread.
    pub fn start(config: ExposureConfig, counters: ExposureCounters) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.dir)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(config.queue);
        let writer_counters = counters.clone();
        let writer = std::thread::Builder::new()
            .name("exposure-log".to_owned())
            .spawn(move || Writer::new(config, writer_counters).run(&receiver))?;
        Ok(Self { sender: Mutex::new(Some(sender)), writer: Mutex::new(Some(writer)), counters })
    }

    /// A log whose queue nobody drains: for tests of a full queue.
    pub fn stalled(queue: usize, counters: ExposureCounters) -> (Self, Receiver<Exposure>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(queue);
        (Self { sender: Mutex::new(Some(sender)), writer: Mutex::new(None), counters }, receiver)
    }

    /// Queues a record without waiting; a full queue drops it (counted).
    pub fn record(&self, exposure: Exposure) {
        let sender = self.sender.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(sender) = sender else { return };
        match sender.try_send(exposure) {
            Ok(()) => {
                self.counters.queued.inc();
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.inc();
            }
        }
    }

    /// Stops taking records, writes what is queued and completes the current file.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(writer) = writer {
            if writer.join().is_err() {
                tracing::error!("the exposure log writer panicked");
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Items of the requests buffered before they are written as one row group: large groups keep
/// the writer's CPU per item low (it shares the cores with scoring).
const BATCH_ITEMS: usize = 65_536;
/// A quiet server still writes what it holds this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long the writer sleeps when the queue is empty.
const IDLE_POLL: Duration = Duration::from_millis(10);

/// The name of an output's column: `binary.<task>` (a probability), `regression.<task>` (the
/// value in the label's units) or `multiclass.<task>.<class>` (a class's probability). Task names
/// hold letters, digits and `_` only, so the kind and the task split off at the first two dots.
pub fn output_column(kind: &str, task: &str, class: Option<&str>) -> String {
    match class {
        Some(class) => format!("{kind}.{task}.{class}"),
        None => format!("{kind}.{task}"),
    }
}

/// The requests not yet written, one row each, column by column. The output columns are fixed
/// for a file; a record with an output the file lacks starts a new file with the union (in
/// practice: when a version with another task set starts serving).
struct Rows {
    outputs: Vec<String>,
    index: HashMap<String, usize>,
    /// Items of the buffered requests: what decides a flush.
    items: usize,
    time_ms: Vec<i64>,
    request: Vec<u64>,
    model: StringChunkedBuilder,
    version: StringChunkedBuilder,
    arm: StringChunkedBuilder,
    user_id: StringChunkedBuilder,
    item_id: ListStringChunkedBuilder,
    values: Vec<ListPrimitiveChunkedBuilder<Float64Type>>,
}

impl Rows {
    fn new(outputs: Vec<String>) -> Self {
        let requests = BATCH_ITEMS / 16;
        let text = |name: &str| StringChunkedBuilder::new(name.into(), requests);
        let list = |name: &str| {
            ListPrimitiveChunkedBuilder::<Float64Type>::new(name.into(), requests, BATCH_ITEMS, DataType::Float64)
        };
        Self {
            index: outputs.iter().enumerate().map(|(i, name)| (name.clone(), i)).collect(),
            values: outputs.iter().map(|name| list(name)).collect(),
            outputs,
            items: 0,
            time_ms: Vec::with_capacity(requests),
            request: Vec::with_capacity(requests),
            model: text("model"),
            version: text("version"),
            arm: text("arm"),
            user_id: text("user_id"),
            item_id: ListStringChunkedBuilder::new("item_id".into(), requests, BATCH_ITEMS),
        }
    }

    fn len(&self) -> usize {
        self.time_ms.len()
    }

    /// The output columns of a record.
    fn columns_of(e: &Exposure) -> Vec<String> {
        e.outputs.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Whether this buffer's columns hold every output of the record.
    fn holds(&self, columns: &[String]) -> bool {
        columns.iter().all(|c| self.index.contains_key(c))
    }

    fn push(&mut self, e: &Exposure, request: u64) {
        self.time_ms.push(e.time_ms);
        self.request.push(request);
        self.model.append_value(&e.model);
        self.version.append_value(&e.version);
        self.arm.append_value(e.arm.as_str());
        self.user_id.append_option(e.user_id.as_deref());
        self.item_id.append_trusted_len_iter(e.item_ids.iter().map(Option::as_deref));
        let mut filled = vec![false; self.values.len()];
        for (name, values) in &e.outputs {
            let slot = self.index[name];
            if values.len() == e.item_ids.len() && !values.is_empty() && !filled[slot] {
                self.values[slot].append_slice(values);
                filled[slot] = true;
            }
        }
        for (slot, _) in filled.iter().enumerate().filter(|(_, f)| !**f) {
            // The version that scored the request has no such output.
            self.values[slot].append_null();
        }
        self.items += e.item_ids.len();
    }

    /// The buffered requests as a frame; the buffer starts over with the same columns.
    fn take_frame(&mut self) -> PolarsResult<DataFrame> {
        let mut rows = std::mem::replace(self, Rows::new(self.outputs.clone()));
        let n = rows.len();
        let mut columns: Vec<Column> = vec![
            Series::new("time_ms".into(), rows.time_ms).into(),
            Series::new("request".into(), rows.request).into(),
            rows.model.finish().into_series().into(),
            rows.version.finish().into_series().into(),
            rows.arm.finish().into_series().into(),
            rows.user_id.finish().into_series().into(),
            rows.item_id.finish().into_series().into(),
        ];
        for values in &mut rows.values {
            columns.push(values.finish().into_series().into());
        }
        DataFrame::new(n, columns)
    }
}

/// The file being written.
struct OpenFile {
    partial: PathBuf,
    complete: PathBuf,
    opened: Instant,
    writer: polars::io::parquet::write::BatchedWriter<std::fs::File>,
}

struct Writer {
    config: ExposureConfig,
    counters: ExposureCounters,
    rows: Rows,
    records: u64,
    next_request: u64,
    file: Option<OpenFile>,
    files: u64,
    /// `<start ms>-<process token>`: the prefix of this process's file names.
    prefix: String,
}

impl Writer {
    fn new(config: ExposureConfig, counters: ExposureCounters) -> Self {
        // Replicas may share one log directory: the token (the time in nanoseconds, the process
        // id and the host name, hashed) keeps two processes started in the same millisecond apart.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let token = xxhash_rust::xxh3::xxh3_64(format!("{nanos}/{}/{host}", std::process::id()).as_bytes());
        let prefix = format!("{}-{:08x}", now_ms(), token as u32);
        Self {
            config,
            counters,
            rows: Rows::new(Vec::new()),
            records: 0,
            next_request: 0,
            file: None,
            files: 0,
            prefix,
        }
    }

    /// Drains the queue until every sender is gone. An empty queue is polled after a short sleep
    /// rather than waited on: a blocked receiver would be woken by every request, a system call
    /// on the scoring threads and a context switch here.
    fn run(mut self, receiver: &Receiver<Exposure>) {
        let mut flushed = Instant::now();
        loop {
            match receiver.try_recv() {
                Ok(exposure) => {
                    self.add(&exposure);
                    if self.rows.items >= BATCH_ITEMS {
                        self.flush();
                        flushed = Instant::now();
                    }
                }
                Err(TryRecvError::Empty) => {
                    if flushed.elapsed() >= FLUSH_EVERY {
                        self.flush();
                        flushed = Instant::now();
                    }
                    std::thread::sleep(IDLE_POLL);
                }
                Err(TryRecvError::Disconnected) => break,
            }
        }
        self.flush();
        self.complete();
    }

    fn add(&mut self, exposure: &Exposure) {
        let columns = Rows::columns_of(exposure);
        if !self.rows.holds(&columns) {
            // A new output: the current file's columns are fixed, so it is completed and the
            // next one holds the union.
            self.flush();
            self.complete();
            let mut union = self.rows.outputs.clone();
            union.extend(columns.iter().filter(|c| !union.contains(c)).cloned().collect::<Vec<_>>());
            self.rows = Rows::new(union);
        }
        self.rows.push(exposure, self.next_request);
        self.next_request += 1;
        self.records += 1;
    }

    /// Writes the buffered rows, then completes the file if it is big or old enough.
    fn flush(&mut self) {
        if self.rows.len() > 0 {
            let records = std::mem::take(&mut self.records);
            match self.write() {
                Ok(()) => {
                    self.counters.written.inc_by(records);
                }
                Err(e) => {
                    self.counters.write_errors.inc();
                    tracing::error!(error = %e, records, "the exposure log lost a batch");
                    // Start a fresh file next time rather than append to one in an unknown state.
                    self.file = None;
                }
            }
        }
        let due = self.file.as_ref().is_some_and(|f| {
            f.opened.elapsed() >= self.config.rotate_after
                || std::fs::metadata(&f.partial).is_ok_and(|m| m.len() >= self.config.rotate_bytes)
        });
        if due {
            self.complete();
        }
    }

    fn write(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let frame = self.rows.take_frame()?;
        let file = match self.file.take() {
            Some(file) => file,
            None => self.open(&frame)?,
        };
        self.file.insert(file).writer.write_batch(&frame)?;
        Ok(())
    }

    fn open(&mut self, first: &DataFrame) -> Result<OpenFile, Box<dyn std::error::Error>> {
        let seq = self.files;
        self.files += 1;
        let name = format!("exposures-{}-{seq:06}.parquet", self.prefix);
        let complete = self.config.dir.join(&name);
        let partial = self.config.dir.join(format!("{name}.partial"));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&partial)?;
        // Snappy and no column statistics: light on the CPU the server scores with; every Parquet
        // reader reads it.
        let writer = ParquetWriter::new(file)
            .with_compression(ParquetCompression::Snappy)
            .with_statistics(StatisticsOptions::empty())
            .batched(first.schema())?;
        Ok(OpenFile { partial, complete, opened: Instant::now(), writer })
    }

    /// Finishes the current file and gives it its final name.
    fn complete(&mut self) {
        let Some(file) = self.file.take() else { return };
        let done = file
            .writer
            .finish()
            .map_err(|e| e.to_string())
            .and_then(|_| std::fs::rename(&file.partial, &file.complete).map_err(|e| e.to_string()));
        if let Err(error) = done {
            self.counters.write_errors.inc();
            tracing::error!(error, file = %file.partial.display(), "the exposure log could not complete a file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tasks: &[&str], items: usize) -> Exposure {
        Exposure {
            time_ms: 1,
            model: "m".to_owned(),
            version: "1".to_owned(),
            arm: Arm::Stable,
            user_id: Some("u".to_owned()),
            item_ids: (0..items).map(|i| Some(i.to_string())).collect(),
            outputs: tasks.iter().map(|t| (output_column("binary", t, None), vec![0.25; items])).collect(),
        }
    }

    #[test]
    fn a_new_output_starts_a_file_with_the_union_and_missing_outputs_are_null() {
        let dir = tempfile::tempdir().unwrap();
        let counters = ExposureCounters::default();
        let log = ExposureLog::start(ExposureConfig::new(dir.path()), counters.clone()).unwrap();
        log.record(record(&["click"], 2));
        log.record(record(&["click", "convert"], 1));
        log.record(record(&["click"], 3));
        log.close();
        assert_eq!(counters.written.get(), 3);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        let read = |path: &PathBuf| ParquetReader::new(std::fs::File::open(path).unwrap()).finish().unwrap();
        let (first, second) = (read(&files[0]), read(&files[1]));
        let outputs =
            |df: &DataFrame| -> Vec<String> { df.get_column_names().iter().skip(7).map(|c| c.to_string()).collect() };
        assert_eq!(outputs(&first), ["binary.click"]);
        assert_eq!(outputs(&second), ["binary.click", "binary.convert"]);
        assert_eq!(second.height(), 2);
        let convert = second.column("binary.convert").unwrap().list().unwrap().clone();
        assert_eq!(convert.get_as_series(0).unwrap().len(), 1);
        assert!(convert.get_as_series(1).is_none(), "the third request has no convert output");
        let items = first.column("item_id").unwrap().list().unwrap().get_as_series(0).unwrap();
        assert_eq!(items.str().unwrap().get(1), Some("1"));
    }
}
