//! Encoding raw rows that are not an ingest: serving's feature tables (user or item features
//! looked up by id) and Arrow batches of pairs to score. Cells go through the same per-cell
//! path as ingestion ([`crate::encode`]), so ids and values match the training data exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mtrec_schema::{CsvOptions, Encoder, FeatureColumn, Format, Side};
use polars::prelude::*;

use crate::cells::Cells;
use crate::encode::encode_feature;
use crate::encoded::feature_column;
use crate::error::IngestError;
use crate::source::{self, RawTable};

/// Encoded features of some rows: one optional column per pipeline feature (`None` where the
/// rows had no column for it).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedFrame {
    pub rows: usize,
    /// Aligned with `pipeline.features`.
    pub features: Vec<Option<FeatureColumn>>,
    /// Aligned with `pipeline.features`: numbers that were infinite or beyond `f32`'s range,
    /// encoded like nulls.
    pub non_finite: Vec<usize>,
    /// Aligned with `pipeline.features` (`None` where `features` is): per row, whether the
    /// cell read as null (a null, one of the schema's null values, NaN).
    pub null_rows: Vec<Option<Vec<bool>>>,
}

/// Encodes every feature of `encoder`'s pipeline that `wanted` accepts and whose source column
/// `df` has. `origin` names the rows in errors (a file, or a request body); a bad cell is an
/// [`IngestError::Cell`] with its 1-based row and column.
pub fn encode_frame(
    encoder: &Encoder,
    mut df: DataFrame,
    origin: &Path,
    wanted: &dyn Fn(usize) -> bool,
) -> Result<EncodedFrame, IngestError> {
    source::canonicalize(&mut df).map_err(|e| IngestError::read(origin, e))?;
    let pipeline = encoder.pipeline();
    let rows = df.height();
    let table = RawTable::standalone(df, origin, pipeline.text.clone());
    let all_rows: Vec<u32> = (0..rows as u32).collect();
    let mut cells: HashMap<&str, Cells> = HashMap::new();
    let mut features = Vec::with_capacity(pipeline.features.len());
    let mut non_finite = vec![0; pipeline.features.len()];
    let mut null_rows = Vec::with_capacity(pipeline.features.len());
    for (f, feature) in pipeline.features.iter().enumerate() {
        if !wanted(f) || table.df.column(&feature.column).is_err() {
            features.push(None);
            null_rows.push(None);
            continue;
        }
        if !cells.contains_key(feature.column.as_str()) {
            cells.insert(&feature.column, Cells::of(&table, &feature.column)?);
        }
        let mut nulls = Vec::with_capacity(rows);
        let cells = &cells[feature.column.as_str()];
        let (column, counts) = encode_feature(encoder, &table, cells, f, &all_rows, Some(&mut nulls))?;
        null_rows.push(Some(nulls));
        non_finite[f] = counts.non_finite;
        let column = feature_column(column.as_materialized_series(), feature, pipeline.cardinality(feature))
            .map_err(|e| IngestError::read(origin, e))?;
        features.push(Some(column));
    }
    Ok(EncodedFrame { rows, features, non_finite, null_rows })
}

/// The id keys of column `column` of `df` (canonicalized like the `id.user` / `id.item`
/// columns of an ingest), `None` for a null id.
pub fn id_keys(
    encoder: &Encoder,
    df: &DataFrame,
    column: &str,
    origin: &Path,
) -> Result<Vec<Option<String>>, IngestError> {
    let mut one = df.select([column]).map_err(|e| IngestError::read(origin, e))?;
    source::canonicalize(&mut one).map_err(|e| IngestError::read(origin, e))?;
    let table = RawTable::standalone(one, origin, encoder.pipeline().text.clone());
    let cells = Cells::of(&table, column)?;
    Ok((0..table.df.height())
        .map(|r| encoder.pipeline().text.apply(cells.get(r)).category_key().map(|k| k.into_owned()))
        .collect())
}

/// User or item features keyed by id, encoded once at load.
#[derive(Debug, Clone)]
pub struct FeatureTable {
    pub path: PathBuf,
    pub side: Side,
    pub frame: EncodedFrame,
    index: HashMap<String, usize>,
}

impl FeatureTable {
    /// The table's row for an id key.
    pub fn row(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.frame.rows
    }

    pub fn is_empty(&self) -> bool {
        self.frame.rows == 0
    }

    /// Names of the features the table provides.
    pub fn feature_names<'a>(&self, encoder: &'a Encoder) -> Vec<&'a str> {
        let features = &encoder.pipeline().features;
        (0..features.len()).filter(|&f| self.frame.features[f].is_some()).map(|f| features[f].name.as_str()).collect()
    }
}

/// Loads a table of `side` features (CSV, Parquet or Arrow IPC, by extension): its id column is
/// the schema's `ids.user` (`ids.item`) column, and every column of a `side` feature it has is
/// encoded. Ids must be unique and not null.
pub fn load_feature_table(path: &Path, encoder: &Encoder, side: Side) -> Result<FeatureTable, IngestError> {
    load_feature_table_keyed(path, None, None, encoder, side)
}

/// [`load_feature_table`] for a table of a given format (else by extension) whose ids are in the
/// column `key` (else the schema's id column of `side`): a side table ingestion joined
/// ([`mtrec_schema::TableRef`]).
pub fn load_feature_table_keyed(
    path: &Path,
    format: Option<Format>,
    key: Option<&str>,
    encoder: &Encoder,
    side: Side,
) -> Result<FeatureTable, IngestError> {
    let pipeline = encoder.pipeline();
    let id_column = match side {
        Side::User => pipeline.ids.user.clone(),
        Side::Item => pipeline.ids.item.clone(),
        Side::Context => None,
    }
    .map(|id| key.map_or(id, str::to_owned))
    .ok_or_else(|| {
        let side = side_name(side);
        IngestError::read(
            path,
            format!("the schema names no {side} id column (ids.{side}), so features cannot be looked up by id"),
        )
    })?;
    let format = source::detect_format(path, format)?;
    let csv = CsvOptions {
        null_values: pipeline.text.null_values.clone(),
        trim_whitespace: pipeline.text.trim_whitespace,
        ..Default::default()
    };
    let available = source::column_names(path, format, &csv)?;
    if !available.contains(&id_column) {
        return Err(IngestError::read(
            path,
            format!("no id column {id_column:?} (available: {})", available.join(", ")),
        ));
    }
    let side_columns: Vec<&str> = pipeline
        .features
        .iter()
        .filter(|f| f.side == side && available.contains(&f.column))
        .map(|f| f.column.as_str())
        .collect();
    if side_columns.is_empty() {
        let expected: Vec<&str> =
            pipeline.features.iter().filter(|f| f.side == side).map(|f| f.column.as_str()).collect();
        return Err(IngestError::read(
            path,
            format!("no column of a {} feature (expected some of: {})", side_name(side), expected.join(", ")),
        ));
    }
    let mut needed: Vec<String> = vec![id_column.clone()];
    for c in side_columns {
        if !needed.iter().any(|n| n == c) {
            needed.push(c.to_owned());
        }
    }
    let df = source::read_file(path, format, &csv, &needed, &|c| format!("feature table column {c:?}"))?;
    let keys = id_keys(encoder, &df, &id_column, path)?;
    let mut index = HashMap::with_capacity(keys.len());
    for (r, key) in keys.into_iter().enumerate() {
        let key = key.ok_or_else(|| IngestError::Cell {
            path: path.to_owned(),
            row: r + 1,
            column: id_column.clone(),
            message: "the id is null".to_owned(),
        })?;
        if let Some(first) = index.insert(key.clone(), r) {
            return Err(IngestError::Cell {
                path: path.to_owned(),
                row: r + 1,
                column: id_column.clone(),
                message: format!("id {key:?} repeats row {}", first + 1),
            });
        }
    }
    let frame = encode_frame(encoder, df, path, &|f| pipeline.features[f].side == side)?;
    Ok(FeatureTable { path: path.to_owned(), side, frame, index })
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::User => "user",
        Side::Item => "item",
        Side::Context => "context",
    }
}
