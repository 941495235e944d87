//! Finding and reading the raw files: globs, format detection, gzip, CSV options, the column
//! projection and the checks of the source against the schema (missing columns, dtypes).

use std::io::Read;
use std::path::{Path, PathBuf};

use mtrec_schema::{CsvOptions, Format, Split, TextRules, TimestampUnit};
use polars::prelude::*;

use crate::error::IngestError;

/// One input file's rows within the concatenated table.
#[derive(Debug, Clone)]
pub struct FileSpan {
    pub path: PathBuf,
    pub start: usize,
    pub rows: usize,
    /// The split every row of this file belongs to (`files` split method), if any.
    pub split: Option<Split>,
}

/// All input rows, the needed columns only, in canonical dtypes, one chunk per column.
#[derive(Debug)]
pub struct RawTable {
    pub df: DataFrame,
    pub files: Vec<FileSpan>,
    /// How text cells are read (CSV options; nothing for typed formats).
    pub text: TextRules,
}

impl RawTable {
    /// The file and 1-based row of a global row index.
    pub fn locate(&self, row: usize) -> (&Path, usize) {
        let i = self.files.partition_point(|f| f.start + f.rows <= row).min(self.files.len() - 1);
        let f = &self.files[i];
        (&f.path, row - f.start + 1)
    }

    pub fn cell_error(&self, row: usize, column: &str, message: impl Into<String>) -> IngestError {
        let (path, row) = self.locate(row);
        IngestError::Cell { path: path.to_owned(), row, column: column.to_owned(), message: message.into() }
    }
}

/// Expands paths and globs (relative ones against `base`) in order, without duplicates.
pub fn expand(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>, IngestError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
        let text = full.to_string_lossy().into_owned();
        let is_glob = pattern.contains(['*', '?', '[']);
        let matched: Vec<PathBuf> = if is_glob {
            let mut v: Vec<PathBuf> = glob::glob(&text)
                .map_err(|source| IngestError::Glob { pattern: pattern.clone(), source })?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        } else if full.is_file() {
            vec![full.clone()]
        } else {
            return Err(IngestError::read(&full, "no such file"));
        };
        if matched.is_empty() {
            return Err(IngestError::NoFiles { pattern: text });
        }
        for p in matched {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The format of a file: as configured, else from its extension.
pub fn detect_format(path: &Path, configured: Option<Format>) -> Result<Format, IngestError> {
    if let Some(f) = configured {
        return Ok(f);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "csv" | "tsv" | "txt" | "data" | "test" => Ok(Format::Csv),
        "parquet" | "pq" => Ok(Format::Parquet),
        "arrow" | "ipc" | "feather" => Ok(Format::Ipc),
        _ => Err(IngestError::UnknownFormat { path: path.to_owned() }),
    }
}

/// A lazy scan of a Parquet or Arrow IPC file (projection happens when it is collected).
pub(crate) fn scan(path: &Path, format: Format) -> Result<LazyFrame, IngestError> {
    let pl_path = PlRefPath::new(path.to_string_lossy().as_ref());
    match format {
        Format::Parquet => LazyFrame::scan_parquet(pl_path, ScanArgsParquet::default()),
        _ => LazyFrame::scan_ipc(pl_path, Default::default(), Default::default()),
    }
    .map_err(|e| IngestError::read(path, e))
}

/// Reads one file, keeping `needed` columns (all of which must exist; `referrers` gives, per
/// needed column, the schema path that asked for it, for the error message).
/// Reads the `needed` columns of one file and casts them to the canonical dtypes. With
/// `timestamp` (the event-time column and the unit of its numbers), a numeric event-time column
/// is converted to seconds here; date-time columns become seconds in [`canonicalize`], and
/// date-time text is parsed where it is read ([`mtrec_schema::timestamp_seconds`]).
pub fn read_file(
    path: &Path,
    format: Format,
    csv: &CsvOptions,
    needed: &[String],
    referrers: &dyn Fn(&str) -> String,
    timestamp: Option<(&str, TimestampUnit)>,
) -> Result<DataFrame, IngestError> {
    let df = match format {
        Format::Csv => read_csv(path, csv)?,
        Format::Parquet | Format::Ipc => {
            let mut lf = scan(path, format)?;
            let schema = lf.collect_schema().map_err(|e| IngestError::read(path, e))?;
            let available: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
            check_columns(path, &available, needed, referrers)?;
            let cols: Vec<Expr> = needed.iter().map(|c| col(c.as_str())).collect();
            lf.select(cols).collect().map_err(|e| IngestError::read(path, e))?
        }
    };
    if format == Format::Csv {
        let available: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        check_columns(path, &available, needed, referrers)?;
    }
    if df.height() == 0 {
        return Err(IngestError::EmptyFile { path: path.to_owned() });
    }
    let mut df = df.select(needed.iter().map(String::as_str)).map_err(|e| IngestError::read(path, e))?;
    if let Some((column, unit)) = timestamp.filter(|(_, unit)| *unit != TimestampUnit::Seconds) {
        if let Ok(c) = df.column(column) {
            if c.dtype().is_primitive_numeric() {
                let numbers =
                    c.as_materialized_series().cast(&DataType::Float64).map_err(|e| IngestError::read(path, e))?;
                let seconds = (&numbers / unit.per_second()).with_name(column.into());
                df.with_column(seconds.into()).map_err(|e| IngestError::read(path, e))?;
            }
        }
    }
    canonicalize(&mut df).map_err(|e| IngestError::read(path, e))?;
    Ok(df)
}

fn check_columns(
    path: &Path,
    available: &[String],
    needed: &[String],
    referrers: &dyn Fn(&str) -> String,
) -> Result<(), IngestError> {
    for c in needed {
        if !available.contains(c) {
            let shown: Vec<&str> = available.iter().take(60).map(String::as_str).collect();
            let more = if available.len() > 60 { ", ..." } else { "" };
            return Err(IngestError::Data(format!(
                "{}: column {c:?} not in {} (available: {}{more})",
                referrers(c),
                path.display(),
                shown.join(", ")
            )));
        }
    }
    Ok(())
}

/// Reads a CSV (plain or gzip) with every column as text: numbers are parsed by mtrec itself,
/// so that a bad cell is reported with its row and column, and exactly as serving parses JSON.
pub(crate) fn read_csv(path: &Path, csv: &CsvOptions) -> Result<DataFrame, IngestError> {
    let raw = std::fs::read(path).map_err(|e| IngestError::read(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| IngestError::read(path, format!("corrupt or truncated gzip data: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::EmptyFile { path: path.to_owned() });
    }
    let separator = csv.delimiter.as_bytes()[0];
    let reader = CsvReadOptions::default()
        .with_has_header(csv.has_header)
        .with_infer_schema_length(Some(0))
        .with_raise_if_empty(false)
        .with_parse_options(CsvParseOptions::default().with_separator(separator).with_missing_is_null(false))
        .into_reader_with_file_handle(std::io::Cursor::new(bytes));
    let mut df = reader.finish().map_err(|e| IngestError::read(path, e))?;
    if let Some(names) = &csv.columns {
        if names.len() != df.width() {
            return Err(IngestError::read(
                path,
                format!("source.csv.columns names {} columns but the file has {}", names.len(), df.width()),
            ));
        }
        df.set_column_names(names.as_slice()).map_err(|e| IngestError::read(path, e))?;
    }
    Ok(df)
}

/// Casts columns to the few dtypes the encoder reads: String, Int64, Float64, Boolean,
/// List(String), and Datetime / Date as Float64 epoch seconds.
pub(crate) fn canonicalize(df: &mut DataFrame) -> PolarsResult<()> {
    let mut columns = Vec::with_capacity(df.width());
    for c in df.columns() {
        let s = c.as_materialized_series();
        let target = match s.dtype() {
            DataType::String | DataType::Int64 | DataType::Float64 | DataType::Boolean => None,
            d if d.is_integer() => Some(DataType::Int64),
            d if d.is_float() => Some(DataType::Float64),
            DataType::Datetime(unit, _) => {
                let per_second = match unit {
                    TimeUnit::Nanoseconds => 1e9,
                    TimeUnit::Microseconds => 1e6,
                    TimeUnit::Milliseconds => 1e3,
                };
                let secs =
                    (s.cast(&DataType::Int64)?.cast(&DataType::Float64)? / per_second).with_name(s.name().clone());
                columns.push(secs.into());
                continue;
            }
            DataType::List(inner) if inner.as_ref() != &DataType::String => {
                Some(DataType::List(Box::new(DataType::String)))
            }
            DataType::List(_) => None,
            _ => Some(DataType::String),
        };
        columns.push(match target {
            Some(t) => s.cast(&t)?.into(),
            None => s.clone().into(),
        });
    }
    *df = DataFrame::new(df.height(), columns)?;
    Ok(())
}

/// Text rules for a format: CSV trimming and null texts apply to CSV only.
pub fn text_rules(format: Format, csv: &CsvOptions) -> TextRules {
    match format {
        Format::Csv => TextRules { trim_whitespace: csv.trim_whitespace, null_values: csv.null_values.clone() },
        Format::Parquet | Format::Ipc => TextRules::default(),
    }
}
