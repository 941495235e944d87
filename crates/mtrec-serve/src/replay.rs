//! `mtrec replay`: live traffic simulated from a raw log, for trying an online experiment end to
//! end. The newest rows of the log are sent to a running server as `/v1/score` requests (one
//! row, one request: the row's user, context and item, each feature in the object of its side),
//! and each answered row's outcome (the labels the log recorded for it) is written as the
//! product backend would record it: `user_id`, `item_id` and a column per task, named as the
//! task (binary 0/1, a regression in the label's own units, a multiclass class name; null where
//! the row has no label or the task's mask does not hold). A (user, item) pair appears once,
//! with its first answered row, as `mtrec ab --exposures` counts it.
//!
//! The synthetic data draws every label from a known probability given the user, item and
//! context, so the outcomes of replayed synthetic rows are what a live experiment would observe.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use mtrec_schema::{CsvOptions, Encoder, RawValue, Side, TaskType};
use polars::prelude::*;
use serde_json::{Map, Value};

/// What to replay, where to, and where the outcomes go.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// A bundle of the served model: which column feeds which side, and how labels are read.
    pub bundle: PathBuf,
    /// The raw log (CSV, Parquet or Arrow) the rows come from.
    pub log: PathBuf,
    /// The server, `http://host:port`.
    pub url: String,
    /// The model name to score with (default: the server's default model).
    pub model: Option<String>,
    /// The newest rows replayed.
    pub rows: usize,
    /// Requests in flight at once.
    pub connections: usize,
    /// The outcomes file (`.parquet`, or `.csv`).
    pub outcomes: PathBuf,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub sent: usize,
    /// Requests not answered 200 (the first error is in `first_error`).
    pub failed: usize,
    pub first_error: Option<String>,
    /// Requests per arm that answered.
    pub arms: BTreeMap<String, usize>,
    /// Outcome rows written.
    pub outcomes: usize,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Bundle(#[from] mtrec_model::bundle::BundleError),
    #[error(transparent)]
    Log(#[from] mtrec_ingest::IngestError),
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("--url {url}: {message}")]
    Url { url: String, message: String },
    #[error("writing {path}")]
    Write { path: PathBuf, source: PolarsError },
}

/// A cell as JSON, as a client would send it.
pub fn json_cell(value: AnyValue<'_>) -> Value {
    match value {
        AnyValue::Null => Value::Null,
        AnyValue::Boolean(b) => Value::Bool(b),
        AnyValue::String(s) => Value::String(s.to_owned()),
        AnyValue::StringOwned(s) => Value::String(s.to_string()),
        AnyValue::Float32(x) => serde_json::json!(x),
        AnyValue::Float64(x) => serde_json::json!(x),
        AnyValue::List(s) => Value::Array(s.iter().map(json_cell).collect()),
        other => other.extract::<i64>().map_or_else(|| Value::String(other.str_value().into_owned()), Value::from),
    }
}

/// The log's rows to replay, as JSON records of the columns the model and its tasks read.
fn read_rows(encoder: &Encoder, opts: &ReplayOptions) -> Result<Vec<Map<String, Value>>, ReplayError> {
    let pipeline = encoder.pipeline();
    let format = mtrec_ingest::source::detect_format(&opts.log, None)?;
    let csv = CsvOptions {
        null_values: pipeline.text.null_values.clone(),
        trim_whitespace: pipeline.text.trim_whitespace,
        ..Default::default()
    };
    let available = mtrec_ingest::source::column_names(&opts.log, format, &csv)?;
    let mut wanted: Vec<String> = pipeline.features.iter().map(|f| f.column.clone()).collect();
    wanted.extend(pipeline.ids.user.iter().chain(&pipeline.ids.item).cloned());
    for task in &pipeline.tasks {
        wanted.extend(task.columns().map(str::to_owned));
    }
    let mut needed: Vec<String> = Vec::new();
    for column in wanted {
        if available.contains(&column) && !needed.contains(&column) {
            needed.push(column);
        }
    }
    let referrer = |c: &str| format!("replayed column {c:?}");
    let df = mtrec_ingest::source::read_file(&opts.log, format, &csv, &needed, &referrer)?;
    let df = df.tail(Some(opts.rows));
    let columns: Vec<&Column> = needed
        .iter()
        .map(|c| df.column(c))
        .collect::<PolarsResult<_>>()
        .map_err(|e| ReplayError::Read { path: opts.log.clone(), message: e.to_string() })?;
    Ok((0..df.height())
        .map(|r| {
            needed
                .iter()
                .zip(&columns)
                .map(|(name, column)| (name.clone(), column.get(r).map_or(Value::Null, json_cell)))
                .collect()
        })
        .collect())
}

/// The `/v1/score` request of one row.
fn request(encoder: &Encoder, row: &Map<String, Value>) -> Value {
    let pipeline = encoder.pipeline();
    let mut objects = [Map::new(), Map::new(), Map::new()];
    let mut put = |side: usize, column: &str| {
        if let Some(v) = row.get(column) {
            objects[side].insert(column.to_owned(), v.clone());
        }
    };
    for f in &pipeline.features {
        put(crate::scoring::side_index(f.side), &f.column);
    }
    if let Some(c) = &pipeline.ids.user {
        put(crate::scoring::side_index(Side::User), c);
    }
    if let Some(c) = &pipeline.ids.item {
        put(crate::scoring::side_index(Side::Item), c);
    }
    let [user, item, context] = objects;
    serde_json::json!({ "user": user, "context": context, "items": [item] })
}

/// One outcome row: each task's label as the product would record it, `None` where unlabeled.
fn outcome(encoder: &Encoder, row: &Map<String, Value>) -> Vec<Option<Value>> {
    let pipeline = encoder.pipeline();
    (0..pipeline.tasks.len())
        .map(|t| {
            let task = &pipeline.tasks[t];
            let (label, mask) = encoder.record_label(t, row).ok()?;
            if mask == 0 {
                return None;
            }
            match task.kind {
                TaskType::Binary => Some(Value::from(f64::from(label))),
                // In the label's own units, as the exposure log holds regression outputs.
                TaskType::Regression => row
                    .get(&task.label.as_ref()?.column)
                    .and_then(RawValue::from_json)
                    .and_then(|v| v.as_number().ok().flatten())
                    .map(Value::from),
                TaskType::Multiclass => task.classes.get(label as usize).map(|c| Value::String(c.clone())),
            }
        })
        .collect()
}

fn id_text(row: &Map<String, Value>, column: Option<&String>) -> Option<String> {
    row.get(column?).and_then(mtrec_schema::value::json_key)
}

/// Sends one request per row over `connections` keep-alive connections; the arm of each answered
/// row (`None`: not answered 200), and the first error.
async fn send_all(
    authority: &str,
    path: &str,
    bodies: Vec<Bytes>,
    connections: usize,
) -> Result<(Vec<Option<String>>, Option<String>), String> {
    let bodies = Arc::new(bodies);
    let mut tasks = Vec::new();
    for c in 0..connections.max(1) {
        let (bodies, authority, path) = (bodies.clone(), authority.to_owned(), path.to_owned());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&authority).await.map_err(|e| e.to_string())?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut answers = Vec::new();
            let mut first_error = None;
            for i in (c..bodies.len()).step_by(connections.max(1)) {
                let request = hyper::Request::post(&path)
                    .header("host", &authority)
                    .header("content-type", "application/json")
                    .body(Full::new(bodies[i].clone()))
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                let arm = if status.is_success() {
                    serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["arm"].as_str().map(str::to_owned))
                } else {
                    first_error.get_or_insert_with(|| format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
                    None
                };
                answers.push((i, arm));
            }
            Ok::<_, String>((answers, first_error))
        }));
    }
    let mut arms = vec![None; bodies.len()];
    let mut first = None;
    for task in tasks {
        let (answers, error) = task.await.map_err(|e| e.to_string())??;
        for (i, arm) in answers {
            arms[i] = arm;
        }
        first = first.or(error);
    }
    Ok((arms, first))
}

/// Replays the log's newest rows against the server and writes their outcomes.
pub async fn replay(opts: &ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    let url_error = |message: &str| ReplayError::Url { url: opts.url.clone(), message: message.to_owned() };
    let authority = opts
        .url
        .strip_prefix("http://")
        .ok_or_else(|| url_error("only http://host:port is supported"))?
        .trim_end_matches('/')
        .to_owned();
    let path = match &opts.model {
        Some(name) => format!("/v1/models/{name}/score"),
        None => "/v1/score".to_owned(),
    };
    let (encoder, rows) = {
        let (bundle, log) = (opts.bundle.clone(), opts.clone());
        tokio::task::spawn_blocking(move || -> Result<_, ReplayError> {
            let bundle = mtrec_model::bundle::load(&bundle)?;
            let encoder = Encoder::new(bundle.pipeline);
            let rows = read_rows(&encoder, &log)?;
            Ok((encoder, rows))
        })
        .await
        .map_err(|e| url_error(&e.to_string()))??
    };
    let bodies: Vec<Bytes> =
        rows.iter().map(|row| Bytes::from(serde_json::to_vec(&request(&encoder, row)).unwrap_or_default())).collect();
    let (arms, first_error) = send_all(&authority, &path, bodies, opts.connections).await.map_err(|e| url_error(&e))?;

    let pipeline = encoder.pipeline();
    let mut seen = HashSet::new();
    let mut users: Vec<Option<String>> = Vec::new();
    let mut items: Vec<Option<String>> = Vec::new();
    let mut labels: Vec<Vec<Option<Value>>> = vec![Vec::new(); pipeline.tasks.len()];
    let mut summary = ReplaySummary { sent: rows.len(), first_error, ..Default::default() };
    for (row, arm) in rows.iter().zip(&arms) {
        let Some(arm) = arm else {
            summary.failed += 1;
            continue;
        };
        *summary.arms.entry(arm.clone()).or_default() += 1;
        let (user, item) = (id_text(row, pipeline.ids.user.as_ref()), id_text(row, pipeline.ids.item.as_ref()));
        if !seen.insert((user.clone(), item.clone())) {
            continue;
        }
        users.push(user);
        items.push(item);
        for (t, value) in outcome(&encoder, row).into_iter().enumerate() {
            labels[t].push(value);
        }
    }
    summary.outcomes = users.len();
    let mut columns: Vec<Column> =
        vec![Series::new("user_id".into(), users).into(), Series::new("item_id".into(), items).into()];
    for (task, values) in pipeline.tasks.iter().zip(labels) {
        let series = match task.kind {
            TaskType::Multiclass => {
                let names: Vec<Option<String>> =
                    values.into_iter().map(|v| v.and_then(|v| v.as_str().map(str::to_owned))).collect();
                Series::new(task.name.as_str().into(), names)
            }
            _ => {
                let numbers: Vec<Option<f64>> = values.into_iter().map(|v| v.and_then(|v| v.as_f64())).collect();
                Series::new(task.name.as_str().into(), numbers)
            }
        };
        columns.push(series.into());
    }
    let write_error = |source| ReplayError::Write { path: opts.outcomes.clone(), source };
    let mut df = DataFrame::new(summary.outcomes, columns).map_err(write_error)?;
    write_table(&mut df, &opts.outcomes).map_err(write_error)?;
    Ok(summary)
}

/// Writes a table atomically, as Parquet or (by extension) CSV.
fn write_table(df: &mut DataFrame, path: &Path) -> PolarsResult<()> {
    let mut staged = mtrec_schema::fs::StagedFile::new(path).map_err(PolarsError::from)?;
    if path.extension().is_some_and(|e| e == "csv") {
        CsvWriter::new(staged.file()).finish(df)?;
    } else {
        ParquetWriter::new(staged.file()).finish(df)?;
    }
    staged.commit().map_err(PolarsError::from)
}
