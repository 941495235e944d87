//! The request and response bodies of API v1. `schemas/openapi.json` is generated from these
//! types (see [`crate::openapi`]), so the spec cannot drift from the code.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::repository::{Arm, Routing};

/// The media type of Arrow IPC streams.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Raw fields of a user, an item or a context, keyed by source column (as in the training
/// data). A user or item may carry its id as `id` or under the schema's id column.
pub type Record = serde_json::Map<String, serde_json::Value>;

/// `POST /v1/score`: one user, many candidate items.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// The user's id (`id`) and any user-side features; features left out are looked up in the
    /// user feature table by id.
    pub user: Record,
    /// Context-side features (time, device, ...), shared by every item.
    #[serde(default)]
    pub context: Record,
    /// Candidate items, scored in this order; each has an `id` and any item-side features.
    pub items: Vec<Record>,
    /// Only these tasks (default: every task).
    #[serde(default)]
    pub tasks: Option<Vec<String>>,
}

/// `POST /v1/score/batch` as JSON: independent (user, item, context) rows.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub rows: Vec<PairRecord>,
    #[serde(default)]
    pub tasks: Option<Vec<String>>,
}

/// One row of a batch.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairRecord {
    #[serde(default)]
    pub user: Record,
    #[serde(default)]
    pub item: Record,
    #[serde(default)]
    pub context: Record,
}

/// The model that answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelRef {
    pub name: String,
    /// From a model repository, the version's directory name; serving one bundle, the first 12
    /// hex digits of the weights' SHA-256 (it changes with every retrained bundle).
    pub version: String,
}

/// One task's output for one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TaskOutput {
    /// A binary task: the probability of the positive label.
    Binary { probability: f32 },
    /// A regression task: the predicted value in the label's units. For a label the model learns
    /// through `ln(1 + y)` (`label.log1p`), `value` is `exp(log1p_value) − 1`, the label's
    /// median under a log-normal error; `mean` is the label's mean, `exp(log1p_value + σ²/2) − 1`
    /// with σ² the residual variance training measured on the valid split (absent when unknown);
    /// `log1p_value` is the model's own output, on the training scale.
    Regression {
        value: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mean: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log1p_value: Option<f32>,
    },
    /// A multiclass task: each class's probability and the most probable class.
    Multiclass { probabilities: BTreeMap<String, f32>, top_class: String },
}

/// The outputs of every requested task for one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PairScores {
    /// The item's id (`/v1/score`) or null when the item had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<serde_json::Value>,
    /// The user's id (`/v1/score/batch` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<serde_json::Value>,
    pub scores: BTreeMap<String, TaskOutput>,
}

/// What the encoding had to assume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// Absent from the request and from the feature tables: encoded as null (numerics filled).
    Missing,
    /// A category unseen in training, mapped to the out-of-vocabulary embedding.
    OutOfVocabulary,
    /// An id with no row in the loaded feature table.
    UnknownId,
    /// A field that is no feature of that side (e.g. an item feature sent in `user`): ignored.
    IgnoredField,
    /// A number that is infinite or beyond `f32`'s range (e.g. `"inf"`, `1e300`): encoded as
    /// null, as ingestion does.
    NonFinite,
}

/// One warning, aggregated over the items or rows it applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiWarning {
    /// Where: `user.age`, `context.hour`, `items[].price` (`rows[].item.price` for batches).
    pub field: String,
    pub kind: WarningKind,
    /// How many items (rows) it applies to; 1 for user and context fields.
    pub count: usize,
    /// The first few item (row) indices concerned; empty for user and context fields.
    pub indices: Vec<usize>,
}

/// The answer to `/v1/score` and to a JSON `/v1/score/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScoreResponse {
    pub model: ModelRef,
    /// Which arm scored the request: `stable`, `candidate` (an experiment's share of users) or
    /// `pinned` (the request named its version or label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<Arm>,
    /// One entry per item (row), in request order.
    pub results: Vec<PairScores>,
    pub warnings: Vec<ApiWarning>,
}

/// A task as `/v1/models` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskInfo {
    pub name: String,
    /// `binary`, `regression` or `multiclass`.
    pub kind: String,
    /// `pair`, `user` or `item`: which features the task's head sees.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// A product task's factors (ESMM's click-and-convert: `["click", "convert"]`): its
    /// probability is the product of theirs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_of: Vec<String>,
}

/// A feature as `/v1/models` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeatureInfo {
    pub name: String,
    /// The request field (source column) it is read from.
    pub field: String,
    /// `user`, `item` or `context`: the request object it belongs in.
    pub side: String,
    /// `categorical`, `multi_categorical`, `numeric` or `bucketized`.
    pub kind: String,
}

/// A loaded feature table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TableInfo {
    pub path: String,
    pub rows: usize,
    pub features: Vec<String>,
}

/// One loaded version: `GET /v1/models/{name}/versions/{version}`, and each ready version of
/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelInfo {
    pub model: ModelRef,
    pub architecture: String,
    pub dataset: String,
    pub created_at: String,
    pub loaded_at: String,
    pub bundle: String,
    pub tasks: Vec<TaskInfo>,
    pub features: Vec<FeatureInfo>,
    /// Validation metrics of the kept (best) epoch, `<task>.<metric>`.
    pub training_metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_table: Option<TableInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_table: Option<TableInfo>,
}

/// Query parameters of the scoring routes: pin a version or a label instead of routing.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreQuery {
    /// Score with this version (it must be ready).
    #[serde(default)]
    pub version: Option<String>,
    /// Score with the version this label points at (e.g. `candidate`).
    #[serde(default)]
    pub label: Option<String>,
    /// Arrow batches only: a comma-separated task filter.
    #[serde(default)]
    pub tasks: Option<String>,
}

/// Whether a version serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Loaded, self-tested and warmed up.
    Ready,
    /// Not served: incomplete or failing (see `reason`); tried again when its files change.
    Failed,
}

/// One version of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VersionEntry {
    pub version: String,
    pub status: VersionStatus,
    /// Why a failed version is not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The labels pointing at this version.
    pub labels: Vec<String>,
    /// The model, for a ready version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<ModelInfo>>,
}

/// One served model name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelEntry {
    pub name: String,
    /// The model of `/v1/score` and `/v1/score/batch`.
    pub default: bool,
    /// The version requests outside an experiment get: `stable`'s when ready, else the newest
    /// ready version.
    pub stable_version: Option<String>,
    pub routing: Routing,
    /// Why the routing file was not applied (the previous routing stays in force), or which
    /// labels point at a version that is not ready (`stable` then falls back to the newest
    /// ready version; a `candidate` that is not ready gets no traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_error: Option<String>,
    /// Newest first.
    pub versions: Vec<VersionEntry>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelsResponse {
    pub default_model: Option<String>,
    pub models: Vec<ModelEntry>,
}

/// `POST /v1/admin/reload` body (optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// Load this bundle directory instead of the current one.
    #[serde(default)]
    pub bundle: Option<String>,
}

/// `POST /v1/admin/reload` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReloadResponse {
    pub previous: ModelRef,
    pub current: ModelRef,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    pub status: String,
}

/// Every error: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_json`, `invalid_field`, `too_many_items`.
    pub code: String,
    pub message: String,
    /// The request field at fault, as a path (`items[3].price`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
