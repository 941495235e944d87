//! # mtrec-eval
//!
//! `mtrec eval` and `mtrec ab`: score one split of an ingest directory with one or two bundles
//! (and optionally a single-task baseline) through the model's one forward function
//! ([`mtrec_train::eval::predict_all`]), hand the scores, labels, masks and ids to
//! [`mtrec_report`], and write `report.html`, `report.md` and `report.json` into a directory,
//! atomically (a temporary sibling renamed into place).
//!
//! Every bundle must have been trained on the ingest's feature pipeline, so all models score
//! the very same encoded rows.
//!
//! [`experiment`] runs `mtrec experiment`: a grid of configurations × seeds and its summary.

pub mod experiment;

use std::path::{Path, PathBuf};

use mtrec_ingest::encoded::EncodedDataset;
use mtrec_model::bundle::{self, Bundle};
use mtrec_report::{
    AbReport, EvalReport, EvalRows, History, ModelScores, ReportOptions, ReportRef, Scope, TaskInfo, TaskKind,
};
use mtrec_schema::TaskType;

/// Report file names inside the output directory.
pub mod files {
    pub const HTML: &str = "report.html";
    pub const MARKDOWN: &str = "report.md";
    pub const JSON: &str = "report.json";
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error(transparent)]
    Ingest(#[from] mtrec_ingest::IngestError),
    #[error(transparent)]
    Report(#[from] mtrec_report::ReportError),
    #[error(transparent)]
    Train(#[from] mtrec_train::TrainError),
    /// A bad experiment file.
    #[error("{0}")]
    Config(String),
    /// A bundle that cannot be compared on this data or with the other bundle.
    #[error("{0}")]
    Incompatible(String),
    #[error("output {path} already exists (pass --force to replace it)")]
    OutputExists { path: PathBuf },
    #[error("writing {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// What to score and how to report it.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Ingest directory (`mtrec ingest` output).
    pub data: PathBuf,
    pub split: String,
    pub batch_size: usize,
    pub report: ReportOptions,
    /// Replace an existing output directory.
    pub force: bool,
}

/// `mtrec eval`: one model's report, written to `out`.
pub fn eval(bundle_dir: &Path, opts: &EvalOptions, out: &Path) -> Result<EvalReport, EvalError> {
    check_out(out, opts.force)?;
    let bundle = bundle::load(bundle_dir)?;
    let data = load_data(&bundle, bundle_dir, opts)?;
    let tasks = task_infos(&bundle);
    let scores = model_scores(&bundle, bundle_dir, &data, &tasks, opts.batch_size, true)?;
    let report = mtrec_report::evaluate(&eval_rows(&data), &tasks, &scores, &opts.report)?;
    write_reports(out, ReportRef::from(&report), &serde_json::to_value(&report).expect("reports serialize"))?;
    Ok(report)
}

/// `mtrec ab`: models A and B (and a single-task baseline, when given) on the same rows.
pub fn ab(
    a_dir: &Path,
    b_dir: &Path,
    baseline_dir: Option<&Path>,
    opts: &EvalOptions,
    out: &Path,
) -> Result<AbReport, EvalError> {
    check_out(out, opts.force)?;
    let a = bundle::load(a_dir)?;
    let b = bundle::load(b_dir)?;
    let data = load_data(&a, a_dir, opts)?;
    check_same_pipeline(&a, a_dir, &b, b_dir)?;
    let tasks = task_infos(&a);
    let a_scores = model_scores(&a, a_dir, &data, &tasks, opts.batch_size, true)?;
    let b_scores = model_scores(&b, b_dir, &data, &tasks, opts.batch_size, true)?;
    let baseline = match baseline_dir {
        Some(dir) => {
            let base = bundle::load(dir)?;
            check_same_pipeline(&a, a_dir, &base, dir)?;
            Some(model_scores(&base, dir, &data, &tasks, opts.batch_size, false)?)
        }
        None => None,
    };
    let report =
        mtrec_report::compare(&eval_rows(&data), &tasks, &a_scores, &b_scores, baseline.as_ref(), &opts.report)?;
    write_reports(out, ReportRef::from(&report), &serde_json::to_value(&report).expect("reports serialize"))?;
    Ok(report)
}

fn check_out(out: &Path, force: bool) -> Result<(), EvalError> {
    if out.exists() && !force {
        return Err(EvalError::OutputExists { path: out.to_owned() });
    }
    Ok(())
}

fn load_data(bundle: &Bundle, dir: &Path, opts: &EvalOptions) -> Result<EncodedDataset, EvalError> {
    mtrec_train::predict::load_bundle_split(bundle, &opts.data, &opts.split).map_err(|e| match e {
        mtrec_train::TrainError::Incompatible(message) => {
            EvalError::Incompatible(format!("bundle {}: {message}", dir.display()))
        }
        other => other.into(),
    })
}

fn check_same_pipeline(a: &Bundle, a_dir: &Path, other: &Bundle, other_dir: &Path) -> Result<(), EvalError> {
    if a.pipeline != other.pipeline {
        return Err(EvalError::Incompatible(format!(
            "bundles {} and {} were trained on different feature pipelines (schema hash {} vs {}): they cannot score the same encoded rows",
            a_dir.display(),
            other_dir.display(),
            a.pipeline.schema_hash,
            other.pipeline.schema_hash
        )));
    }
    Ok(())
}

/// The tasks to report, in the first bundle's order.
fn task_infos(bundle: &Bundle) -> Vec<TaskInfo> {
    bundle.model.heads.iter().map(task_info).collect()
}

fn task_info(h: &mtrec_model::Head) -> TaskInfo {
    TaskInfo {
        name: h.name.clone(),
        kind: match h.kind {
            TaskType::Binary => TaskKind::Binary,
            TaskType::Regression => TaskKind::Regression,
            TaskType::Multiclass => TaskKind::Multiclass { classes: h.classes.clone() },
        },
        scope: match h.scope {
            mtrec_schema::Scope::Pair => Scope::Pair,
            mtrec_schema::Scope::User => Scope::User,
            mtrec_schema::Scope::Item => Scope::Item,
        },
    }
}

/// Stable 64-bit keys of the user (item) ids; without ids, every row is its own unit.
fn id_hashes(ids: &Option<Vec<String>>, rows: usize) -> Vec<u64> {
    match ids {
        Some(ids) => ids.iter().map(|id| xxhash_rust::xxh3::xxh3_64(id.as_bytes())).collect(),
        None => (0..rows as u64).collect(),
    }
}

fn eval_rows(data: &EncodedDataset) -> EvalRows {
    EvalRows {
        user: id_hashes(&data.user_ids, data.rows),
        item: id_hashes(&data.item_ids, data.rows),
        labels: data.labels.clone(),
        masks: data.masks.clone(),
    }
}

/// A bundle's outputs for `tasks` (by name). Without `every_task`, a task the bundle lacks is
/// left empty (a single-task baseline need not cover every task); with it, that is an error.
fn model_scores(
    bundle: &Bundle,
    dir: &Path,
    data: &EncodedDataset,
    tasks: &[TaskInfo],
    batch_size: usize,
    every_task: bool,
) -> Result<ModelScores, EvalError> {
    let predictions = mtrec_train::eval::predict_all(&bundle.model, data, batch_size);
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
    let history: Option<History> = serde_json::from_value(bundle.history.clone()).ok();
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
        history,
    })
}

/// Writes the three reports into a temporary sibling of `out`, then renames it into place.
fn write_reports(out: &Path, report: ReportRef<'_>, json: &serde_json::Value) -> Result<(), EvalError> {
    let fail = |message: String| EvalError::Write { path: out.to_owned(), message };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| fail(e.to_string()))?;
    let tmp = tempfile::Builder::new().prefix(".mtrec-report-").tempdir_in(&parent).map_err(|e| fail(e.to_string()))?;
    let write = |name: &str, text: String| {
        std::fs::write(tmp.path().join(name), text).map_err(|e| fail(format!("{name}: {e}")))
    };
    write(files::JSON, serde_json::to_string_pretty(json).expect("a JSON value serializes") + "\n")?;
    write(files::MARKDOWN, mtrec_report::render_markdown(report))?;
    write(files::HTML, mtrec_report::render_html(report))?;
    let finished = tmp.keep();
    mtrec_schema::fs::replace_dir(&finished, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&finished);
        fail(e.to_string())
    })
}
