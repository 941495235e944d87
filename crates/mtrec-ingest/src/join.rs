//! Side tables: user and item attributes kept in their own tables (profiles, the catalogue)
//! and joined to each batch of the log on its id columns. A table is small next to a log and
//! is held in memory; the log streams past it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use mtrec_schema::{CsvOptions, Format, Side, TableRef, TextRules};
use polars::prelude::*;

use crate::cells::Cells;
use crate::error::IngestError;
use crate::source::{self, RawTable};

/// One side table, loaded: the columns it gives the log, and the row of each key.
#[derive(Debug)]
pub struct SideTable {
    pub side: Side,
    pub path: PathBuf,
    pub format: Format,
    pub key: String,
    /// The log's id column the table is joined on.
    pub id_column: String,
    /// The columns the table gives the log, in canonical dtypes, text rules applied.
    frame: DataFrame,
    index: HashMap<String, IdxSize>,
}

impl SideTable {
    /// Loads `columns` and the key column `key` of the table at `path`. Every key must be
    /// present and unique; CSV cells are trimmed and null texts made nulls here, as the log's.
    pub fn load(
        side: Side,
        path: &Path,
        format: Format,
        key: &str,
        id_column: &str,
        columns: &[String],
        csv: &CsvOptions,
    ) -> Result<Self, IngestError> {
        let mut needed = vec![key.to_owned()];
        needed.extend(columns.iter().filter(|c| c.as_str() != key).cloned());
        let what = |c: &str| format!("tables.{} column {c:?}", side_name(side));
        let df = source::read_file(path, format, csv, &needed, &what)?;
        let rules = source::text_rules(format, csv);
        let df = apply_text_rules(df, &rules).map_err(|e| IngestError::read(path, e))?;
        let table = RawTable::standalone(df, path, TextRules::default());
        let keys = Cells::of(&table, key)?;
        let mut index = HashMap::with_capacity(table.rows());
        for r in 0..table.rows() {
            let id = keys.get(r).category_key().ok_or_else(|| table.cell_error(r, key, "the key is null"))?;
            if let Some(first) = index.insert(id.clone().into_owned(), r as IdxSize) {
                return Err(table.cell_error(r, key, format!("key {id:?} repeats row {}", first + 1)));
            }
        }
        let frame = table.df.select(columns.iter().map(String::as_str)).map_err(|e| IngestError::read(path, e))?;
        Ok(SideTable {
            side,
            path: path.to_owned(),
            format,
            key: key.to_owned(),
            id_column: id_column.to_owned(),
            frame,
            index,
        })
    }

    pub fn rows(&self) -> usize {
        self.index.len()
    }

    /// The columns the table gives the log.
    pub fn columns(&self) -> Vec<String> {
        self.frame.get_column_names().iter().map(|c| c.to_string()).collect()
    }

    /// Adds the table's columns to `batch`, from the row of each log row's id; returns the
    /// positions of the rows whose id the table lacks (their columns are null).
    pub fn join(&self, batch: &mut RawTable) -> Result<Vec<u32>, IngestError> {
        let ids = Cells::of(batch, &self.id_column)?;
        let mut missing = Vec::new();
        let rows: Vec<Option<IdxSize>> = (0..batch.rows())
            .map(|r| {
                let row = batch.text.apply(ids.get(r)).category_key().and_then(|k| self.index.get(k.as_ref()).copied());
                if row.is_none() {
                    missing.push(r as u32);
                }
                row
            })
            .collect();
        let taken = self
            .frame
            .take(&IdxCa::from_iter_options("idx".into(), rows.into_iter()))
            .map_err(|e| IngestError::read(&self.path, e))?;
        for column in taken.columns().iter().cloned() {
            batch.df.with_column(column).map_err(|e| IngestError::read(&batch.path, e))?;
        }
        Ok(missing)
    }

    /// Where serving finds the same rows.
    pub fn reference(&self) -> TableRef {
        let path = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        TableRef { side: self.side, path, format: self.format, key: self.key.clone() }
    }
}

/// Trims text cells and makes null texts nulls, as `rules` reads them.
fn apply_text_rules(df: DataFrame, rules: &TextRules) -> PolarsResult<DataFrame> {
    if !rules.trim_whitespace && rules.null_values.is_empty() {
        return Ok(df);
    }
    let columns = df
        .columns()
        .iter()
        .map(|c| {
            let Ok(text) = c.str() else { return Ok(c.clone()) };
            let cleaned: StringChunked = text
                .iter()
                .map(|v| {
                    v.and_then(|s| match rules.cell(s) {
                        mtrec_schema::RawValue::Str(t) => Some(t),
                        _ => None,
                    })
                })
                .collect();
            Ok(cleaned.with_name(c.name().clone()).into_column())
        })
        .collect::<PolarsResult<Vec<Column>>>()?;
    DataFrame::new(df.height(), columns)
}

/// Which needed columns each table gives: those it holds that the log does not (the log's
/// value wins where both have a column), besides its key.
pub fn provided_columns(
    needed: &[String],
    log_columns: &HashSet<String>,
    table_columns: &[String],
    key: &str,
) -> Vec<String> {
    needed
        .iter()
        .filter(|c| c.as_str() != key && !log_columns.contains(*c) && table_columns.contains(c))
        .cloned()
        .collect()
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::User => "user",
        Side::Item => "item",
        Side::Context => "context",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_gives_the_columns_the_log_lacks() {
        let needed: Vec<String> = ["user", "age", "region", "click"].map(String::from).to_vec();
        let log: HashSet<String> = ["user", "click", "region"].map(String::from).into_iter().collect();
        let table = ["user", "age", "region", "name"].map(String::from);
        assert_eq!(provided_columns(&needed, &log, &table, "user"), ["age"]);
    }

    #[test]
    fn text_rules_make_null_texts_nulls() {
        let df = df!("a" => [Some(" x "), Some("NA"), None], "n" => [1i64, 2, 3]).unwrap();
        let rules = TextRules { trim_whitespace: true, null_values: vec!["NA".into()] };
        let out = apply_text_rules(df, &rules).unwrap();
        let a: Vec<Option<&str>> = out.column("a").unwrap().str().unwrap().iter().collect();
        assert_eq!(a, [Some("x"), None, None]);
        assert_eq!(out.column("n").unwrap().i64().unwrap().get(2), Some(3));
    }
}
