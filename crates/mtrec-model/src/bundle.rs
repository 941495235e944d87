//! The model bundle: a self-contained directory that training writes and evaluation and
//! serving load.
//!
//! | file | content |
//! | --- | --- |
//! | `model.json` | format version, architecture and model config, tasks, schema hash, weights digest, the training config, provenance |
//! | `features.json` | the fitted feature pipeline from ingestion |
//! | `weights.safetensors` | every tensor, named as documented in [`crate::io`] |
//! | `history.json` | metrics per epoch |
//!
//! Written atomically (a temporary directory renamed into place). The loader refuses a bundle
//! whose parts disagree and says which part and why.

use std::path::{Path, PathBuf};

use mtrec_schema::fs::StagedDir;
use mtrec_schema::{FeaturePipeline, History, Scope, TaskType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ModelConfig;
use crate::io;
use crate::model::MultiTaskModel;

/// Version of the bundle format; bumped on any incompatible change.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;

pub const MODEL_FILE: &str = "model.json";
pub const FEATURES_FILE: &str = "features.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const HISTORY_FILE: &str = "history.json";

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format_version: u32,
    /// `architecture.type` of the model config, for quick reading.
    pub architecture: String,
    pub model: ModelConfig,
    pub tasks: Vec<TaskMeta>,
    pub dataset: String,
    /// Must equal `features.json`'s `schema_hash`.
    pub schema_hash: String,
    /// SHA-256 of `weights.safetensors`.
    pub weights_sha256: String,
    /// Seed the weights were initialized with (the structure does not depend on it).
    pub seed: u64,
    /// The training configuration, as given to the trainer.
    pub training: serde_json::Value,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMeta {
    pub name: String,
    pub kind: TaskType,
    pub scope: Scope,
    pub outputs: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    pub weight: f32,
    /// A regression learned as `ln(1 + y)`: its residual variance on the valid split (training
    /// scale), for the mean in the label's units ([`crate::Head::label_mean`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_variance: Option<f64>,
    /// A product task's factors (ESMM): its probability is the product of theirs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_of: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub mtrec_version: String,
    /// RFC 3339 time of writing.
    pub created_at: String,
    /// The ingest directory trained on.
    pub data: String,
    pub train_rows: usize,
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
    /// Threads per process.
    pub threads: usize,
    /// Processes that trained together (data-parallel ranks).
    #[serde(default = "one_rank")]
    pub ranks: usize,
}

fn one_rank() -> usize {
    1
}

/// A loaded bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub meta: ModelMeta,
    pub pipeline: FeaturePipeline,
    pub model: MultiTaskModel,
    pub history: History,
}

/// Why a bundle cannot be loaded or written: the bundle, the part at fault, and the reason as
/// the source.
#[derive(Debug, thiserror::Error)]
#[error("bundle {dir}: {part}")]
pub struct BundleError {
    pub dir: PathBuf,
    pub part: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl BundleError {
    fn new(dir: &Path, part: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BundleError { dir: dir.to_owned(), part, source: source.into() }
    }

    /// Wraps an error of `part`, for `map_err`.
    fn at<'a, E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        dir: &'a Path,
        part: &'static str,
    ) -> impl FnOnce(E) -> BundleError + 'a {
        move |e| BundleError::new(dir, part, e)
    }
}

/// The name of a bundle's directory part in errors.
const DIRECTORY: &str = "directory";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn task_meta(model: &MultiTaskModel) -> Vec<TaskMeta> {
    model
        .heads
        .iter()
        .map(|h| TaskMeta {
            name: h.name.clone(),
            kind: h.kind,
            scope: h.scope,
            outputs: h.outputs,
            classes: h.classes.clone(),
            weight: h.weight,
            residual_variance: h.residual_variance,
            product_of: h.factors.iter().map(|&f| model.heads[f].name.clone()).collect(),
        })
        .collect()
}

/// Writes a bundle to `dir` atomically (replacing an existing one only once complete).
pub fn save(
    dir: &Path,
    model: &MultiTaskModel,
    pipeline: &FeaturePipeline,
    mut meta: ModelMeta,
    history: &History,
) -> Result<(), BundleError> {
    let weights = io::to_safetensors(&io::named_tensors(model), None).map_err(BundleError::at(dir, WEIGHTS_FILE))?;
    meta.weights_sha256 = sha256_hex(&weights);
    meta.format_version = BUNDLE_FORMAT_VERSION;
    meta.schema_hash = pipeline.schema_hash.clone();
    let staged = StagedDir::new(dir).map_err(BundleError::at(dir, DIRECTORY))?;
    let write = |name: &'static str, bytes: &[u8]| {
        std::fs::write(staged.path().join(name), bytes).map_err(BundleError::at(dir, name))
    };
    write(WEIGHTS_FILE, &weights)?;
    write(MODEL_FILE, pretty_json(&meta).as_bytes())?;
    write(FEATURES_FILE, pretty_json(pipeline).as_bytes())?;
    write(HISTORY_FILE, pretty_json(history).as_bytes())?;
    staged.commit().map_err(BundleError::at(dir, DIRECTORY))
}

/// Pretty JSON, newline-terminated.
fn pretty_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect("bundle parts serialize") + "\n"
}

fn read(dir: &Path, part: &'static str) -> Result<Vec<u8>, BundleError> {
    std::fs::read(dir.join(part)).map_err(|e| BundleError::new(dir, part, e))
}

/// A JSON part, whose errors name the JSON path of the problem.
fn parse<T: serde::de::DeserializeOwned>(dir: &Path, part: &'static str, bytes: &[u8]) -> Result<T, BundleError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| BundleError::new(dir, part, e))
}

/// Loads and cross-checks a bundle.
pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
    let meta_bytes = read(dir, MODEL_FILE)?;
    let version: serde_json::Value = serde_json::from_slice(&meta_bytes).map_err(BundleError::at(dir, MODEL_FILE))?;
    match version.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(BUNDLE_FORMAT_VERSION) => {}
        Some(v) => {
            return Err(BundleError::new(
                dir,
                MODEL_FILE,
                format!("format_version {v} is not supported (this build reads {BUNDLE_FORMAT_VERSION})"),
            ))
        }
        None => return Err(BundleError::new(dir, MODEL_FILE, "format_version is missing")),
    }
    let meta: ModelMeta = parse(dir, MODEL_FILE, &meta_bytes)?;
    let pipeline = FeaturePipeline::load(&dir.join(FEATURES_FILE)).map_err(BundleError::at(dir, FEATURES_FILE))?;
    if pipeline.schema_hash != meta.schema_hash {
        return Err(BundleError::new(
            dir,
            FEATURES_FILE,
            format!(
                "schema_hash {} differs from model.json's {}: the pipeline is not the one the model was trained with",
                pipeline.schema_hash, meta.schema_hash
            ),
        ));
    }
    let weights = read(dir, WEIGHTS_FILE)?;
    let digest = sha256_hex(&weights);
    if digest != meta.weights_sha256 {
        return Err(BundleError::new(
            dir,
            WEIGHTS_FILE,
            format!("SHA-256 {digest} differs from model.json's {}: corrupt or replaced", meta.weights_sha256),
        ));
    }
    let mut model = MultiTaskModel::new(&pipeline, &meta.model, meta.seed).map_err(BundleError::at(dir, MODEL_FILE))?;
    // The tasks' structure must match what features.json and the config define; what training
    // measured (the residual variances) comes from model.json.
    for (head, task) in model.heads.iter_mut().zip(&meta.tasks) {
        head.residual_variance = task.residual_variance;
    }
    if task_meta(&model) != meta.tasks {
        return Err(BundleError::new(
            dir,
            MODEL_FILE,
            "tasks differ from the ones features.json and the model config define",
        ));
    }
    let tensors = io::from_safetensors(&weights, WEIGHTS_FILE).map_err(BundleError::at(dir, WEIGHTS_FILE))?;
    io::load_into(&mut model, &tensors, &dir.join(WEIGHTS_FILE)).map_err(BundleError::at(dir, WEIGHTS_FILE))?;
    let history = parse(dir, HISTORY_FILE, &read(dir, HISTORY_FILE)?)?;
    Ok(Bundle { meta, pipeline, model, history })
}

/// A fresh provenance record.
pub fn provenance(
    data: &Path,
    train_rows: usize,
    best_epoch: Option<usize>,
    epochs_run: usize,
    threads: usize,
    ranks: usize,
) -> Provenance {
    Provenance {
        mtrec_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: now_rfc3339(),
        data: data.display().to_string(),
        train_rows,
        best_epoch,
        epochs_run,
        threads,
        ranks,
    }
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}
