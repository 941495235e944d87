//! # mtrec-train
//!
//! Training and batch scoring of mtrec models.
//!
//! - [`config`]: the training configuration (a JSON file with defaults, saved in the bundle).
//! - [`train`]: the loop: seeded shuffling, data-parallel steps (one part of the batch per
//!   thread, gradients summed in part order), dense Adam and sparse embedding steps, validation
//!   after every epoch, early stopping, checkpoints and `--resume`, and the bundle of the best
//!   epoch.
//! - [`strategy`]: loss weighting and gradient strategies (static, uncertainty, DWA, GradNorm,
//!   PCGrad), each with its reference and cost per step.
//! - [`eval`]: scoring a split in batches and its validation metrics.
//! - [`predict`]: `mtrec predict`, every task's output per row.

pub mod checkpoint;
pub mod config;
pub mod diagnostics;
pub mod eval;
pub mod predict;
pub mod strategy;
pub mod train;

use std::path::PathBuf;

pub use config::TrainConfig;
pub use strategy::LossStrategy;
pub use train::{train, History, TrainOptions, Trained};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training config: {0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] mtrec_ingest::IngestError),
    #[error(transparent)]
    Model(#[from] mtrec_model::ModelError),
    #[error(transparent)]
    Bundle(#[from] mtrec_model::bundle::BundleError),
    /// Data that does not belong with the bundle or model at hand.
    #[error("{0}")]
    Incompatible(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("training diverged in epoch {epoch}: the loss of task {task:?} is not finite (lower the learning rate)")]
    Diverged { epoch: usize, task: String },
}
