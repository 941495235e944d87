//! # mtrec-train
//!
//! Training of mtrec models, and experiment grids of training runs.
//!
//! - [`config`]: the training configuration (a JSON file with defaults, saved in the bundle).
//! - [`data`]: a split read whole, or a window of shards at a time with the next one read ahead.
//! - [`train`]: the loop: seeded shuffling, steps, validation after every epoch, early stopping,
//!   checkpoints (also between windows) and `--resume`, and the bundle of the best epoch.
//! - `step`: one step: data-parallel forward and backward passes (one part of the batch per
//!   thread, gradients summed in part order) or per-task passes, the gradients taken out of
//!   dfdx's tape, dense Adam and sparse embedding updates; `gradients`: the per-task gradients
//!   the strategies combine.
//! - [`distributed`]: data-parallel training across processes (MPI with the `mpi` feature):
//!   the collectives, dense gradients summed in rank order, embedding rows gathered.
//! - [`strategy`]: loss weighting and gradient strategies (static, uncertainty, DWA, GradNorm,
//!   PCGrad), each with its reference and cost per step, and how each combines the tasks'
//!   gradients.
//! - `monitor`: the early-stopping monitor over the run's [`mtrec_schema::History`]
//!   (`history.json`) and the line printed per epoch.
//! - [`diagnostics`]: task relatedness (gradient cosines, expert usage, label correlation).
//! - [`checkpoint`]: the state `--resume` continues from.
//! - [`experiment`]: `mtrec experiment`, a grid of configurations × seeds and its summary.
//! - [`error`]: what can go wrong ([`TrainError`]).
//!
//! Validation metrics and batch scoring are the model's ([`mtrec_model::infer`]), so that
//! prediction, evaluation and serving use them without depending on this crate.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod diagnostics;
pub mod distributed;
mod epoch;
pub mod error;
pub mod experiment;
mod gradients;
mod monitor;
mod step;
pub mod strategy;
pub mod train;

pub use config::TrainConfig;
pub use error::TrainError;
pub use strategy::LossStrategy;
pub use train::{train, train_on, TrainOptions, Trained};
