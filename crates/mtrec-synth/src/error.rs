//! Errors of the synthetic generator.

use std::path::PathBuf;

use polars::prelude::PolarsError;

/// Errors of the synthetic generator.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A config field is out of range.
    #[error("invalid synthetic config: `{field}` {message}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Polars failed to build or write the frame.
    #[error("building or writing the frame")]
    Polars(#[from] PolarsError),
    /// A file operation failed.
    #[error("writing {}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
