//! The errors of training and of experiments.

use std::path::PathBuf;

use mtrec_schema::MetricKey;

/// What can go wrong in training or an experiment.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value that cannot be used.
    #[error("training config: {0}")]
    Config(String),
    #[error("training config {path}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Data(#[from] mtrec_ingest::IngestError),
    #[error("{data}: the train split is empty")]
    EmptyTrainSplit { data: PathBuf },
    #[error(transparent)]
    Model(#[from] mtrec_model::ModelError),
    #[error(transparent)]
    Bundle(#[from] mtrec_model::bundle::BundleError),
    #[error("early_stopping.metric \"{monitor}\" is not computed on the valid split (computed: {available})")]
    MonitorMissing { monitor: MetricKey, available: String },
    #[error("early_stopping.metric \"{monitor}\" is undefined on the valid split ({reason}): monitor another metric")]
    MonitorUndefined { monitor: MetricKey, reason: String },
    #[error("training diverged in epoch {epoch}: the loss of task {task:?} is not finite (lower the learning rate)")]
    Diverged { epoch: usize, task: String },
    #[error("no epoch was run")]
    NoEpoch,
    /// Training stopped where it was asked to (`stop_after_windows`), with a checkpoint.
    #[error("stopped after {windows} window(s) as asked; the checkpoint {} continues with --resume", checkpoint.display())]
    Stopped { windows: usize, checkpoint: PathBuf },
    /// A checkpoint that does not belong to this run.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("reading checkpoint {path}")]
    ReadCheckpoint {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("writing checkpoint {path}")]
    WriteCheckpoint { path: PathBuf, source: std::io::Error },
    /// An experiment file that cannot be run.
    #[error("experiment {path}: {message}")]
    Experiment { path: PathBuf, message: String },
    #[error("experiment {path}")]
    ReadExperiment {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("starting a thread pool")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    #[error("output {path} already exists (pass --force to replace it)")]
    OutputExists { path: PathBuf },
    #[error("writing {path}")]
    Write { path: PathBuf, source: std::io::Error },
}
