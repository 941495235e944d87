//! # mtrec-report
//!
//! Offline evaluation and A/B reports for mtrec models, from plain arrays.
//!
//! - [`input`]: [`EvalRows`] (users, items, per-task labels and masks), [`ReportTask`],
//!   [`ModelScores`] (per-task outputs, MMoE gates, the trainer's [`History`]) and
//!   [`ReportOptions`].
//! - [`compute`]: [`evaluate`] one model, or [`compare`] two on the same rows: every metric
//!   with a paired cluster-bootstrap CI and p-value (users resampled), DeLong's test for
//!   AUC with units clustered by user, a verdict per task from its primary metric under
//!   false discovery rate control over the tasks, design effects and minimum detectable
//!   effects, the seesaw flag, multi-task gain over a single-task baseline, expert usage and
//!   training curves.
//! - [`report`]: the output types, serialized as the JSON described in `REPORT.md`
//!   (`format_version` [`FORMAT_VERSION`]).
//! - [`render`]: [`render_markdown`] and [`render_html`] (one self-contained page with
//!   inline SVG: ROC, reliability, delta bars with CIs, gate heatmaps, training curves), and
//!   [`verdict_rows`], the verdict table every rendering shares.
//! - [`calibration`]: A/A and power simulations of the verdicts on clustered synthetic data.
//! - [`error`]: [`ReportError`] for inconsistent inputs (wrong lengths, bad class labels).

pub mod calibration;
pub mod compute;
pub mod error;
pub mod input;
pub mod render;
pub mod report;

pub use compute::{compare, compare_online, evaluate, OnlineArm, OnlineInput};
pub use error::ReportError;
pub use input::{EvalRows, GateSums, ModelScores, ReportOptions, ReportTask, TaskKind};
pub use mtrec_schema::{EpochRecord, History, Metric, Scope};
pub use render::{render_html, render_markdown, verdict_rows, ReportRef, VerdictRow};
pub use report::*;
