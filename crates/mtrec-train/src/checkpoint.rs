//! Checkpoints for `--resume`: the model, both optimizers' state, the history, the best model
//! so far and, within an epoch, how far it got, written atomically after every epoch and
//! every window of shards beside the bundle (`<bundle>.checkpoint/`).

use std::path::{Path, PathBuf};

use mtrec_model::{io, AdamState, MultiTaskModel, SparseOptimizer};
use mtrec_schema::fs::StagedDir;
use mtrec_schema::{FeaturePipeline, History};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::distributed::sharding::Sharding;
use crate::distributed::{self, Collective};
use crate::error::TrainError;
use crate::strategy::StrategyState;

const STATE_FILE: &str = "checkpoint.json";
const TENSORS_FILE: &str = "state.safetensors";

/// The checkpoint directory of a bundle path: `<bundle>.checkpoint` beside it.
pub fn checkpoint_dir(bundle: &Path) -> PathBuf {
    let name = bundle.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".to_owned());
    bundle.with_file_name(format!("{name}.checkpoint"))
}

/// The training state to save, borrowed: saving every epoch must not copy the tables and
/// their optimizer moments first.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointRef<'a> {
    pub model: &'a MultiTaskModel,
    pub adam: &'a AdamState,
    pub sparse: &'a SparseOptimizer,
    pub history: &'a History,
    /// The best monitored value so far and its model.
    pub best: Option<&'a (f64, MultiTaskModel)>,
    pub strategy: &'a StrategyState,
    /// Within an epoch: how far it got.
    pub progress: Option<&'a EpochProgress>,
}

/// How far an epoch got: the windows of shards done and the running sums of its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    pub epoch: usize,
    pub windows_done: usize,
    /// Per task, the sum and count of its batch losses so far.
    pub loss_sums: Vec<f64>,
    pub loss_counts: Vec<usize>,
    pub penalty_sum: f64,
    pub penalty_steps: usize,
    /// Seconds spent on the epoch so far.
    pub seconds: f64,
}

/// Everything a resumed run needs.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub model: MultiTaskModel,
    pub adam: AdamState,
    pub sparse: SparseOptimizer,
    pub history: History,
    /// The best monitored value so far and its model.
    pub best: Option<(f64, MultiTaskModel)>,
    pub strategy: StrategyState,
    pub progress: Option<EpochProgress>,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    config: TrainConfig,
    schema_hash: String,
    adam_step: u64,
    sparse_step: u64,
    history: History,
    /// Bit pattern of the best monitored value: exact, where a JSON float may lose its last bit
    /// (and flip a later improvement test).
    best_value_bits: Option<u64>,
    /// The loss strategy's state (GradNorm's weights).
    #[serde(default)]
    strategy: StrategyState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress: Option<EpochProgress>,
    /// The number of ranks that trained (1: one process): an epoch in progress continues only
    /// with as many, since its windows and batches were cut for them.
    #[serde(default = "one_rank")]
    ranks: usize,
    /// The row-sharded tables: each rank's rows of them are in its own file
    /// (`shard-<rank>.safetensors`; rank 0's in `state.safetensors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sharded_tables: Vec<String>,
}

fn one_rank() -> usize {
    1
}

type Tensors = io::NamedTensors;

fn with_prefix(prefix: &str, tensors: Tensors) -> impl Iterator<Item = (String, (Vec<usize>, Vec<f32>))> + '_ {
    tensors.into_iter().map(move |(k, v)| (format!("{prefix}{k}"), v))
}

fn strip(prefix: &str, tensors: &Tensors) -> Tensors {
    tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_owned(), v.clone()))).collect()
}

/// Optimizer state as tensors named like the parameters they belong to.
fn optimizer_tensors(model: &MultiTaskModel, adam: &AdamState, sparse: &SparseOptimizer) -> Tensors {
    let mut out = Tensors::new();
    for id in model.params.ids() {
        let (name, shape) = (model.params.name(id), model.params.shape(id));
        out.insert(format!("adam.m/{name}"), (shape.clone(), adam.m[id.0].clone()));
        out.insert(format!("adam.v/{name}"), (shape, adam.v[id.0].clone()));
    }
    for (t, table) in model.tables.tables.iter().enumerate() {
        for (kind, buf) in [("first", &sparse.first[t]), ("second", &sparse.second[t])] {
            if !buf.is_empty() {
                // `dim` values per row, or one for row-wise Adagrad.
                let shape = vec![table.rows, buf.len() / table.rows.max(1)];
                out.insert(format!("sparse.{kind}/{}", table.name), (shape, buf.clone()));
            }
        }
    }
    out
}

/// Rank `r`'s rows of the row-sharded tables, for `r > 0`.
fn shard_file(rank: usize) -> String {
    format!("shard-{rank}.safetensors")
}

/// Where ranks write their shard files before rank 0 moves them into the checkpoint.
fn shards_staging(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!(".{name}.shards"))
}

/// The tensors of the row-sharded tables `names`: their weights (model and best) and their
/// optimizer state.
fn sharded_part(tensors: &Tensors, names: &[String]) -> Tensors {
    let of_sharded = |key: &str| {
        names.iter().any(|n| {
            key == format!("model/embedding.{n}")
                || key == format!("best/embedding.{n}")
                || key == format!("sparse.first/{n}")
                || key == format!("sparse.second/{n}")
        })
    };
    tensors.iter().filter(|(k, _)| of_sharded(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Writes the checkpoint; every rank calls it. Rank 0 writes it, atomically; with row-sharded
/// tables, each other rank first writes its rows of them (weights and optimizer state) into a
/// staging directory beside it, and rank 0 moves those files into the checkpoint before it
/// commits it, so a checkpoint holds every shard or is not there.
pub fn save(
    dir: &Path,
    ck: CheckpointRef<'_>,
    pipeline: &FeaturePipeline,
    config: &TrainConfig,
    comm: &dyn Collective,
    sharding: &Sharding,
) -> Result<(), TrainError> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let sharded_tables = sharding.sharded_names(&ck.model.tables);
    if rank != 0 && sharded_tables.is_empty() {
        return Ok(());
    }
    let mut tensors: Tensors = with_prefix("model/", io::named_tensors(ck.model)).collect();
    if let Some((_, best)) = ck.best {
        tensors.extend(with_prefix("best/", io::named_tensors(best)));
    }
    tensors.extend(optimizer_tensors(ck.model, ck.adam, ck.sparse));
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source: std::io::Error| TrainError::WriteCheckpoint { path, source }
    };
    let staging = shards_staging(dir);
    if !sharded_tables.is_empty() {
        if rank == 0 {
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging).map_err(fail(&staging))?;
        }
        distributed::barrier(comm);
        if rank != 0 {
            let bytes = io::to_safetensors(&sharded_part(&tensors, &sharded_tables), None)?;
            let path = staging.join(shard_file(rank));
            let partial = staging.join(format!("{}.partial", shard_file(rank)));
            std::fs::write(&partial, bytes).map_err(fail(&partial))?;
            std::fs::rename(&partial, &path).map_err(fail(&path))?;
        }
        distributed::barrier(comm);
        if rank != 0 {
            return Ok(());
        }
    }
    let bytes = io::to_safetensors(&tensors, None)?;
    let state = State {
        config: config.clone(),
        schema_hash: pipeline.schema_hash.clone(),
        adam_step: ck.adam.step,
        sparse_step: ck.sparse.step,
        history: ck.history.clone(),
        best_value_bits: ck.best.map(|(v, _)| v.to_bits()),
        strategy: ck.strategy.clone(),
        progress: ck.progress.cloned(),
        ranks,
        sharded_tables: sharded_tables.clone(),
    };
    let staged = StagedDir::new(dir).map_err(fail(dir))?;
    std::fs::write(staged.path().join(TENSORS_FILE), bytes).map_err(fail(dir))?;
    std::fs::write(staged.path().join(STATE_FILE), serde_json::to_string_pretty(&state).expect("state serializes"))
        .map_err(fail(dir))?;
    if !sharded_tables.is_empty() {
        for r in 1..ranks {
            let from = staging.join(shard_file(r));
            std::fs::rename(&from, staged.path().join(shard_file(r))).map_err(fail(&from))?;
        }
    }
    staged.commit().map_err(fail(dir))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}

/// Loads a checkpoint written for the same pipeline and an equivalent config (only `epochs`
/// and early-stopping settings may change between runs), as rank `comm.rank()` of a run of
/// `comm.size()` ranks: any count after a whole epoch (every rank holds the whole model), the
/// same count within one or with row-sharded tables (whose rows are spread over that many).
pub fn load(
    dir: &Path,
    pipeline: &FeaturePipeline,
    config: &TrainConfig,
    comm: &dyn Collective,
    sharding: &Sharding,
) -> Result<Checkpoint, TrainError> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let bad = |m: String| TrainError::Checkpoint { path: dir.to_owned(), message: m };
    let unreadable = |file: &str| {
        let path = dir.join(file);
        move |e: Box<dyn std::error::Error + Send + Sync>| TrainError::ReadCheckpoint { path, source: e }
    };
    let state_bytes = std::fs::read(dir.join(STATE_FILE)).map_err(|e| unreadable(STATE_FILE)(e.into()))?;
    let state: State = serde_json::from_slice(&state_bytes).map_err(|e| unreadable(STATE_FILE)(e.into()))?;
    if state.schema_hash != pipeline.schema_hash {
        return Err(bad("it was written for another feature pipeline (schema hash differs)".to_owned()));
    }
    if state.progress.is_some() && state.ranks != ranks {
        return Err(bad(format!(
            "it was written within an epoch by {} rank(s), whose windows and batches were cut for that many; \
             resume with {} rank(s) (mpirun -np {}), or from a checkpoint taken after an epoch",
            state.ranks, state.ranks, state.ranks
        )));
    }
    let mut model = sharding.model(pipeline, &config.model_config(), config.seed)?;
    let sharded_tables = sharding.sharded_names(&model.tables);
    if state.sharded_tables != sharded_tables || (!sharded_tables.is_empty() && state.ranks != ranks) {
        return Err(bad(format!(
            "it was written by {} rank(s) with the row-sharded tables [{}], whose rows are spread over \
             that many ranks; this run has {ranks} rank(s) with [{}]: resume with mpirun -np {} and the \
             same embedding_sharding",
            state.ranks,
            state.sharded_tables.join(", "),
            sharded_tables.join(", "),
            state.ranks
        )));
    }
    let comparable = |c: &TrainConfig| TrainConfig { epochs: 0, early_stopping: Default::default(), ..c.clone() };
    if comparable(&state.config) != comparable(config) {
        return Err(bad(
            "its training config differs from this run's (only epochs and early_stopping may change)".to_owned()
        ));
    }
    let bytes = std::fs::read(dir.join(TENSORS_FILE)).map_err(|e| unreadable(TENSORS_FILE)(e.into()))?;
    let mut tensors = io::from_safetensors(&bytes, TENSORS_FILE)?;
    if rank != 0 && !sharded_tables.is_empty() {
        // This rank's rows of the sharded tables replace rank 0's.
        let file = shard_file(rank);
        let bytes = std::fs::read(dir.join(&file)).map_err(|e| unreadable(&file)(e.into()))?;
        tensors.extend(io::from_safetensors(&bytes, &file)?);
    }
    io::load_into(&mut model, &strip("model/", &tensors), dir)?;
    let best = match state.best_value_bits.map(f64::from_bits) {
        Some(value) => {
            let mut best = model.clone();
            io::load_into(&mut best, &strip("best/", &tensors), dir)?;
            Some((value, best))
        }
        None => None,
    };
    let mut adam = AdamState::new(&model.params);
    adam.step = state.adam_step;
    for id in model.params.ids() {
        let name = model.params.name(id);
        let get = |k: String| tensors.get(&k).map(|t| t.1.clone()).ok_or_else(|| bad(format!("{k} is missing")));
        adam.m[id.0] = get(format!("adam.m/{name}"))?;
        adam.v[id.0] = get(format!("adam.v/{name}"))?;
    }
    let mut sparse = SparseOptimizer::new(config.sparse(), &model.tables).with_l2(config.embedding_l2 as f32);
    sparse.step = state.sparse_step;
    for (t, table) in model.tables.tables.iter().enumerate() {
        for (kind, buf) in [("first", &mut sparse.first[t]), ("second", &mut sparse.second[t])] {
            if !buf.is_empty() {
                let k = format!("sparse.{kind}/{}", table.name);
                let saved = tensors.get(&k).ok_or_else(|| bad(format!("{k} is missing")))?;
                if saved.1.len() != buf.len() {
                    return Err(bad(format!(
                        "{k} holds {} values where this config's embedding optimizer keeps {}",
                        saved.1.len(),
                        buf.len()
                    )));
                }
                buf.copy_from_slice(&saved.1);
            }
        }
    }
    Ok(Checkpoint {
        model,
        adam,
        sparse,
        history: state.history,
        best,
        strategy: state.strategy,
        progress: state.progress,
    })
}
