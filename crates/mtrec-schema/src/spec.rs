//! The declarative dataset schema (`schemas/*.json`), as written by the user.
//!
//! These types are the single source of truth for `schemas/dataset.schema.json`, which is generated
//! from them (`mtrec schema`) and checked by a test, so the JSON Schema and the parser cannot drift.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A dataset schema: where the logs are, which columns are ids, features and labels, and how to
/// split them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetSchema {
    /// Short name of the dataset, carried into every artifact.
    pub name: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the raw logs are and how to read them. `mtrec ingest --input` overrides `path`.
    #[serde(default)]
    pub source: Source,
    /// Id columns (all optional: a table such as Census-Income has no user or item id).
    #[serde(default)]
    pub ids: Ids,
    /// Defaults applied to every feature that does not override them.
    #[serde(default)]
    pub defaults: Defaults,
    /// The model's inputs.
    pub features: Vec<FeatureSpec>,
    /// The model's outputs: one head per task.
    pub tasks: Vec<TaskSpec>,
    /// How rows are split into train, valid and test.
    pub split: SplitSpec,
    /// Raw columns copied verbatim into the encoded splits as `extra.<column>` (for example the
    /// true probabilities of a synthetic dataset, for Bayes-optimal metrics).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough: Vec<String>,
    /// Tables of user and item attributes (profiles, the catalogue) joined to the log on its id
    /// columns at ingestion, and loaded by `mtrec serve` to look features up by id.
    #[serde(default, skip_serializing_if = "SideTables::is_empty")]
    pub tables: SideTables,
}

/// The user table and the item table, each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SideTables {
    /// One row per user, keyed by the log's `ids.user` values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<SideTable>,
    /// One row per item, keyed by the log's `ids.item` values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<SideTable>,
}

impl SideTables {
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.item.is_none()
    }
}

/// A table joined to the log: every column the schema reads that the table holds and the log
/// does not comes from the table row whose key is the log row's id. A log id missing from the
/// table reads as nulls there (counted in `ingest_report.json`); a key that repeats is an
/// error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SideTable {
    /// The table's file, relative to the schema file's directory (CSV, Parquet or Arrow IPC).
    pub path: String,
    /// File format; inferred from the extension when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The key column; the log's id column name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Where the raw logs are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// One path, a glob (`logs/*.parquet`) or a list of them. Relative paths are resolved against
    /// the schema file's directory. Not needed when `split.method` is `files` or when `--input` is
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Paths>,
    /// File format; inferred from the extension when absent (`.csv`, `.csv.gz`, `.tsv`,
    /// `.parquet`, `.arrow`, `.ipc`, `.feather`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Options for CSV files.
    #[serde(default)]
    pub csv: CsvOptions,
}

/// One path or glob, or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Paths {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(ps) => ps,
        }
    }
}

/// Raw file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Delimited text, plain or gzip-compressed (`.gz`).
    Csv,
    Parquet,
    /// Arrow IPC file (Feather v2).
    #[serde(alias = "arrow", alias = "feather")]
    Ipc,
}

/// CSV reading options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter, one ASCII character.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Whether the first line holds the column names.
    #[serde(default = "default_true")]
    pub has_header: bool,
    /// Column names, in file order; required without a header, and replaces the header's names
    /// when given with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Cell texts read as null (after trimming, when `trim_whitespace` is set).
    #[serde(default = "default_null_values")]
    pub null_values: Vec<String>,
    /// Strip leading and trailing whitespace from every cell.
    #[serde(default)]
    pub trim_whitespace: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: default_delimiter(),
            has_header: true,
            columns: None,
            null_values: default_null_values(),
            trim_whitespace: false,
        }
    }
}

fn default_delimiter() -> String {
    ",".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_null_values() -> Vec<String> {
    vec![String::new()]
}

/// Id columns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ids {
    /// Column holding the user id (needed for per-user metrics and the `user` split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Column holding the item id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Column holding the event time: a number (epoch seconds, or `timestamp_unit`), a date-time
    /// column, or date-time text (RFC 3339 / ISO 8601, `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD`, or
    /// `timestamp_format`); needed for the `time` split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The unit of numeric timestamps and numeric time cut-offs: `seconds` (the default),
    /// `milliseconds`, `microseconds` or `nanoseconds` since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_unit: Option<crate::timestamp::TimestampUnit>,
    /// How date-time text is written, in chrono's strftime syntax (e.g. `%d/%m/%Y %H:%M`), when
    /// it is none of the default forms. Without an offset (`%z`) times are UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_format: Option<String>,
}

/// Defaults for every feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Embedding dimension of categorical features that do not set their own.
    #[serde(default = "default_embedding_dim")]
    pub embedding_dim: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self { embedding_dim: default_embedding_dim() }
    }
}

fn default_embedding_dim() -> usize {
    8
}

/// Which side of the interaction a feature describes; decides which task heads may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    User,
    Item,
    Context,
}

/// One model input. Which fields apply depends on `type`; the others are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Feature name: letters, digits and `_`; unique.
    pub name: String,
    /// Source column; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub side: Side,
    #[serde(rename = "type")]
    pub kind: FeatureType,
    /// categorical, multi_categorical: fit a vocabulary on the train split (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocabulary: Option<VocabularySpec>,
    /// categorical, multi_categorical: hash categories into buckets instead (no fitting, no OOV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashing: Option<HashingSpec>,
    /// multi_categorical: separator between the categories of one text cell (default `|`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// multi_categorical: how the model pools the embeddings of one row's categories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    /// multi_categorical with `pooling: attention`: the candidate feature and the sequence length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<AttentionSpec>,
    /// Embedding dimension (categorical, multi_categorical, bucketized numeric); defaults to
    /// `defaults.embedding_dim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dim: Option<usize>,
    /// numeric: value for nulls: `"mean"` (of train, the default), `"median"`, `"zero"`, or a
    /// number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<Fill>,
    /// numeric: clip to `[low, high]` after filling; either bound may be null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<[Option<f64>; 2]>,
    /// numeric: apply `ln(1 + max(x, 0))` after clipping (counts and amounts with heavy tails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log1p: Option<bool>,
    /// numeric: scaling of the value fed to the model (default `standardize`); not with
    /// `bucketize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    /// numeric: turn the value into a bucket id with an embedding, instead of a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucketize: Option<Bucketize>,
}

impl FeatureSpec {
    /// The raw column this feature reads.
    pub fn column(&self) -> &str {
        self.column.as_deref().unwrap_or(&self.name)
    }
}

/// Feature kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeatureType {
    /// One category per row, mapped to an id by a vocabulary or by hashing. Ids 0 (out of
    /// vocabulary) and 1 (null) are reserved in every table; known categories start at 2.
    Categorical,
    /// Several categories per row: a delimited text cell or a list column.
    MultiCategorical,
    /// A number: fill, clip, log1p, then normalize or bucketize.
    Numeric,
}

/// Pooling of a multi-categorical feature's embeddings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    #[default]
    Mean,
    Sum,
    /// DIN's target attention (Zhou et al., KDD 2018): each of the row's first
    /// `attention.max_length` categories (a behaviour sequence, most recent first) is weighted
    /// by a small network of it and the candidate's embedding (`attention.target`), without
    /// normalizing the weights. Tasks that do not see the candidate (user tasks) take the mean.
    Attention,
}

/// What attention pooling attends with ([`Pooling::Attention`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttentionSpec {
    /// The candidate: a categorical item feature whose embeddings have the sequence's dimension
    /// (typically the item id, sharing the sequence's vocabulary).
    pub target: String,
    /// Only the first this many categories of a row are attended to (1 to 256).
    pub max_length: usize,
}

/// A vocabulary fitted on the train split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VocabularySpec {
    /// Categories seen fewer times in train map to the OOV id 0.
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// Keep at most this many categories (the most frequent; ties by value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<usize>,
    /// Features naming the same shared vocabulary get one vocabulary (fitted on all of their
    /// values) and one embedding table, e.g. a clicked-items history and the candidate item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

impl Default for VocabularySpec {
    fn default() -> Self {
        Self { min_count: default_min_count(), max_size: None, shared: None }
    }
}

fn default_min_count() -> u64 {
    1
}

/// Feature hashing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashingSpec {
    /// Number of buckets (ids 2 ..= buckets + 1).
    pub buckets: u32,
    /// Hash seed.
    #[serde(default)]
    pub seed: u64,
}

/// Fill rule for nulls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Fill {
    Rule(FillRule),
    Value(f64),
}

/// Named fill rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FillRule {
    Mean,
    Median,
    Zero,
}

/// Scaling of a numeric feature (statistics from the train split).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// `(x - mean) / std`.
    #[default]
    Standardize,
    /// `(x - min) / (max - min)`.
    MinMax,
    /// Leave the value as it is.
    None,
}

/// Bucket boundaries: explicit, or `quantiles` equal-frequency buckets fitted on train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bucketize {
    /// Sorted boundaries; bucket k holds `boundaries[k-1] <= x < boundaries[k]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundaries: Option<Vec<f64>>,
    /// Number of equal-frequency buckets fitted on the train split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<usize>,
}

/// Which features a task's head may see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every feature (e.g. click-through).
    #[default]
    Pair,
    /// User-side features only (a user-level target).
    User,
    /// Item-side features only (an item-level target).
    Item,
}

/// One prediction target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Task name: letters, digits and `_`; unique.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TaskType,
    /// multiclass: class names, in class-index order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// How the label is read from the logs; absent for a `product_of` task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<LabelSpec>,
    /// A binary task that is the product of earlier binary tasks of its scope (ESMM: `click`
    /// then `convert` makes click-and-convert): its probability is the product of theirs and its
    /// label is 1 where every factor's is, 0 where any factor's is 0, and unknown otherwise. It
    /// has no tower of its own; training it on every impression trains the later factors
    /// through it, on the whole sample rather than the rows the earlier factors select.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_of: Vec<String>,
    #[serde(default)]
    pub scope: Scope,
    /// Loss weight λ in L = Σ λ_i L_i.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// The label counts only where this holds (rows with a null label never count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Condition>,
}

fn default_weight() -> f64 {
    1.0
}

/// Task kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// A probability; sigmoid and binary cross-entropy.
    Binary,
    /// A real value; squared or Huber loss.
    Regression,
    /// One of `classes`; softmax and cross-entropy.
    Multiclass,
}

/// How a task's label is read from its column.
///
/// binary: `positive` (values meaning 1; optional `negative`: then any other value is an error),
/// or `threshold` (1 when the number is above it), or `map`, or else the column must hold 0/1 or
/// true/false. regression: the number itself, or `map`. multiclass: the value must be one of the
/// task's classes, or `map` it to one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// regression: learn `ln(1 + max(y, 0))` instead of `y` (durations, amounts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log1p: bool,
    /// Raw value (as text) to label: a number for binary (0/1) and regression, a class name for
    /// multiclass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<BTreeMap<String, serde_json::Value>>,
}

/// A condition on one column; all given tests must hold, and a null never satisfies it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub column: String,
    /// The value (compared as text; numbers in their shortest form, so `1` matches `1.0`) is
    /// one of these.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub is_in: Option<Vec<serde_json::Value>>,
    /// The value is none of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<f64>,
}

/// Train / valid / test split.
///
/// `random`: each row independently by a seeded hash of its position (`fractions`, `seed`).
/// `user`: all rows of a user land in one split (cold-start evaluation; needs `ids.user`).
/// `time`: `[.., valid_from)` train, `[valid_from, test_from)` valid, the rest test; cutoffs are
/// numbers in the timestamp column's unit, or dates / RFC 3339 times for timestamp columns.
/// `files`: given files per split (`train`, `valid`, `test`); `source.path` and `--input` unused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    pub method: SplitMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fractions: Option<Fractions>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_from: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<Paths>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<Paths>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Paths>,
}

/// Split methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SplitMethod {
    Random,
    User,
    Time,
    Files,
}

/// Split fractions; they must sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fractions {
    pub train: f64,
    pub valid: f64,
    pub test: f64,
}
