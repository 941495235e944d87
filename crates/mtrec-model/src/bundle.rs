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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mtrec_schema::{FeaturePipeline, Scope, TaskType};
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
    pub threads: usize,
}

/// A loaded bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub meta: ModelMeta,
    pub pipeline: FeaturePipeline,
    pub model: MultiTaskModel,
    pub history: serde_json::Value,
}

/// Why a bundle cannot be loaded or written: the part and the reason.
#[derive(Debug, thiserror::Error)]
#[error("bundle {dir}: {part}: {message}")]
pub struct BundleError {
    pub dir: PathBuf,
    pub part: &'static str,
    pub message: String,
}

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
        })
        .collect()
}

/// Writes a bundle to `dir` atomically (replacing an existing one only once complete).
pub fn save(
    dir: &Path,
    model: &MultiTaskModel,
    pipeline: &FeaturePipeline,
    mut meta: ModelMeta,
    history: &serde_json::Value,
) -> Result<(), BundleError> {
    let err = |part: &'static str, message: String| BundleError { dir: dir.to_owned(), part, message };
    let weights = io::to_safetensors(&io::named_tensors(model), None).map_err(|e| err(WEIGHTS_FILE, e.to_string()))?;
    meta.weights_sha256 = sha256_hex(&weights);
    meta.format_version = BUNDLE_FORMAT_VERSION;
    meta.schema_hash = pipeline.schema_hash.clone();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| err("directory", e.to_string()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".mtrec-bundle-")
        .tempdir_in(&parent)
        .map_err(|e| err("directory", e.to_string()))?;
    let write = |name: &'static str, bytes: &[u8]| {
        std::fs::write(tmp.path().join(name), bytes).map_err(|e| err(name, e.to_string()))
    };
    write(WEIGHTS_FILE, &weights)?;
    write(MODEL_FILE, pretty_json(&meta).as_bytes())?;
    write(FEATURES_FILE, pretty_json(pipeline).as_bytes())?;
    write(HISTORY_FILE, pretty_json(history).as_bytes())?;
    mtrec_schema::fs::replace_dir(&tmp.keep(), dir).map_err(|e| err("directory", e.to_string()))
}

/// Pretty JSON, newline-terminated.
fn pretty_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect("bundle parts serialize")
        + "
"
}

fn read(dir: &Path, part: &'static str) -> Result<Vec<u8>, BundleError> {
    std::fs::read(dir.join(part)).map_err(|e| BundleError { dir: dir.to_owned(), part, message: e.to_string() })
}

fn parse<T: serde::de::DeserializeOwned>(dir: &Path, part: &'static str, bytes: &[u8]) -> Result<T, BundleError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| BundleError {
        dir: dir.to_owned(),
        part,
        message: format!("{}: {}", e.path(), e.inner()),
    })
}

/// Loads and cross-checks a bundle.
pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
    let err = |part: &'static str, message: String| BundleError { dir: dir.to_owned(), part, message };
    let meta_bytes = read(dir, MODEL_FILE)?;
    let version: serde_json::Value = serde_json::from_slice(&meta_bytes).map_err(|e| err(MODEL_FILE, e.to_string()))?;
    match version.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(BUNDLE_FORMAT_VERSION) => {}
        Some(v) => {
            return Err(err(
                MODEL_FILE,
                format!("format_version {v} is not supported (this build reads {BUNDLE_FORMAT_VERSION})"),
            ))
        }
        None => return Err(err(MODEL_FILE, "format_version is missing".to_owned())),
    }
    let meta: ModelMeta = parse(dir, MODEL_FILE, &meta_bytes)?;
    let pipeline = FeaturePipeline::load(&dir.join(FEATURES_FILE)).map_err(|e| err(FEATURES_FILE, e.to_string()))?;
    if pipeline.schema_hash != meta.schema_hash {
        return Err(err(
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
        return Err(err(
            WEIGHTS_FILE,
            format!("SHA-256 {digest} differs from model.json's {}: corrupt or replaced", meta.weights_sha256),
        ));
    }
    let mut model =
        MultiTaskModel::new(&pipeline, &meta.model, meta.seed).map_err(|e| err(MODEL_FILE, e.to_string()))?;
    if task_meta(&model) != meta.tasks {
        return Err(err(MODEL_FILE, "tasks differ from the ones features.json and the model config define".to_owned()));
    }
    let tensors = io::from_safetensors(&weights, WEIGHTS_FILE).map_err(|e| err(WEIGHTS_FILE, e.to_string()))?;
    io::load_into(&mut model, &tensors, &dir.join(WEIGHTS_FILE)).map_err(|e| err(WEIGHTS_FILE, e.to_string()))?;
    let history = match std::fs::read(dir.join(HISTORY_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(HISTORY_FILE, e.to_string()))?,
        Err(e) => return Err(err(HISTORY_FILE, e.to_string())),
    };
    Ok(Bundle { meta, pipeline, model, history })
}

/// A fresh provenance record.
pub fn provenance(
    data: &Path,
    train_rows: usize,
    best_epoch: Option<usize>,
    epochs_run: usize,
    threads: usize,
) -> Provenance {
    Provenance {
        mtrec_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: now_rfc3339(),
        data: data.display().to_string(),
        train_rows,
        best_epoch,
        epochs_run,
        threads,
    }
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Per-task metrics keyed by name, the shape `history.json` uses for one epoch.
pub type Metrics = BTreeMap<String, f64>;
