//! Errors of the schema crate. Each names where the problem is: a JSON path in the schema, a
//! file, or a column.

use std::path::PathBuf;

/// A problem in a dataset schema, located by its JSON path (e.g. `tasks[1].label.column`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

impl SchemaError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

/// Loading a schema file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read schema {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("schema {path}: {error}")]
    Invalid { path: PathBuf, error: SchemaError },
}

/// A `features.json` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot read feature pipeline {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("feature pipeline {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A cell that cannot be encoded: the column and what is wrong with its value. The caller adds
/// where the cell is (file and row, or JSON field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column:?}: {message}")]
pub struct CellError {
    pub column: String,
    pub message: String,
}
