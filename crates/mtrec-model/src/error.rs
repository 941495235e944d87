//! Model errors.

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model configuration that cannot be built.
    #[error("model config: {0}")]
    Config(String),
    /// Data the model cannot use.
    #[error("{0}")]
    Data(String),
    /// Weights that do not fit the model.
    #[error("weights {path}: {message}")]
    Weights { path: String, message: String },
}
