//! Row access to one canonicalized column as [`RawValue`]s: the bridge from Polars to the
//! encoder of `mtrec-schema`.

use mtrec_schema::RawValue;
use polars::prelude::*;

use crate::error::IngestError;
use crate::source::RawTable;

/// One column in one of the canonical dtypes. Not rechunked: copying every string of a large
/// file into one buffer costs more than finding a row's chunk.
#[derive(Debug, Clone)]
pub enum Cells {
    Str(StringChunked),
    Int(Int64Chunked),
    Float(Float64Chunked),
    Bool(BooleanChunked),
    List(ListChunked),
}

impl Cells {
    pub fn of(table: &RawTable, column: &str) -> Result<Self, IngestError> {
        let s = table
            .df
            .column(column)
            .map_err(|source| IngestError::Polars { what: format!("column {column:?}"), source })?
            .as_materialized_series()
            .clone();
        Ok(match s.dtype() {
            DataType::String => Cells::Str(s.str().expect("dtype checked").clone()),
            DataType::Int64 => Cells::Int(s.i64().expect("dtype checked").clone()),
            DataType::Float64 => Cells::Float(s.f64().expect("dtype checked").clone()),
            DataType::Boolean => Cells::Bool(s.bool().expect("dtype checked").clone()),
            DataType::List(_) => Cells::List(s.list().expect("dtype checked").clone()),
            other => return Err(IngestError::Data(format!("column {column:?}: unsupported dtype {other}"))),
        })
    }

    /// The cell of `row`; lists are not scalars and read as null here (see [`Cells::tokens`]).
    pub fn get(&self, row: usize) -> RawValue<'_> {
        let v = match self {
            Cells::Str(c) => c.get(row).map(RawValue::Str),
            Cells::Int(c) => c.get(row).map(RawValue::Int),
            Cells::Float(c) => c.get(row).map(RawValue::Float),
            Cells::Bool(c) => c.get(row).map(RawValue::Bool),
            Cells::List(_) => None,
        };
        v.unwrap_or(RawValue::Null)
    }

    /// The items of a list cell as text (`None` for a null cell); only for list columns.
    pub fn tokens(&self, row: usize) -> Option<Vec<Option<String>>> {
        let Cells::List(c) = self else { return None };
        let s = c.get_as_series(row)?;
        let s = s.str().ok()?.clone();
        Some(s.iter().map(|t| t.map(str::to_owned)).collect())
    }

    pub fn is_list(&self) -> bool {
        matches!(self, Cells::List(_))
    }

    pub fn is_text(&self) -> bool {
        matches!(self, Cells::Str(_))
    }
}
