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

use std::collections::{BTreeMap, HashSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use mtrec_ingest::encoded::FeatureColumn;
use mtrec_ingest::table::{encode_frame, id_keys, load_feature_table, FeatureTable};
use mtrec_ingest::IngestError;
use mtrec_model::bundle::{self, Bundle};
use mtrec_schema::{EncodedKind, EncodedValue, Encoder, Lookup, RawValue, Side, TaskType, Transform};
use polars::prelude::*;

use crate::api::{
    ApiWarning, BatchRequest, FeatureInfo, ModelInfo, ModelRef, PairScores, Record, ScoreRequest, TableInfo, TaskInfo,
    TaskOutput, WarningKind,
};
use crate::error::{ApiError, LoadError};

/// Most item (row) indices listed in one warning.
const WARNING_INDICES: usize = 10;

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

fn side_index(side: Side) -> usize {
    match side {
        Side::User => 0,
        Side::Item => 1,
        Side::Context => 2,
    }
}

/// A unit enum's serde name (`binary`, `user`, `out_of_vocabulary`).
pub(crate) fn snake(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl ServingModel {
    /// Loads the bundle at `dir` and the feature tables, then scores a request of two empty
    /// items as a self-test: a model that cannot answer is never served.
    pub fn load(dir: &Path, tables: &TablePaths) -> Result<Self, LoadError> {
        let bundle = bundle::load(dir)?;
        let encoder = Encoder::new(bundle.pipeline.clone());
        let user_table = tables.user.as_deref().map(|p| load_feature_table(p, &encoder, Side::User)).transpose()?;
        let item_table = tables.item.as_deref().map(|p| load_feature_table(p, &encoder, Side::Item)).transpose()?;
        let null_values = (0..encoder.pipeline().features.len())
            .map(|f| encoder.encode_field(f, None).map(|(v, _)| v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LoadError::SelfTest { bundle: dir.display().to_string(), message: e.to_string() })?;
        let mut side_columns: [HashSet<String>; 3] = Default::default();
        for f in &encoder.pipeline().features {
            side_columns[side_index(f.side)].insert(f.column.clone());
        }
        let name =
            dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| bundle.meta.dataset.clone());
        let model_ref = ModelRef { name, version: bundle.meta.weights_sha256.chars().take(12).collect() };
        let model = Self {
            dir: dir.to_owned(),
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

    fn self_test(&self) -> Result<(), LoadError> {
        let request = ScoreRequest {
            user: Record::new(),
            context: Record::new(),
            items: vec![Record::new(), Record::new()],
            tasks: None,
        };
        let fail = |message: String| LoadError::SelfTest { bundle: self.dir.display().to_string(), message };
        let response = self.score(&request, &Limits::default()).map_err(|e| fail(e.message))?;
        for pair in &response.results {
            for (task, output) in &pair.scores {
                let finite = match output {
                    TaskOutput::Binary { probability } => probability.is_finite(),
                    TaskOutput::Regression { value } => value.is_finite(),
                    TaskOutput::Multiclass { probabilities, .. } => probabilities.values().all(|p| p.is_finite()),
                };
                if !finite {
                    return Err(fail(format!("task {task:?} gives a non-finite output")));
                }
            }
        }
        Ok(())
    }

    /// `GET /v1/models`.
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
            training_metrics: best_epoch_metrics(&self.bundle.history),
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

    /// `POST /v1/score`: one user, many items, one forward pass.
    pub fn score(&self, request: &ScoreRequest, limits: &Limits) -> Result<crate::api::ScoreResponse, ApiError> {
        let tasks = self.select_tasks(&request.tasks)?;
        let n = request.items.len();
        if n == 0 {
            return Err(ApiError::unprocessable("no_items", "`items` is empty").with_field("items"));
        }
        if n > limits.max_items {
            return Err(ApiError::unprocessable(
                "too_many_items",
                format!("{n} items is more than this server's limit of {}", limits.max_items),
            )
            .with_field("items"));
        }
        let mut warnings = Warnings::default();
        let user = Entity::new(self, Side::User, &request.user, "user", "user", None, &mut warnings);
        let context = Entity::new(self, Side::Context, &request.context, "context", "context", None, &mut warnings);
        let items: Vec<Entity<'_>> = request
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                Entity::new(self, Side::Item, item, &format!("items[{i}]"), "items[]", Some(i), &mut warnings)
            })
            .collect();
        let features = &self.encoder.pipeline().features;
        let mut columns = Vec::with_capacity(features.len());
        for (f, feature) in features.iter().enumerate() {
            let mut column = ColumnBuilder::new(feature.encoded_kind(), n);
            match feature.side {
                Side::Item => {
                    for item in &items {
                        item.push(self, f, &mut column, &mut warnings)?;
                    }
                }
                side => {
                    let entity = if side == Side::User { &user } else { &context };
                    let mut one = ColumnBuilder::new(feature.encoded_kind(), 1);
                    entity.push(self, f, &mut one, &mut warnings)?;
                    let one = one.finish();
                    for _ in 0..n {
                        column.push_from(&one, 0);
                    }
                }
            }
            columns.push(column.finish());
        }
        let outputs = self.forward(&columns, n);
        let results = (0..n)
            .map(|r| PairScores {
                item_id: items[r].id.cloned(),
                user_id: None,
                scores: self.pair_outputs(&outputs, &tasks, r),
            })
            .collect();
        Ok(crate::api::ScoreResponse { model: self.model_ref.clone(), results, warnings: warnings.finish() })
    }

    /// `POST /v1/score/batch` with a JSON body: independent rows, one forward pass.
    pub fn score_batch(&self, request: &BatchRequest, limits: &Limits) -> Result<crate::api::ScoreResponse, ApiError> {
        let tasks = self.select_tasks(&request.tasks)?;
        let n = request.rows.len();
        self.check_rows(n, limits)?;
        let mut warnings = Warnings::default();
        let mut entities = Vec::with_capacity(n);
        for (r, row) in request.rows.iter().enumerate() {
            let user = Entity::new(
                self,
                Side::User,
                &row.user,
                &format!("rows[{r}].user"),
                "rows[].user",
                Some(r),
                &mut warnings,
            );
            let item = Entity::new(
                self,
                Side::Item,
                &row.item,
                &format!("rows[{r}].item"),
                "rows[].item",
                Some(r),
                &mut warnings,
            );
            let context = Entity::new(
                self,
                Side::Context,
                &row.context,
                &format!("rows[{r}].context"),
                "rows[].context",
                Some(r),
                &mut warnings,
            );
            entities.push([user, item, context]);
        }
        let features = &self.encoder.pipeline().features;
        let mut columns = Vec::with_capacity(features.len());
        for (f, feature) in features.iter().enumerate() {
            let mut column = ColumnBuilder::new(feature.encoded_kind(), n);
            for row in &entities {
                row[side_index(feature.side)].push(self, f, &mut column, &mut warnings)?;
            }
            columns.push(column.finish());
        }
        let outputs = self.forward(&columns, n);
        let results = (0..n)
            .map(|r| PairScores {
                item_id: entities[r][1].id.cloned(),
                user_id: entities[r][0].id.cloned(),
                scores: self.pair_outputs(&outputs, &tasks, r),
            })
            .collect();
        Ok(crate::api::ScoreResponse { model: self.model_ref.clone(), results, warnings: warnings.finish() })
    }

    /// `POST /v1/score/batch` with an Arrow IPC stream: one row per pair, columns named like the
    /// training data's source columns. Answers an Arrow IPC stream with `id.user` and `id.item`
    /// (when the request has the id columns) and the columns of `mtrec predict`
    /// (`pred.<task>`, `prob.<task>.<class>`), plus the warnings.
    pub fn score_arrow(
        &self,
        body: &[u8],
        tasks: &Option<Vec<String>>,
        limits: &Limits,
    ) -> Result<(Vec<u8>, Vec<ApiWarning>), ApiError> {
        let tasks = self.select_tasks(tasks)?;
        let df = IpcStreamReader::new(Cursor::new(body)).finish().map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_arrow", format!("not a readable Arrow IPC stream: {e}"))
        })?;
        let n = df.height();
        self.check_rows(n, limits)?;
        let origin = Path::new("request body");
        let pipeline = self.encoder.pipeline();
        let keys = |column: &Option<String>| -> Result<Option<Vec<Option<String>>>, ApiError> {
            match column {
                Some(c) if df.column(c).is_ok() => {
                    id_keys(&self.encoder, &df, c, origin).map(Some).map_err(arrow_error)
                }
                _ => Ok(None),
            }
        };
        let user_keys = keys(&pipeline.ids.user)?;
        let item_keys = keys(&pipeline.ids.item)?;
        let nulls: Vec<Option<Vec<bool>>> = pipeline
            .features
            .iter()
            .map(|f| df.column(&f.column).ok().map(|c| c.is_null().iter().map(|b| b.unwrap_or(true)).collect()))
            .collect();
        let frame = encode_frame(&self.encoder, df, origin, &|_| true).map_err(arrow_error)?;

        let mut warnings = Warnings::default();
        let lookup = |table: &Option<FeatureTable>, keys: &Option<Vec<Option<String>>>| -> Vec<Option<usize>> {
            match (table, keys) {
                (Some(t), Some(k)) => k.iter().map(|k| k.as_deref().and_then(|k| t.row(k))).collect(),
                _ => vec![None; n],
            }
        };
        let user_rows = lookup(&self.user_table, &user_keys);
        let item_rows = lookup(&self.item_table, &item_keys);
        let mut columns = Vec::with_capacity(pipeline.features.len());
        for (f, feature) in pipeline.features.iter().enumerate() {
            let (table, rows) = match feature.side {
                Side::User => (self.user_table.as_ref(), &user_rows),
                Side::Item => (self.item_table.as_ref(), &item_rows),
                Side::Context => (None, &user_rows),
            };
            let table_column = table.and_then(|t| t.frame.features[f].as_ref());
            let mut column = ColumnBuilder::new(feature.encoded_kind(), n);
            for r in 0..n {
                let given = nulls[f].as_ref().is_some_and(|null| !null[r]);
                match (&frame.features[f], table_column.zip(rows[r])) {
                    (Some(values), _) if given => column.push_from(values, r),
                    (_, Some((values, row))) => column.push_from(values, row),
                    _ => {
                        column.push(&self.null_values[f]);
                        warnings.add(format!("rows[].{}", feature.column), WarningKind::Missing, Some(r));
                    }
                }
            }
            columns.push(column.finish());
        }
        let outputs = self.forward(&columns, n);

        let mut out: Vec<Column> = Vec::new();
        for (name, keys) in [(mtrec_schema::columns::USER_ID, &user_keys), (mtrec_schema::columns::ITEM_ID, &item_keys)]
        {
            if let Some(keys) = keys {
                out.push(Column::new(name.into(), keys.iter().map(|k| k.as_deref()).collect::<Vec<_>>()));
            }
        }
        for &t in &tasks {
            let head = &self.bundle.model.heads[t];
            if head.kind == TaskType::Multiclass {
                let top: Vec<&str> = (0..n)
                    .map(|r| {
                        head.classes
                            [mtrec_metrics::predicted_class(&outputs[t][r * head.outputs..(r + 1) * head.outputs])]
                        .as_str()
                    })
                    .collect();
                out.push(Column::new(mtrec_train::predict::pred_column(&head.name).into(), top));
                for (c, class) in head.classes.iter().enumerate() {
                    let p: Vec<f32> = (0..n).map(|r| outputs[t][r * head.outputs + c]).collect();
                    out.push(Column::new(mtrec_train::predict::prob_column(&head.name, class).into(), p));
                }
            } else {
                out.push(Column::new(mtrec_train::predict::pred_column(&head.name).into(), outputs[t].clone()));
            }
        }
        let mut df = DataFrame::new(n, out).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut bytes = Vec::new();
        IpcStreamWriter::new(&mut bytes).finish(&mut df).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((bytes, warnings.finish()))
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

    /// The model's one forward function over encoded columns: per task, `n x outputs`.
    fn forward(&self, columns: &[FeatureColumn], n: usize) -> Vec<Vec<f32>> {
        let rows: Vec<usize> = (0..n).collect();
        self.bundle.model.predict(&mtrec_train::eval::feature_views(columns), &rows).outputs
    }

    fn pair_outputs(&self, outputs: &[Vec<f32>], tasks: &[usize], r: usize) -> BTreeMap<String, TaskOutput> {
        tasks
            .iter()
            .map(|&t| {
                let head = &self.bundle.model.heads[t];
                let out = &outputs[t][r * head.outputs..(r + 1) * head.outputs];
                let value = match head.kind {
                    TaskType::Binary => TaskOutput::Binary { probability: out[0] },
                    TaskType::Regression => TaskOutput::Regression { value: out[0] },
                    TaskType::Multiclass => TaskOutput::Multiclass {
                        probabilities: head.classes.iter().cloned().zip(out.iter().copied()).collect(),
                        top_class: head.classes[mtrec_metrics::predicted_class(out)].clone(),
                    },
                };
                (head.name.clone(), value)
            })
            .collect()
    }
}

fn arrow_error(e: IngestError) -> ApiError {
    match e {
        IngestError::Cell { row, column, message, .. } => {
            ApiError::invalid_field(format!("rows[{}].{column}", row.saturating_sub(1)), message)
        }
        other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_arrow", other.to_string()),
    }
}

/// The kept epoch's validation metrics from `history.json` (the last epoch without one).
fn best_epoch_metrics(history: &serde_json::Value) -> BTreeMap<String, f64> {
    let epochs = history.get("epochs").and_then(|e| e.as_array());
    let best = history.get("best_epoch").and_then(|b| b.as_u64());
    let record = epochs.and_then(|epochs| {
        best.and_then(|b| epochs.iter().find(|e| e.get("epoch").and_then(|x| x.as_u64()) == Some(b))).or(epochs.last())
    });
    record
        .and_then(|r| r.get("valid"))
        .and_then(|v| v.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x))).collect())
        .unwrap_or_default()
}

/// A user, item or context object of a request, with its feature-table row.
struct Entity<'a> {
    record: &'a Record,
    /// The id as sent (for echoing back).
    id: Option<&'a serde_json::Value>,
    /// The side's id column, when the schema has one.
    id_column: Option<&'a str>,
    table: Option<&'a FeatureTable>,
    table_row: Option<usize>,
    /// `items[3]`: the prefix of this entity's field paths in errors.
    path: String,
    /// `items[]`: the prefix of its field paths in aggregated warnings.
    warn_path: &'static str,
    index: Option<usize>,
}

impl<'a> Entity<'a> {
    fn new(
        model: &'a ServingModel,
        side: Side,
        record: &'a Record,
        path: &str,
        warn_path: &'static str,
        index: Option<usize>,
        warnings: &mut Warnings,
    ) -> Self {
        let pipeline = model.encoder.pipeline();
        let (id_column, table) = match side {
            Side::User => (pipeline.ids.user.as_deref(), model.user_table.as_ref()),
            Side::Item => (pipeline.ids.item.as_deref(), model.item_table.as_ref()),
            Side::Context => (None, None),
        };
        let id = id_column.and_then(|c| record.get(c)).or_else(|| record.get("id")).filter(|v| !v.is_null());
        let key = id.and_then(RawValue::from_json).and_then(|v| pipeline.text.apply(v).category_key());
        let table_row = match (table, &key) {
            (Some(t), Some(k)) => {
                let row = t.row(k);
                if row.is_none() {
                    warnings.add(format!("{warn_path}.id"), WarningKind::UnknownId, index);
                }
                row
            }
            _ => None,
        };
        let columns = &model.side_columns[side_index(side)];
        for field in record.keys() {
            if field != "id" && Some(field.as_str()) != id_column && !columns.contains(field) {
                warnings.add(format!("{warn_path}.{field}"), WarningKind::IgnoredField, index);
            }
        }
        Self { record, id, id_column, table, table_row, path: path.to_owned(), warn_path, index }
    }

    /// Encodes feature `f` of this entity into `column` (request, else table, else null).
    fn push(
        &self,
        model: &ServingModel,
        f: usize,
        column: &mut ColumnBuilder,
        warnings: &mut Warnings,
    ) -> Result<(), ApiError> {
        let feature = &model.encoder.pipeline().features[f];
        let mut value = self.record.get(&feature.column);
        if value.is_none() && self.id_column == Some(feature.column.as_str()) {
            value = self.id;
        }
        if let Some(value) = value.filter(|v| !v.is_null()) {
            let (encoded, lookup) = model
                .encoder
                .encode_field(f, Some(value))
                .map_err(|e| ApiError::invalid_field(format!("{}.{}", self.path, e.column), e.message))?;
            if lookup == Lookup::Oov {
                warnings.add(
                    format!("{}.{}", self.warn_path, feature.column),
                    WarningKind::OutOfVocabulary,
                    self.index,
                );
            }
            column.push(&encoded);
            return Ok(());
        }
        if let Some((values, row)) = self.table.and_then(|t| t.frame.features[f].as_ref()).zip(self.table_row) {
            column.push_from(values, row);
            return Ok(());
        }
        column.push(&model.null_values[f]);
        warnings.add(format!("{}.{}", self.warn_path, feature.column), WarningKind::Missing, self.index);
        Ok(())
    }
}

/// One feature's encoded values, built row by row.
enum ColumnBuilder {
    Ids(Vec<u32>),
    Lists { offsets: Vec<usize>, values: Vec<u32> },
    Values(Vec<f32>),
}

impl ColumnBuilder {
    fn new(kind: EncodedKind, rows: usize) -> Self {
        match kind {
            EncodedKind::Id => ColumnBuilder::Ids(Vec::with_capacity(rows)),
            EncodedKind::IdList => {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                ColumnBuilder::Lists { offsets, values: Vec::new() }
            }
            EncodedKind::Value => ColumnBuilder::Values(Vec::with_capacity(rows)),
        }
    }

    fn push(&mut self, value: &EncodedValue) {
        match (self, value) {
            (ColumnBuilder::Ids(ids), EncodedValue::Id(id)) => ids.push(*id),
            (ColumnBuilder::Lists { offsets, values }, EncodedValue::Ids(ids)) => {
                values.extend_from_slice(ids);
                offsets.push(values.len());
            }
            (ColumnBuilder::Values(v), EncodedValue::Value(x)) => v.push(*x),
            _ => unreachable!("a feature's encoder returns the feature's encoded kind"),
        }
    }

    fn push_from(&mut self, column: &FeatureColumn, row: usize) {
        match (self, column) {
            (ColumnBuilder::Ids(ids), FeatureColumn::Ids(from)) => ids.push(from[row]),
            (ColumnBuilder::Lists { offsets, values }, FeatureColumn::Lists { offsets: o, values: v }) => {
                values.extend_from_slice(&v[o[row]..o[row + 1]]);
                offsets.push(values.len());
            }
            (ColumnBuilder::Values(v), FeatureColumn::Values(from)) => v.push(from[row]),
            _ => unreachable!("columns of one feature share its encoded kind"),
        }
    }

    fn finish(self) -> FeatureColumn {
        match self {
            ColumnBuilder::Ids(ids) => FeatureColumn::Ids(ids),
            ColumnBuilder::Lists { offsets, values } => FeatureColumn::Lists { offsets, values },
            ColumnBuilder::Values(v) => FeatureColumn::Values(v),
        }
    }
}

/// Warnings aggregated by field and kind.
#[derive(Default)]
struct Warnings {
    by_field: BTreeMap<(String, WarningKind), (usize, Vec<usize>)>,
    /// Features reading the same field (e.g. `price` and its bucketized twin) warn once.
    seen: HashSet<(String, WarningKind, Option<usize>)>,
}

impl Warnings {
    fn add(&mut self, field: String, kind: WarningKind, index: Option<usize>) {
        if !self.seen.insert((field.clone(), kind, index)) {
            return;
        }
        let (count, indices) = self.by_field.entry((field, kind)).or_default();
        if let Some(i) = index.filter(|_| indices.len() < WARNING_INDICES) {
            indices.push(i);
        }
        *count += 1;
    }

    fn finish(self) -> Vec<ApiWarning> {
        self.by_field
            .into_iter()
            .map(|((field, kind), (count, indices))| ApiWarning { field, kind, count, indices })
            .collect()
    }
}
