//! Ingestion errors. Each names where the problem is: the schema's JSON path, the file, the row
//! (1-based, header excluded) and the column. Errors from Polars, the file system and the
//! parsers are kept as sources.

use std::error::Error;
use std::path::PathBuf;

use mtrec_schema::{PipelineError, SchemaError, SchemaFileError};

/// An error of a library ingestion uses, kept as a source.
pub type BoxedError = Box<dyn Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Schema(#[from] SchemaFileError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A schema whose problem shows only once it is applied (its JSON path says where).
    #[error(transparent)]
    InvalidSchema(#[from] SchemaError),
    /// A schema that is valid on its own but does not fit the data.
    #[error("schema {schema}")]
    SchemaVsData {
        schema: PathBuf,
        #[source]
        error: SchemaError,
    },
    #[error("{path}: unknown file format (expected .csv, .csv.gz, .tsv, .parquet, .arrow, .ipc or .feather, or set source.format)")]
    UnknownFormat { path: PathBuf },
    #[error("{pattern}: no file matches")]
    NoFiles { pattern: String },
    #[error("{pattern:?} is not a valid glob")]
    Glob { pattern: String, source: glob::PatternError },
    /// A file that cannot be read as the schema says: the reason is the source.
    #[error("{path}")]
    Read {
        path: PathBuf,
        #[source]
        source: BoxedError,
    },
    #[error("{path}: the file has no data rows")]
    EmptyFile { path: PathBuf },
    #[error("{path}: row {row}, column {column:?}: {message}")]
    Cell { path: PathBuf, row: usize, column: String, message: String },
    /// Data that does not fit the schema, in words naming the feature, column and files.
    #[error("{0}")]
    Data(String),
    #[error("the train split is empty: nothing to fit the pipeline on")]
    EmptyTrainSplit,
    /// Polars failed on data already read and checked.
    #[error("{what}")]
    Polars {
        what: String,
        #[source]
        source: polars::error::PolarsError,
    },
    #[error("output {path} already exists (pass --force to replace it)")]
    OutputExists { path: PathBuf },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: BoxedError,
    },
}

impl IngestError {
    /// A file that cannot be read: `reason` is an error or a message.
    pub(crate) fn read(path: &std::path::Path, reason: impl Into<BoxedError>) -> Self {
        IngestError::Read { path: path.to_owned(), source: reason.into() }
    }

    /// An output that cannot be written: `reason` is an error or a message.
    pub(crate) fn write(path: &std::path::Path, reason: impl Into<BoxedError>) -> Self {
        IngestError::Write { path: path.to_owned(), source: reason.into() }
    }
}
