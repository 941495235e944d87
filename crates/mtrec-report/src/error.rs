//! Errors for inconsistent report inputs.

use thiserror::Error;

/// Why a report could not be computed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ReportError {
    #[error("{what} has {actual} entries, expected {expected}")]
    Length { what: String, expected: usize, actual: usize },
    #[error("task `{task}`: multiclass task has no classes")]
    NoClasses { task: String },
    #[error("task `{task}`: label {label} at row {row} is not a class index below {classes}")]
    BadClassLabel { task: String, row: usize, label: f32, classes: usize },
    #[error("model `{model}`, task `{task}`: gate weights of {rows} rows summed over no expert")]
    Gates { model: String, task: String, rows: usize },
    #[error("invalid option: {0}")]
    Options(String),
    #[error(transparent)]
    Bootstrap(#[from] mtrec_metrics::BootstrapError),
}
