//! `mtrec ab --exposures DIR --outcomes FILE`: the A/B report of an online experiment, from the
//! server's exposure log joined with the outcomes the product recorded afterwards.
//!
//! - Exposures: the completed `*.parquet` files of the log directory (`mtrec serve
//!   --exposure-log`), one row per request with its items and a list column per output.
//!   Requests of the `stable` and `candidate` arms enter the comparison; pinned requests and
//!   requests without a user id are counted and left out. A (user, item) pair exposed more
//!   than once counts once, with its first exposure (files in name order: by server start, then
//!   sequence).
//! - Outcomes: a CSV, Parquet or Arrow file with `user_id`, `item_id` and one column per task to
//!   evaluate, named as the task (a binary label as 0/1 or a bool, a regression label in its own
//!   units, a multiclass label as the class name); an empty cell masks the task for that pair.
//!   Tasks without a column are not evaluated. Exposed pairs without an outcome row and outcome
//!   rows without an exposure are counted and left out.
//!
//! Every exposed pair with an outcome is one unit, clustered by user (the unit of randomization).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use mtrec_ingest::cells::Cells;
use mtrec_ingest::source::RawTable;
use mtrec_report::{
    AbReport, ArmSummary, EvalRows, ModelScores, OnlineArm, OnlineInput, ReportOptions, ReportRef, ReportTask, TaskKind,
};
use mtrec_schema::{CsvOptions, Scope, TextRules};
use polars::prelude::*;

use crate::error::EvalError;
use crate::reports::write_reports;

/// What to compare and how.
#[derive(Debug, Clone)]
pub struct OnlineOptions {
    pub exposures: PathBuf,
    pub outcomes: PathBuf,
    /// The experiment's configured candidate share (for the sample-ratio check).
    pub candidate_share: f64,
    /// The sample-ratio check fails below this p-value.
    pub srm_alpha: f64,
    pub report: ReportOptions,
    pub force: bool,
}

const ARMS: [&str; 2] = ["stable", "candidate"];

/// An output: its task and, for a multiclass task, its class.
type Output = (String, Option<String>);

/// One exposed (user, item) pair: its arm and outputs, then its outcome.
#[derive(Debug, Default)]
struct Pair {
    arm: usize,
    outputs: HashMap<Output, f64>,
    /// Per evaluated task, the label (`None`: masked).
    labels: Option<Vec<Option<f32>>>,
}

/// How a task's outputs were logged.
#[derive(Debug, Default)]
struct TaskLog {
    kind: String,
    classes: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct ArmCounts {
    versions: BTreeSet<String>,
    users: HashSet<String>,
    requests: HashSet<(usize, u64)>,
}

/// The exposure log, folded per (user, item).
#[derive(Debug, Default)]
struct Exposures {
    pairs: HashMap<(String, String), Pair>,
    tasks: BTreeMap<String, TaskLog>,
    arms: [ArmCounts; 2],
    excluded: HashSet<(usize, u64, u32)>,
}

fn bad(path: &Path, message: impl std::fmt::Display) -> EvalError {
    EvalError::Online { path: path.to_owned(), message: message.to_string() }
}

fn log_files(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| bad(dir, format!("reading the exposure log directory: {e}")))?;
    let mut files: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    files.sort();
    if files.is_empty() {
        return Err(bad(dir, "no completed exposure file (*.parquet) here: was the server run with --exposure-log?"));
    }
    Ok(files)
}

/// An output column of the log: `binary.<task>`, `regression.<task>` or
/// `multiclass.<task>.<class>`.
fn parse_output(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (kind, rest) = name.split_once('.')?;
    match kind {
        "binary" | "regression" => Some((kind, rest, None)),
        "multiclass" => rest.split_once('.').map(|(task, class)| (kind, task, Some(class))),
        _ => None,
    }
}

fn read_exposures(dir: &Path) -> Result<Exposures, EvalError> {
    let mut log = Exposures::default();
    for (f, path) in log_files(dir)?.iter().enumerate() {
        let file = std::fs::File::open(path).map_err(|e| bad(path, e))?;
        let df = ParquetReader::new(file).finish().map_err(|e| bad(path, e))?;
        let column = |name: &str| df.column(name).map_err(|e| bad(path, format!("not an exposure file: {e}")));
        let text = |name: &str| -> Result<StringChunked, EvalError> {
            let cast = column(name)?.cast(&DataType::String).map_err(|e| bad(path, e))?;
            Ok(cast.str().map_err(|e| bad(path, e))?.clone())
        };
        let (arm, version, user) = (text("arm")?, text("version")?, text("user_id")?);
        let request = column("request")?.cast(&DataType::UInt64).map_err(|e| bad(path, e))?;
        let request = request.u64().map_err(|e| bad(path, e))?.clone();
        let items = column("item_id")?.list().map_err(|e| bad(path, e))?.clone();
        let mut outputs = Vec::new();
        for name in df.get_column_names() {
            let Some((kind, task, class)) = parse_output(name) else { continue };
            let entry = log.tasks.entry(task.to_owned()).or_default();
            entry.kind = kind.to_owned();
            entry.classes.extend(class.map(str::to_owned));
            let values = column(name)?.list().map_err(|e| bad(path, e))?.clone();
            outputs.push(((task.to_owned(), class.map(str::to_owned)), values));
        }
        for r in 0..df.height() {
            let request = request.get(r).ok_or_else(|| bad(path, format!("row {r}: column request is null")))?;
            let item_ids = match items.get_as_series(r) {
                Some(ids) => {
                    ids.cast(&DataType::String).map_err(|e| bad(path, e))?.str().map_err(|e| bad(path, e))?.clone()
                }
                None => continue,
            };
            let arm_index = arm.get(r).and_then(|a| ARMS.iter().position(|&x| x == a));
            let (Some(arm_index), Some(user)) = (arm_index, user.get(r)) else {
                for position in 0..item_ids.len() {
                    log.excluded.insert((f, request, position as u32));
                }
                continue;
            };
            let counts = &mut log.arms[arm_index];
            counts.versions.insert(version.get(r).unwrap_or("").to_owned());
            counts.users.insert(user.to_owned());
            counts.requests.insert((f, request));
            let values: Vec<(&Output, Option<Float64Chunked>)> = outputs
                .iter()
                .map(|(output, lists)| {
                    let list = lists.get_as_series(r).and_then(|s| s.cast(&DataType::Float64).ok());
                    (output, list.and_then(|s| s.f64().ok().cloned()))
                })
                .collect();
            for position in 0..item_ids.len() {
                let Some(item) = item_ids.get(position) else {
                    log.excluded.insert((f, request, position as u32));
                    continue;
                };
                let key = (user.to_owned(), item.to_owned());
                // Only the first exposure of a pair counts: a later request's item is skipped.
                if log.pairs.contains_key(&key) {
                    continue;
                }
                let outputs = values
                    .iter()
                    .filter_map(|(output, list)| {
                        list.as_ref().and_then(|l| l.get(position)).map(|v| ((*output).clone(), v))
                    })
                    .collect();
                log.pairs.insert(key, Pair { arm: arm_index, outputs, labels: None });
            }
        }
    }
    Ok(log)
}

/// The tasks the outcomes file has a column for, in log order.
fn report_tasks(log: &Exposures, columns: &[String], path: &Path) -> Result<Vec<ReportTask>, EvalError> {
    let tasks: Vec<ReportTask> = log
        .tasks
        .iter()
        .filter(|(name, _)| columns.contains(name))
        .map(|(name, t)| {
            let kind = match t.kind.as_str() {
                "binary" => TaskKind::Binary,
                "regression" => TaskKind::Regression { label_log1p: false },
                _ => TaskKind::Multiclass { classes: t.classes.iter().cloned().collect() },
            };
            ReportTask { name: name.clone(), kind, scope: Scope::Pair }
        })
        .collect();
    if tasks.is_empty() {
        let logged: Vec<&str> = log.tasks.keys().map(String::as_str).collect();
        return Err(bad(
            path,
            format!(
                "no column named after a logged task (tasks: {}; columns: {})",
                logged.join(", "),
                columns.join(", ")
            ),
        ));
    }
    Ok(tasks)
}

/// Joins the outcomes to the exposed pairs; returns the outcome rows without an exposure.
fn join_outcomes(log: &mut Exposures, tasks: &[ReportTask], path: &Path) -> Result<usize, EvalError> {
    let format = mtrec_ingest::source::detect_format(path, None)?;
    let csv = CsvOptions::default();
    let mut needed = vec!["user_id".to_owned(), "item_id".to_owned()];
    needed.extend(tasks.iter().map(|t| t.name.clone()));
    let referrer = |c: &str| format!("outcome column {c:?}");
    let df = mtrec_ingest::source::read_file(path, format, &csv, &needed, &referrer)?;
    // Ids keyed as the server keys them (category keys: a 17 and a 17.0 are one id).
    let table = RawTable::standalone(df, path, TextRules::default());
    let (users, items) = (Cells::of(&table, "user_id")?, Cells::of(&table, "item_id")?);
    let df = &table.df;
    let mut labels: Vec<Vec<Option<f32>>> = Vec::with_capacity(tasks.len());
    for task in tasks {
        let column = df.column(&task.name).map_err(|e| bad(path, e))?;
        let values: Vec<Option<f32>> = match &task.kind {
            TaskKind::Multiclass { classes } => {
                let cast = column.cast(&DataType::String).map_err(|e| bad(path, e))?;
                let names = cast.str().map_err(|e| bad(path, e))?;
                (0..names.len())
                    .map(|r| match names.get(r) {
                        None => Ok(None),
                        Some(v) => classes.iter().position(|c| c == v).map(|i| Some(i as f32)).ok_or_else(|| {
                            bad(
                                path,
                                format!("row {r}, column {}: class {v:?} is none of {}", task.name, classes.join(", ")),
                            )
                        }),
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => {
                let cast =
                    column.cast(&DataType::Float64).map_err(|e| bad(path, format!("column {}: {e}", task.name)))?;
                let numbers = cast.f64().map_err(|e| bad(path, e))?;
                (0..numbers.len()).map(|r| numbers.get(r).filter(|x| x.is_finite()).map(|x| x as f32)).collect()
            }
        };
        labels.push(values);
    }
    let mut unmatched = 0;
    for r in 0..df.height() {
        let (Some(user), Some(item)) = (users.get(r).category_key(), items.get(r).category_key()) else {
            return Err(bad(path, format!("row {r}: user_id and item_id must not be empty")));
        };
        let Some(pair) = log.pairs.get_mut(&(user.to_string(), item.to_string())) else {
            unmatched += 1;
            continue;
        };
        if pair.labels.is_some() {
            return Err(bad(path, format!("row {r}: a second outcome row for user {user:?}, item {item:?}")));
        }
        pair.labels = Some(labels.iter().map(|l| l[r]).collect());
    }
    Ok(unmatched)
}

/// One arm's rows (pairs with an outcome, in (user, item) order) and outputs.
fn arm(log: &Exposures, tasks: &[ReportTask], arm: usize) -> OnlineArm {
    let mut keys: Vec<&(String, String)> =
        log.pairs.iter().filter(|(_, p)| p.arm == arm && p.labels.is_some()).map(|(k, _)| k).collect();
    keys.sort();
    let mut user_ids: BTreeMap<&str, u64> = BTreeMap::new();
    let mut item_ids: BTreeMap<&str, u64> = BTreeMap::new();
    let mut rows = EvalRows {
        labels: vec![Vec::with_capacity(keys.len()); tasks.len()],
        masks: vec![Vec::with_capacity(keys.len()); tasks.len()],
        ..EvalRows::default()
    };
    let mut outputs: Vec<Vec<f32>> = vec![Vec::new(); tasks.len()];
    for (user, item) in keys {
        let pair = &log.pairs[&(user.clone(), item.clone())];
        let next = user_ids.len() as u64;
        rows.user.push(*user_ids.entry(user).or_insert(next));
        let next = item_ids.len() as u64;
        rows.item.push(*item_ids.entry(item).or_insert(next));
        let labels = pair.labels.as_ref().expect("filtered above");
        for (t, task) in tasks.iter().enumerate() {
            let values: Vec<Option<f64>> = match &task.kind {
                TaskKind::Multiclass { classes } => {
                    classes.iter().map(|c| pair.outputs.get(&(task.name.clone(), Some(c.clone()))).copied()).collect()
                }
                _ => vec![pair.outputs.get(&(task.name.clone(), None)).copied()],
            };
            // A pair this version did not score on the task is masked for it.
            let scored = values.iter().all(|v| v.is_some_and(f64::is_finite));
            let label = labels[t].filter(|_| scored);
            rows.labels[t].push(label.unwrap_or(0.0));
            rows.masks[t].push(u8::from(label.is_some()));
            outputs[t].extend(values.iter().map(|v| v.unwrap_or(0.0) as f32));
        }
    }
    let counts = &log.arms[arm];
    let versions: Vec<String> = counts.versions.iter().cloned().collect();
    let summary = ArmSummary {
        arm: ARMS[arm].to_owned(),
        versions: versions.clone(),
        users: counts.users.len(),
        requests: counts.requests.len(),
        exposures: log.pairs.values().filter(|p| p.arm == arm).count(),
        rows: rows.len(),
    };
    let scores = ModelScores {
        name: format!("{} ({})", ARMS[arm], versions.join(", ")),
        description: format!("the users the experiment routed to the {} label", ARMS[arm]),
        provenance: serde_json::json!({ "arm": ARMS[arm], "versions": versions }),
        outputs,
        ..ModelScores::default()
    };
    OnlineArm { rows, scores, summary }
}

/// Reads, joins and compares; writes `report.html`, `report.md` and `report.json` into `out`.
pub fn ab_online(opts: &OnlineOptions, out: &Path) -> Result<AbReport, EvalError> {
    if out.exists() && !opts.force {
        return Err(EvalError::OutputExists { path: out.to_owned() });
    }
    let mut log = read_exposures(&opts.exposures)?;
    let format = mtrec_ingest::source::detect_format(&opts.outcomes, None)?;
    let columns = mtrec_ingest::source::column_names(&opts.outcomes, format, &CsvOptions::default())?;
    let tasks = report_tasks(&log, &columns, &opts.outcomes)?;
    let unmatched_outcomes = join_outcomes(&mut log, &tasks, &opts.outcomes)?;
    let unmatched_exposures = log.pairs.values().filter(|p| p.labels.is_none()).count();
    let (a, b) = (arm(&log, &tasks, 0), arm(&log, &tasks, 1));
    for side in [&a, &b] {
        if side.rows.is_empty() {
            return Err(bad(
                &opts.outcomes,
                format!(
                    "the {} arm has no exposed pair with an outcome: there is nothing to compare",
                    side.summary.arm
                ),
            ));
        }
    }
    let input = OnlineInput {
        tasks,
        a,
        b,
        expected_share_b: opts.candidate_share,
        srm_alpha: opts.srm_alpha,
        unmatched_exposures,
        unmatched_outcomes,
        excluded_exposures: log.excluded.len(),
    };
    let report = mtrec_report::compare_online(&input, &opts.report)?;
    write_reports(out, ReportRef::from(&report), &serde_json::to_value(&report).expect("reports serialize"))?;
    Ok(report)
}
