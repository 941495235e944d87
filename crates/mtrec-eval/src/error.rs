//! The errors of scoring and reporting.

use std::path::PathBuf;

/// What can go wrong in scoring and reporting.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Bundle(#[from] mtrec_model::bundle::BundleError),
    #[error(transparent)]
    Ingest(#[from] mtrec_ingest::IngestError),
    #[error(transparent)]
    Report(#[from] mtrec_report::ReportError),
    /// A bundle that cannot be compared on this data or with the other bundle.
    #[error("{0}")]
    Incompatible(String),
    #[error("the {split} split of {data} is empty: there is nothing to evaluate")]
    EmptySplit { data: PathBuf, split: mtrec_schema::Split },
    #[error("output {path} already exists (pass --force to replace it)")]
    OutputExists { path: PathBuf },
    #[error("{path}: unknown output format: use .parquet, or .arrow (.ipc, .feather) for Arrow IPC")]
    OutputFormat { path: PathBuf },
    /// An exposure log or outcomes file that cannot be read or joined.
    #[error("{path}: {message}")]
    Online { path: PathBuf, message: String },
    #[error("writing {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("writing the table {path}")]
    Table { path: PathBuf, source: polars::error::PolarsError },
}
