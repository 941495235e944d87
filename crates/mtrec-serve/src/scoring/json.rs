//! Scoring JSON requests: `/v1/score` (one user and context, many items) and the JSON form of
//! `/v1/score/batch` (independent rows). Each feature of each entity comes from the request,
//! else its feature table, else the null encoding (the order [`super`] describes).

use mtrec_ingest::table::FeatureTable;
use mtrec_schema::{Lookup, Side};

use super::column_builder::ColumnBuilder;
use super::warnings::Warnings;
use super::{id_key, record_id, side_index, Answer, Limits, ServingModel};
use crate::api::{BatchRequest, Record, ScoreRequest, WarningKind};
use crate::error::ApiError;

impl ServingModel {
    /// `POST /v1/score`: one user, many items, one forward pass.
    pub fn score<'r>(&self, request: &'r ScoreRequest, limits: &Limits) -> Result<Answer<'r>, ApiError> {
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
        let user = Entity::new(self, Side::User, &request.user, Place::Top("user"), "user", None, &mut warnings);
        let context =
            Entity::new(self, Side::Context, &request.context, Place::Top("context"), "context", None, &mut warnings);
        let items: Vec<Entity<'_, 'r>> = request
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| Entity::new(self, Side::Item, item, Place::Item(i), "items[]", Some(i), &mut warnings))
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
        Ok(Answer {
            model: self.model_ref.clone(),
            arm: None,
            item_ids: items.iter().map(|item| item.id).collect(),
            user_ids: Vec::new(),
            tasks: self.task_columns(&self.forward(&columns, n), &tasks),
            warnings: warnings.finish(),
        })
    }

    /// `POST /v1/score/batch` with a JSON body: independent rows, one forward pass.
    pub fn score_batch<'r>(&self, request: &'r BatchRequest, limits: &Limits) -> Result<Answer<'r>, ApiError> {
        let tasks = self.select_tasks(&request.tasks)?;
        let n = request.rows.len();
        self.check_rows(n, limits)?;
        let mut warnings = Warnings::default();
        let mut entities = Vec::with_capacity(n);
        for (r, row) in request.rows.iter().enumerate() {
            let user =
                Entity::new(self, Side::User, &row.user, Place::Row(r, "user"), "rows[].user", Some(r), &mut warnings);
            let item =
                Entity::new(self, Side::Item, &row.item, Place::Row(r, "item"), "rows[].item", Some(r), &mut warnings);
            let context = Entity::new(
                self,
                Side::Context,
                &row.context,
                Place::Row(r, "context"),
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
        Ok(Answer {
            model: self.model_ref.clone(),
            arm: None,
            item_ids: entities.iter().map(|[_, item, _]| item.id).collect(),
            user_ids: entities.iter().map(|[user, _, _]| user.id).collect(),
            tasks: self.task_columns(&self.forward(&columns, n), &tasks),
            warnings: warnings.finish(),
        })
    }
}

/// Where an entity is in the request: the prefix of its fields' paths in errors, written out
/// only when an error names it (not once per item of every request).
#[derive(Debug, Clone, Copy)]
enum Place {
    /// `user`, `context`.
    Top(&'static str),
    /// `items[3]`.
    Item(usize),
    /// `rows[3].user`.
    Row(usize, &'static str),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Top(side) => f.write_str(side),
            Place::Item(i) => write!(f, "items[{i}]"),
            Place::Row(r, side) => write!(f, "rows[{r}].{side}"),
        }
    }
}

/// A user, item or context object of a request, with its feature-table row.
struct Entity<'m, 'r> {
    record: &'r Record,
    /// The id as sent (for echoing back).
    id: Option<&'r serde_json::Value>,
    /// The side's id column, when the schema has one.
    id_column: Option<&'m str>,
    table: Option<&'m FeatureTable>,
    table_row: Option<usize>,
    /// `items[3]`: the prefix of this entity's field paths in errors.
    place: Place,
    /// `items[]`: the prefix of its field paths in aggregated warnings.
    warn_path: &'static str,
    index: Option<usize>,
}

impl<'m, 'r> Entity<'m, 'r> {
    fn new(
        model: &'m ServingModel,
        side: Side,
        record: &'r Record,
        place: Place,
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
        let id = record_id(record, id_column);
        let key = id.and_then(|v| id_key(&pipeline.text, v));
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
        Self { record, id, id_column, table, table_row, place, warn_path, index }
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
                .map_err(|e| ApiError::invalid_field(format!("{}.{}", self.place, e.column), e.message))?;
            // A value that reads as null (`"NaN"`, one of the schema's null values) is a null:
            // it is looked up in the tables, else missing.
            if lookup != Lookup::Null {
                let kind = match lookup {
                    Lookup::Oov => Some(WarningKind::OutOfVocabulary),
                    Lookup::NonFinite => Some(WarningKind::NonFinite),
                    Lookup::Known | Lookup::Null => None,
                };
                if let Some(kind) = kind {
                    warnings.add(format!("{}.{}", self.warn_path, feature.column), kind, self.index);
                }
                column.push(&encoded);
                return Ok(());
            }
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
