//! Model errors. A bundle's errors, which name the part of the bundle at fault, are
//! [`crate::bundle::BundleError`].

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model configuration that cannot be built.
    #[error("model config: {0}")]
    Config(String),
    /// A batch without a labeled row for any task: there is no loss to take.
    #[error("the batch has no labeled row for any task")]
    NoLabels,
    /// Weights that do not fit the model.
    #[error("weights {path}: {message}")]
    Weights { path: String, message: String },
    /// Weights that are not readable or writable as safetensors.
    #[error("weights {path}: safetensors")]
    Safetensors { path: String, source: safetensors::SafeTensorError },
}
