//! The exposure log: what every `/v1/score` request was answered (user id, arm, model version,
//! item ids and every task's output), appended to Parquet files off the request path, for the
//! online A/B report (`mtrec ab --exposures`).
//!
//! Scoring hands each record to a bounded queue without waiting; a writer thread drains it.
//! When the queue is full the record is dropped and counted (`mtrec_exposure_records_dropped_total`): logging never slows scoring down. Files are written as
//! `exposures-<start ms>-<seq>.parquet.partial` and renamed to `.parquet` when complete (rotated
//! by size or age, and on shutdown), so a reader only ever sees whole files.
//!
//! Layout: one row per item and output: `time_ms`, `request` (sequence number of this server
//! process), `model`, `version`, `arm`, `user_id` (the id's text, null when the request had
//! none), `item_id`, `position` (the item's index in the request), `task`, `kind` (`binary`,
//! `regression` or `multiclass`), `class` (a multiclass output's class, else null) and `value`
//! (the probability, or a regression's value in the label's units).

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use polars::prelude::*;
use prometheus_client::metrics::counter::Counter;

use crate::api::{PairScores, TaskOutput};
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
    pub results: Vec<PairScores>,
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

/// Rows buffered before they are written as one row group.
const BATCH_ROWS: usize = 8_192;
/// A quiet server still writes what it holds this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Column buffers of the rows not yet written.
#[derive(Debug, Default)]
struct Rows {
    time_ms: Vec<i64>,
    request: Vec<u64>,
    model: Vec<String>,
    version: Vec<String>,
    arm: Vec<&'static str>,
    user_id: Vec<Option<String>>,
    item_id: Vec<Option<String>>,
    position: Vec<u32>,
    task: Vec<String>,
    kind: Vec<&'static str>,
    class: Vec<Option<String>>,
    value: Vec<f64>,
}

impl Rows {
    fn len(&self) -> usize {
        self.value.len()
    }

    fn push_output(
        &mut self,
        e: &Exposure,
        request: u64,
        position: usize,
        item_id: &Option<String>,
        output: Output<'_>,
    ) {
        self.time_ms.push(e.time_ms);
        self.request.push(request);
        self.model.push(e.model.clone());
        self.version.push(e.version.clone());
        self.arm.push(e.arm.as_str());
        self.user_id.push(e.user_id.clone());
        self.item_id.push(item_id.clone());
        self.position.push(position as u32);
        self.task.push(output.task.to_owned());
        self.kind.push(output.kind);
        self.class.push(output.class.map(str::to_owned));
        self.value.push(output.value);
    }

    fn push(&mut self, e: &Exposure, request: u64) {
        for (position, pair) in e.results.iter().enumerate() {
            let item_id = pair.item_id.as_ref().map(crate::repository::routing::id_key);
            for (task, output) in &pair.scores {
                match output {
                    TaskOutput::Binary { probability } => self.push_output(
                        e,
                        request,
                        position,
                        &item_id,
                        Output { task, kind: "binary", class: None, value: f64::from(*probability) },
                    ),
                    TaskOutput::Regression { value, .. } => self.push_output(
                        e,
                        request,
                        position,
                        &item_id,
                        Output { task, kind: "regression", class: None, value: *value },
                    ),
                    TaskOutput::Multiclass { probabilities, .. } => {
                        for (class, p) in probabilities {
                            self.push_output(
                                e,
                                request,
                                position,
                                &item_id,
                                Output { task, kind: "multiclass", class: Some(class), value: f64::from(*p) },
                            );
                        }
                    }
                }
            }
        }
    }

    fn take_frame(&mut self) -> PolarsResult<DataFrame> {
        let rows = std::mem::take(self);
        let n = rows.len();
        let columns: Vec<Column> = vec![
            Series::new("time_ms".into(), rows.time_ms).into(),
            Series::new("request".into(), rows.request).into(),
            Series::new("model".into(), rows.model).into(),
            Series::new("version".into(), rows.version).into(),
            Series::new("arm".into(), rows.arm).into(),
            Series::new("user_id".into(), rows.user_id).into(),
            Series::new("item_id".into(), rows.item_id).into(),
            Series::new("position".into(), rows.position).into(),
            Series::new("task".into(), rows.task).into(),
            Series::new("kind".into(), rows.kind).into(),
            Series::new("class".into(), rows.class).into(),
            Series::new("value".into(), rows.value).into(),
        ];
        DataFrame::new(n, columns)
    }
}

struct Output<'a> {
    task: &'a str,
    kind: &'static str,
    class: Option<&'a str>,
    value: f64,
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
    started_ms: i64,
}

impl Writer {
    fn new(config: ExposureConfig, counters: ExposureCounters) -> Self {
        let started_ms = now_ms();
        Self { config, counters, rows: Rows::default(), records: 0, next_request: 0, file: None, files: 0, started_ms }
    }

    fn run(mut self, receiver: &Receiver<Exposure>) {
        loop {
            match receiver.recv_timeout(FLUSH_EVERY) {
                Ok(exposure) => {
                    self.rows.push(&exposure, self.next_request);
                    self.next_request += 1;
                    self.records += 1;
                    if self.rows.len() >= BATCH_ROWS {
                        self.flush();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.flush(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.flush();
        self.complete();
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
        if self.file.is_none() {
            self.file = Some(self.open(&frame)?);
        }
        let file = self.file.as_mut().expect("opened above");
        file.writer.write_batch(&frame)?;
        Ok(())
    }

    fn open(&mut self, first: &DataFrame) -> Result<OpenFile, Box<dyn std::error::Error>> {
        let seq = self.files;
        self.files += 1;
        let name = format!("exposures-{}-{seq:06}.parquet", self.started_ms);
        let complete = self.config.dir.join(&name);
        let partial = self.config.dir.join(format!("{name}.partial"));
        let file = std::fs::File::create(&partial)?;
        let writer = ParquetWriter::new(file).batched(first.schema())?;
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
