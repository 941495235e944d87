//! Scoring an Arrow IPC stream of pairs (`/v1/score/batch` with
//! `Content-Type: application/vnd.apache.arrow.stream`), answered as an Arrow IPC stream.

use std::io::Cursor;
use std::path::Path;

use axum::http::StatusCode;
use mtrec_ingest::table::{encode_frame, id_keys, FeatureTable};
use mtrec_ingest::IngestError;
use mtrec_model::infer::{prediction_columns, PredictionValues};
use mtrec_schema::Side;
use polars::prelude::*;

use super::column_builder::ColumnBuilder;
use super::warnings::Warnings;
use super::{Limits, ServingModel};
use crate::api::{ApiWarning, WarningKind};
use crate::error::ApiError;

impl ServingModel {
    /// `POST /v1/score/batch` with an Arrow IPC stream: one row per pair, columns named like the
    /// training data's source columns. Answers an Arrow IPC stream with `id.user` and `id.item`
    /// (when the request has the id columns) and the columns of `mtrec predict`
    /// (`pred.<task>`, `prob.<task>.<class>`), with its row count and the warnings.
    pub fn score_arrow(
        &self,
        body: &[u8],
        tasks: &Option<Vec<String>>,
        limits: &Limits,
    ) -> Result<(Vec<u8>, usize, Vec<ApiWarning>), ApiError> {
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
        // Features reading the same column (a number and its buckets) warn once for it.
        let mut counted = std::collections::HashSet::new();
        for (f, feature) in pipeline.features.iter().enumerate() {
            if counted.insert(feature.column.as_str()) {
                warnings.add_count(format!("rows[].{}", feature.column), WarningKind::NonFinite, frame.non_finite[f]);
            }
            let (table, rows) = match feature.side {
                Side::User => (self.user_table.as_ref(), &user_rows),
                Side::Item => (self.item_table.as_ref(), &item_rows),
                Side::Context => (None, &user_rows),
            };
            let table_column = table.and_then(|t| t.frame.features[f].as_ref());
            let mut column = ColumnBuilder::new(feature.encoded_kind(), n);
            for r in 0..n {
                let given = frame.null_rows[f].as_ref().is_some_and(|null| !null[r]);
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
        for (name, values) in prediction_columns(&self.bundle.model, &outputs, &tasks, n) {
            out.push(match values {
                PredictionValues::Numbers(v) => Column::new(name.into(), v),
                PredictionValues::LabelUnits(v) => Column::new(name.into(), v),
                PredictionValues::Classes(v) => Column::new(name.into(), v),
            });
        }
        let mut df = DataFrame::new(n, out).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut bytes = Vec::new();
        IpcStreamWriter::new(&mut bytes).finish(&mut df).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((bytes, n, warnings.finish()))
    }
}

fn arrow_error(e: IngestError) -> ApiError {
    match e {
        IngestError::Cell { row, column, message, .. } => {
            ApiError::invalid_field(format!("rows[{}].{column}", row.saturating_sub(1)), message)
        }
        other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_arrow", mtrec_schema::error_chain(&other)),
    }
}
