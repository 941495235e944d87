//! The training configuration: a documented file (JSON) with defaults, saved into every bundle.

use std::collections::BTreeMap;
use std::path::Path;

use mtrec_model::{LossWeighting, ModelConfig, SparseOptimizerConfig};
use mtrec_schema::MetricKey;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::strategy::LossStrategy;

/// Everything `mtrec train` needs besides the data. Every field has a default, so `{}` is a
/// valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub epochs: usize,
    pub batch_size: usize,
    /// Learning rate of Adam on the dense parameters.
    pub learning_rate: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Decoupled weight decay of the dense parameters (0: plain Adam).
    pub weight_decay: f64,
    /// Optimizer of the embedding tables (row-wise, sparse).
    pub embedding_optimizer: EmbeddingOptimizer,
    /// Learning rate of the embedding optimizer; defaults to `learning_rate`.
    pub embedding_learning_rate: Option<f64>,
    /// L2 penalty on the embedding rows each batch touches (0: none).
    pub embedding_l2: f64,
    /// Seeds initialization and shuffling.
    pub seed: u64,
    /// Worker threads (0: one per core). Results are deterministic for a given seed and count.
    pub threads: usize,
    pub early_stopping: EarlyStopping,
    /// Rows per forward pass when validating and predicting.
    pub eval_batch_size: usize,
    /// How task losses and gradients are combined (see [`crate::strategy`]).
    pub loss_strategy: LossStrategy,
    /// Rows of a split in memory at a time. A split of at most this many rows is read once and
    /// kept; a larger one is read a window of shards at a time (the train split's windows in a
    /// seeded order per epoch, each shuffled), with the next window read while one trains.
    pub window_rows: usize,
    /// Training across ranks (`--distributed`): which embedding tables are row-sharded over the
    /// ranks instead of replicated on each.
    pub embedding_sharding: EmbeddingSharding,
}

/// Where an embedding table lives when several ranks train: replicated (every rank holds it
/// whole, and a step exchanges only its touched rows), or row-sharded (rank `i mod N` holds the
/// row of id `i`, and a step fetches its rows from their owners and sends their gradients back),
/// for tables too large to copy on every machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingSharding {
    /// Tables whose weights take at least this many bytes are sharded (default 1 GiB).
    pub min_bytes: u64,
    /// Per table name (a feature's table, or a shared vocabulary's), `sharded` or `replicated`,
    /// whatever its size.
    pub tables: BTreeMap<String, TablePlacement>,
}

impl Default for EmbeddingSharding {
    fn default() -> Self {
        Self { min_bytes: 1 << 30, tables: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TablePlacement {
    Replicated,
    Sharded,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelConfig::default(),
            epochs: 10,
            batch_size: 1024,
            learning_rate: 1e-3,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            weight_decay: 0.0,
            embedding_optimizer: EmbeddingOptimizer::LazyAdam,
            embedding_learning_rate: None,
            embedding_l2: 0.0,
            seed: 42,
            threads: 0,
            early_stopping: EarlyStopping::default(),
            eval_batch_size: 8192,
            loss_strategy: LossStrategy::Static,
            window_rows: 1 << 21,
            embedding_sharding: EmbeddingSharding::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingOptimizer {
    LazyAdam,
    Adagrad,
    /// One accumulator per row instead of per weight (FBGEMM's `EXACT_ROWWISE_ADAGRAD`): state
    /// 1/dim of the table's size, for very large vocabularies.
    RowwiseAdagrad,
}

/// Stop when the monitored validation metric has not improved for `patience` epochs; the best
/// epoch's weights are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStopping {
    /// `tasks` (the default: the mean over tasks of each task's primary metric relative to the
    /// first epoch, [`MetricKey::Tasks`], so that every task counts alike), `loss` (the
    /// weighted validation loss, which the tasks with the largest losses dominate), or
    /// `<task>.<metric>` with one of the task's validation metrics: `auc` or `logloss` (binary),
    /// `rmse` (regression), `accuracy` or `logloss` (multiclass).
    pub metric: MetricKey,
    /// Epochs without improvement before stopping (0: never stop early).
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self { metric: MetricKey::Tasks, patience: 2, min_delta: 0.0 }
    }
}

impl TrainConfig {
    pub fn adam(&self) -> mtrec_model::AdamConfig {
        mtrec_model::AdamConfig {
            lr: self.learning_rate,
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
        }
    }

    pub fn sparse(&self) -> SparseOptimizerConfig {
        let lr = self.embedding_learning_rate.unwrap_or(self.learning_rate);
        match self.embedding_optimizer {
            EmbeddingOptimizer::LazyAdam => SparseOptimizerConfig::LazyAdam {
                lr,
                beta1: self.adam_beta1,
                beta2: self.adam_beta2,
                eps: self.adam_eps,
            },
            EmbeddingOptimizer::Adagrad => SparseOptimizerConfig::Adagrad { lr, initial_accumulator: 0.1, eps: 1e-10 },
            EmbeddingOptimizer::RowwiseAdagrad => {
                SparseOptimizerConfig::RowwiseAdagrad { lr, initial_accumulator: 0.1, eps: 1e-10 }
            }
        }
    }

    /// Reads a config file (JSON), naming the JSON path of any problem.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TrainError::ReadConfig { path: path.to_owned(), source: source.into() })?;
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|source| TrainError::ReadConfig { path: path.to_owned(), source: source.into() })
    }

    /// The model configuration this training builds: `model`, with uncertainty weighting when
    /// `loss_strategy` is `uncertainty`.
    pub fn model_config(&self) -> ModelConfig {
        let mut model = self.model.clone();
        if self.loss_strategy == LossStrategy::Uncertainty {
            model.loss_weighting = LossWeighting::Uncertainty;
        }
        model
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Config(m.to_owned()));
        let strategy = self.loss_strategy;
        if self.model.loss_weighting == LossWeighting::Uncertainty
            && !matches!(strategy, LossStrategy::Static | LossStrategy::Uncertainty)
        {
            return Err(TrainError::Config(format!(
                "model.loss_weighting \"uncertainty\" cannot be combined with loss_strategy {:?}: use one of them",
                strategy.name()
            )));
        }
        match strategy {
            LossStrategy::GradNorm { alpha, lr }
                if !(alpha.is_finite() && alpha >= 0.0 && lr.is_finite() && lr > 0.0) =>
            {
                return bad("loss_strategy (gradnorm): needs alpha >= 0 and lr > 0");
            }
            LossStrategy::Dwa { temperature } if !(temperature.is_finite() && temperature > 0.0) => {
                return bad("loss_strategy (dwa): temperature must be > 0");
            }
            _ => {}
        }
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 || self.window_rows == 0 {
            return bad("batch_size, eval_batch_size and window_rows must be at least 1");
        }
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(self.learning_rate) || self.embedding_learning_rate.is_some_and(|l| !positive(l)) {
            return bad("learning rates must be > 0");
        }
        Ok(())
    }
}
