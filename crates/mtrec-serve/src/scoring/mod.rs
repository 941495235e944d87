//! A bundle made ready to serve: the model, its encoder and the feature tables, and the scoring
//! of JSON and Arrow requests. Everything here is synchronous CPU work; the server runs it off
//! the async workers.
//!
//! How a pair's features are found, for each feature of the model:
//! 1. the request's object of the feature's side (`user`, `item` or `context`), by the feature's
//!    source column (a user's or item's id may also be given as `id`);
//! 2. when absent or null there, the user (item) feature table, by the user's (item's) id;
//! 3. otherwise the feature is encoded as null, exactly as a null cell in training, and a
//!    `missing` warning says so.
//!
//! A request's path, one file each: `json` (or `arrow`) finds and encodes each feature into
//! encoded columns (`column_builder`), noting what it had to assume (`warnings`); the model, packed
//! for inference at load (`mtrec_model::packed`), scores every row, as `mtrec predict` does;
//! the outputs become the answer.

mod answer;
mod arrow;
mod column_builder;
mod json;
mod warnings;

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use mtrec_ingest::table::{load_feature_table, load_feature_table_keyed, FeatureTable};
use mtrec_model::bundle::{self, Bundle};
use mtrec_model::infer::feature_views;
use mtrec_model::PackedModel;
use mtrec_schema::{EncodedValue, Encoder, FeatureColumn, RawValue, Side, TextRules, Transform};

pub use answer::Answer;
use answer::TaskColumn;

use crate::api::{FeatureInfo, ModelInfo, ModelRef, Record, ScoreRequest, TableInfo, TaskInfo};
use crate::error::{ApiError, ModelLoadError};

/// Request size limits (beyond the body size, which the router enforces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most items in one `/v1/score` request.
    pub max_items: usize,
    /// Most rows in one `/v1/score/batch` request.
    pub max_batch_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_items: 1_000, max_batch_rows: 100_000 }
    }
}

/// The feature table of `side`: the file given (`--user-features`, `--item-features`), else the
/// side table the bundle's data was ingested with, if any.
fn feature_table(given: Option<&Path>, encoder: &Encoder, side: Side) -> Result<Option<FeatureTable>, ModelLoadError> {
    if let Some(path) = given {
        return Ok(Some(load_feature_table(path, encoder, side)?));
    }
    let Some(table) = encoder.pipeline().tables.iter().find(|t| t.side == side) else { return Ok(None) };
    if !table.path.exists() {
        let flag = if side == Side::User { "--user-features" } else { "--item-features" };
        return Err(mtrec_ingest::IngestError::Read {
            path: table.path.clone(),
            source: format!("the bundle's data was joined with this table, which is not here: pass {flag}").into(),
        }
        .into());
    }
    Ok(Some(load_feature_table_keyed(&table.path, Some(table.format), Some(&table.key), encoder, side)?))
}

/// Where the feature tables come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePaths {
    pub user: Option<PathBuf>,
    pub item: Option<PathBuf>,
}

/// A loaded, self-tested bundle with its feature tables.
#[derive(Debug)]
pub struct ServingModel {
    pub dir: PathBuf,
    pub bundle: Bundle,
    /// The bundle's model packed for inference once, at load: what every request scores with.
    packed: PackedModel,
    pub encoder: Encoder,
    pub user_table: Option<FeatureTable>,
    pub item_table: Option<FeatureTable>,
    pub model_ref: ModelRef,
    pub loaded_at: String,
    /// Each feature's encoding of a null cell: the default of a missing feature.
    null_values: Vec<EncodedValue>,
    /// Per side, the source columns of its features (a request field outside these is ignored).
    side_columns: [HashSet<String>; 3],
}

pub(crate) fn side_index(side: Side) -> usize {
    match side {
        Side::User => 0,
        Side::Item => 1,
        Side::Context => 2,
    }
}

/// An entity's id in a request object: under the side's id column, else `id`; null is none.
pub(crate) fn record_id<'a>(record: &'a Record, id_column: Option<&str>) -> Option<&'a serde_json::Value> {
    id_column.and_then(|c| record.get(c)).or_else(|| record.get("id")).filter(|v| !v.is_null())
}

/// The key of an id: its category key after the text rules, as feature tables are keyed.
pub(crate) fn id_key<'a>(text: &TextRules, id: &'a serde_json::Value) -> Option<Cow<'a, str>> {
    RawValue::from_json(id).and_then(|v| text.apply(v).category_key())
}

/// A unit enum's serde name (`binary`, `user`, `out_of_vocabulary`).
pub(crate) fn snake(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl ServingModel {
    /// Loads the bundle at `dir` and the feature tables, then scores a request of two empty
    /// items as a self-test: a model that cannot answer is never served.
    pub fn load(dir: &Path, tables: &TablePaths) -> Result<Self, ModelLoadError> {
        let bundle = bundle::load(dir)?;
        let encoder = Encoder::new(bundle.pipeline.clone());
        let user_table = feature_table(tables.user.as_deref(), &encoder, Side::User)?;
        let item_table = feature_table(tables.item.as_deref(), &encoder, Side::Item)?;
        let null_values = (0..encoder.pipeline().features.len())
            .map(|f| encoder.encode_field(f, None).map(|(v, _)| v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ModelLoadError::NullEncoding { bundle: dir.to_owned(), source })?;
        let mut side_columns: [HashSet<String>; 3] = Default::default();
        for f in &encoder.pipeline().features {
            side_columns[side_index(f.side)].insert(f.column.clone());
        }
        let name =
            dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| bundle.meta.dataset.clone());
        let model_ref = ModelRef { name, version: bundle.meta.weights_sha256.chars().take(12).collect() };
        let model = Self {
            dir: dir.to_owned(),
            packed: PackedModel::new(&bundle.model),
            bundle,
            encoder,
            user_table,
            item_table,
            model_ref,
            loaded_at: mtrec_model::bundle::now_rfc3339(),
            null_values,
            side_columns,
        };
        model.self_test()?;
        Ok(model)
    }

    fn self_test(&self) -> Result<(), ModelLoadError> {
        let request = ScoreRequest {
            user: Record::new(),
            context: Record::new(),
            items: vec![Record::new(), Record::new()],
            tasks: None,
        };
        let fail = |message: String| ModelLoadError::SelfTest { bundle: self.dir.clone(), message };
        let answer = self.score(&request, &Limits::default()).map_err(|e| fail(e.message))?;
        match answer.tasks.iter().find(|t| !t.all_finite()) {
            Some(task) => Err(fail(format!("task {:?} gives a non-finite output", task.name))),
            None => Ok(()),
        }
    }

    /// A few scoring calls of the size of a typical request, so that the first real requests
    /// do not pay for cold caches and first allocations.
    pub fn warm_up(&self) -> Result<(), ModelLoadError> {
        let request =
            ScoreRequest { user: Record::new(), context: Record::new(), items: vec![Record::new(); 64], tasks: None };
        for _ in 0..3 {
            self.score(&request, &Limits::default())
                .map_err(|e| ModelLoadError::SelfTest { bundle: self.dir.clone(), message: e.message })?;
        }
        Ok(())
    }

    /// The user id of a request as routing and the exposure log key users: the key the user
    /// table is looked up by.
    pub fn user_key(&self, user: &Record) -> Option<String> {
        let pipeline = self.encoder.pipeline();
        record_id(user, pipeline.ids.user.as_deref()).and_then(|id| id_key(&pipeline.text, id)).map(Cow::into_owned)
    }

    /// Turns the reuse of what a request's rows share on or off (on by default; see
    /// `mtrec_model::packed`): off, every row is computed in full, as a plain forward pass.
    pub fn set_reuse(&mut self, reuse: bool) {
        self.packed = PackedModel::new(&self.bundle.model).with_reuse(reuse);
    }

    /// The model as `GET /v1/models` describes it.
    pub fn info(&self) -> ModelInfo {
        let meta = &self.bundle.meta;
        let pipeline = self.encoder.pipeline();
        let tasks = meta
            .tasks
            .iter()
            .map(|t| TaskInfo {
                name: t.name.clone(),
                kind: snake(&t.kind),
                scope: snake(&t.scope),
                classes: t.classes.clone(),
                product_of: t.product_of.clone(),
            })
            .collect();
        let features = pipeline
            .features
            .iter()
            .map(|f| FeatureInfo {
                name: f.name.clone(),
                field: f.column.clone(),
                side: snake(&f.side),
                kind: match f.transform {
                    Transform::Categorical { .. } => "categorical",
                    Transform::MultiCategorical { .. } => "multi_categorical",
                    Transform::Numeric { .. } => "numeric",
                    Transform::Bucketized { .. } => "bucketized",
                }
                .to_owned(),
            })
            .collect();
        let table_info = |t: &FeatureTable| TableInfo {
            path: t.path.display().to_string(),
            rows: t.len(),
            features: t.feature_names(&self.encoder).into_iter().map(str::to_owned).collect(),
        };
        ModelInfo {
            model: self.model_ref.clone(),
            architecture: meta.architecture.clone(),
            dataset: meta.dataset.clone(),
            created_at: meta.provenance.created_at.clone(),
            loaded_at: self.loaded_at.clone(),
            bundle: self.dir.display().to_string(),
            tasks,
            features,
            training_metrics: self
                .bundle
                .history
                .best_or_last()
                .map(|e| e.valid.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| (k.to_string(), *v)).collect())
                .unwrap_or_default(),
            user_table: self.user_table.as_ref().map(table_info),
            item_table: self.item_table.as_ref().map(table_info),
        }
    }

    /// The indices of the requested tasks (all when `None`).
    fn select_tasks(&self, tasks: &Option<Vec<String>>) -> Result<Vec<usize>, ApiError> {
        let heads = &self.bundle.model.heads;
        let Some(names) = tasks else { return Ok((0..heads.len()).collect()) };
        if names.is_empty() {
            return Err(
                ApiError::unprocessable("no_tasks", "`tasks` is empty: omit it to get every task").with_field("tasks")
            );
        }
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                heads.iter().position(|h| &h.name == name).ok_or_else(|| {
                    let known: Vec<&str> = heads.iter().map(|h| h.name.as_str()).collect();
                    ApiError::unprocessable(
                        "unknown_task",
                        format!("unknown task {name:?} (tasks: {})", known.join(", ")),
                    )
                    .with_field(format!("tasks[{i}]"))
                })
            })
            .collect()
    }

    fn check_rows(&self, n: usize, limits: &Limits) -> Result<(), ApiError> {
        if n == 0 {
            return Err(ApiError::unprocessable("no_rows", "the batch has no rows").with_field("rows"));
        }
        if n > limits.max_batch_rows {
            return Err(ApiError::unprocessable(
                "too_many_rows",
                format!("{n} rows is more than this server's limit of {}", limits.max_batch_rows),
            )
            .with_field("rows"));
        }
        Ok(())
    }

    /// The packed model's outputs for encoded columns: per task, `n x outputs`.
    fn forward(&self, columns: &[FeatureColumn], n: usize) -> Vec<Vec<f32>> {
        let rows: Vec<usize> = (0..n).collect();
        self.packed.predict(&self.bundle.model, &feature_views(columns), &rows).outputs
    }

    /// The answer's columns of the requested tasks, sorted by name (a task asked for twice is
    /// answered once).
    fn task_columns(&self, outputs: &[Vec<f32>], tasks: &[usize]) -> Vec<TaskColumn> {
        let heads = &self.bundle.model.heads;
        let mut tasks = tasks.to_vec();
        tasks.sort_by(|&a, &b| heads[a].name.cmp(&heads[b].name));
        tasks.dedup();
        tasks.iter().map(|&t| TaskColumn::new(&heads[t], &outputs[t])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_by_column_then_id_and_keyed_as_categories() {
        let record: Record = serde_json::from_str(r#"{"user_id": 17, "id": "other"}"#).unwrap();
        let text = TextRules::default();
        let key = |column| record_id(&record, column).and_then(|id| id_key(&text, id)).map(Cow::into_owned);
        assert_eq!(key(Some("user_id")).as_deref(), Some("17"));
        assert_eq!(key(None).as_deref(), Some("other"));
        let float: Record = serde_json::from_str(r#"{"id": 17.0}"#).unwrap();
        assert_eq!(record_id(&float, None).and_then(|id| id_key(&text, id)).as_deref(), Some("17"));
        let null: Record = serde_json::from_str(r#"{"id": null}"#).unwrap();
        assert_eq!(record_id(&null, None), None);
        let string: Record = serde_json::from_str(r#"{"id": "u17"}"#).unwrap();
        assert_eq!(record_id(&string, None).and_then(|id| id_key(&text, id)).as_deref(), Some("u17"));
    }
}
