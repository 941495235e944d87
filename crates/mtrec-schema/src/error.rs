//! Errors of the schema crate. Each names where the problem is: a JSON path in the schema, a
//! file, or a column.
//!
//! Every mtrec error follows one convention: a variant that wraps another error keeps it as
//! its `source()` and its own message names only what it adds (the file, the row, the part).
//! [`error_chain`] joins a chain into one line where only text travels.

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
pub enum SchemaFileError {
    #[error("cannot read schema {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("schema {path}")]
    Invalid {
        path: PathBuf,
        #[source]
        error: SchemaError,
    },
}

/// A `features.json` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot read feature pipeline {path}")]
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

/// An error and its sources on one line, `outer: inner: innermost`, as the `mtrec` binary
/// prints them: how an error reads where only text travels (an API answer, a log line).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        line.push_str(": ");
        line.push_str(&e.to_string());
        source = e.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_reads_outer_to_inner_on_one_line() {
        let e = SchemaFileError::Invalid { path: "s.json".into(), error: SchemaError::new("tasks[0]", "no label") };
        assert_eq!(e.to_string(), "schema s.json");
        assert_eq!(error_chain(&e), "schema s.json: tasks[0]: no label");
    }
}
