//! `mtrec eval` and `mtrec ab`: the reports of one model, or of two on the same rows, written
//! as HTML, Markdown and JSON into a directory, atomically.

use std::path::{Path, PathBuf};

use mtrec_ingest::encoded::ShardedSplit;
use mtrec_model::bundle::{self, Bundle};
use mtrec_report::{AbReport, EvalReport, ReportOptions, ReportRef};
use mtrec_schema::fs::StagedDir;
use mtrec_schema::Split;

use crate::error::EvalError;
use crate::scores::{check_same_pipeline, open_bundle_split, score_split, task_infos, Scorer};

/// Report file names inside the output directory.
pub mod files {
    pub const HTML: &str = "report.html";
    pub const MARKDOWN: &str = "report.md";
    pub const JSON: &str = "report.json";
}

/// What to score and how to report it.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Ingest directory (`mtrec ingest` output).
    pub data: PathBuf,
    pub split: Split,
    pub batch_size: usize,
    pub report: ReportOptions,
    /// Replace an existing output directory.
    pub force: bool,
    /// Draw a progress bar on stderr while scoring.
    pub progress: bool,
}

/// `mtrec eval`: one model's report, written to `out`.
pub fn eval(bundle_dir: &Path, opts: &EvalOptions, out: &Path) -> Result<EvalReport, EvalError> {
    check_out(out, opts.force)?;
    let bundle = bundle::load(bundle_dir)?;
    let split = open_data(&bundle, bundle_dir, opts)?;
    let tasks = task_infos(&bundle);
    let scorer = Scorer { bundle: &bundle, dir: bundle_dir, every_task: true };
    let (rows, scores) = score_split(&split, &[scorer], &tasks, opts.batch_size, opts.progress)?;
    let report = mtrec_report::evaluate(&rows, &tasks, &scores[0], &opts.report)?;
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
    let split = open_data(&a, a_dir, opts)?;
    check_same_pipeline(&a, a_dir, &b, b_dir)?;
    let base = match baseline_dir {
        Some(dir) => {
            let base = bundle::load(dir)?;
            check_same_pipeline(&a, a_dir, &base, dir)?;
            Some((base, dir))
        }
        None => None,
    };
    let tasks = task_infos(&a);
    let mut scorers =
        vec![Scorer { bundle: &a, dir: a_dir, every_task: true }, Scorer { bundle: &b, dir: b_dir, every_task: true }];
    if let Some((base, dir)) = &base {
        scorers.push(Scorer { bundle: base, dir, every_task: false });
    }
    let (rows, mut scores) = score_split(&split, &scorers, &tasks, opts.batch_size, opts.progress)?;
    let baseline = (scores.len() == 3).then(|| scores.pop().expect("three scores"));
    let (a_scores, b_scores) = (&scores[0], &scores[1]);
    let report = mtrec_report::compare(&rows, &tasks, a_scores, b_scores, baseline.as_ref(), &opts.report)?;
    write_reports(out, ReportRef::from(&report), &serde_json::to_value(&report).expect("reports serialize"))?;
    Ok(report)
}

fn check_out(out: &Path, force: bool) -> Result<(), EvalError> {
    if out.exists() && !force {
        return Err(EvalError::OutputExists { path: out.to_owned() });
    }
    Ok(())
}

/// The split to report on, which must hold rows.
fn open_data(bundle: &Bundle, dir: &Path, opts: &EvalOptions) -> Result<ShardedSplit, EvalError> {
    let split = open_bundle_split(bundle, &opts.data, opts.split).map_err(|e| match e {
        EvalError::Incompatible(message) => EvalError::Incompatible(format!("bundle {}: {message}", dir.display())),
        other => other,
    })?;
    if split.rows() == 0 {
        return Err(EvalError::EmptySplit { data: opts.data.clone(), split: opts.split });
    }
    Ok(split)
}

/// Writes the three reports into a temporary sibling of `out`, then renames it into place.
pub(crate) fn write_reports(out: &Path, report: ReportRef<'_>, json: &serde_json::Value) -> Result<(), EvalError> {
    let fail = |source| EvalError::Write { path: out.to_owned(), source };
    let staged = StagedDir::new(out).map_err(fail)?;
    let write = |name: &str, text: String| {
        let path = staged.path().join(name);
        std::fs::write(&path, text).map_err(|source| EvalError::Write { path: out.join(name), source })
    };
    write(files::JSON, serde_json::to_string_pretty(json).expect("a JSON value serializes") + "\n")?;
    write(files::MARKDOWN, mtrec_report::render_markdown(report))?;
    write(files::HTML, mtrec_report::render_html(report))?;
    staged.commit().map_err(fail)
}
