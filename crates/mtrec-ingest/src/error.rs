//! Ingestion errors. Each names where the problem is: the schema's JSON path, the file, the row
//! (1-based, header excluded) and the column.

use std::path::PathBuf;

use mtrec_schema::{LoadError, SchemaError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Schema(#[from] LoadError),
    /// A schema that is valid on its own but does not fit the data.
    #[error("schema {schema}: {error}")]
    SchemaVsData { schema: PathBuf, error: SchemaError },
    #[error("{path}: unknown file format (expected .csv, .csv.gz, .tsv, .parquet, .arrow, .ipc or .feather, or set source.format)")]
    UnknownFormat { path: PathBuf },
    #[error("{pattern}: no file matches")]
    NoFiles { pattern: String },
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: the file has no data rows")]
    EmptyFile { path: PathBuf },
    #[error("{path}: row {row}, column {column:?}: {message}")]
    Cell { path: PathBuf, row: usize, column: String, message: String },
    #[error("{0}")]
    Data(String),
    #[error("output {path} already exists (pass --force to replace it)")]
    OutputExists { path: PathBuf },
    #[error("writing {path}: {message}")]
    Write { path: PathBuf, message: String },
}

impl IngestError {
    pub(crate) fn read(path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        IngestError::Read { path: path.to_owned(), message: message.to_string() }
    }
    pub(crate) fn write(path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        IngestError::Write { path: path.to_owned(), message: message.to_string() }
    }
}
