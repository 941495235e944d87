//! Finding and reading the raw files, batch by batch: paths, globs and directories (with Hive
//! partition folders), format detection, gzip, CSV options, the column projection, the checks of
//! the source against the schema (missing columns, dtypes) and the canonical dtypes. Memory holds
//! a few batches, whatever the size of the input.

mod csv;
mod hive;
mod typed;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mtrec_schema::{CsvOptions, Format, Split, TextRules, TimestampUnit};
use polars::prelude::*;

use crate::error::IngestError;
use crate::join::SideTable;

pub use hive::partitions;

/// Rows per batch of a Parquet or Arrow IPC file, unless told otherwise.
pub const BATCH_ROWS: usize = 1 << 17;

/// CSV is cut in chunks of text of about this many bytes per batch row.
const CSV_BYTES_PER_ROW: usize = 128;

/// One input file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub format: Format,
    /// The split every row of this file belongs to (`files` split method), if any.
    pub split: Option<Split>,
    /// The Hive partition folders above the file, `(key, value)`, outermost first.
    pub partitions: Vec<(String, String)>,
}

/// One batch of input rows, all from one file: the needed columns only, in canonical dtypes.
#[derive(Debug)]
pub struct RawTable {
    pub df: DataFrame,
    pub path: PathBuf,
    /// Rows of the same file before this batch.
    pub file_row: u64,
    /// Rows of all input before this batch: row `r`'s position in the source, its id, is
    /// `first_row + r`.
    pub first_row: u64,
    /// The split of every row of the file (`files` split method), if any.
    pub split: Option<Split>,
    /// How text cells are read (CSV options; nothing for typed formats).
    pub text: TextRules,
    /// Per side table of the source, the rows whose id the table lacks.
    pub missing_ids: Vec<Vec<u32>>,
}

impl RawTable {
    /// A table of rows that come from no file of a log (a request body, a feature table).
    pub fn standalone(df: DataFrame, origin: &Path, text: TextRules) -> Self {
        RawTable { df, path: origin.to_owned(), file_row: 0, first_row: 0, split: None, text, missing_ids: Vec::new() }
    }

    pub fn rows(&self) -> usize {
        self.df.height()
    }

    /// Row `r`'s position in the source.
    pub fn row_id(&self, r: usize) -> u64 {
        self.first_row + r as u64
    }

    /// The file and the 1-based row (header excluded) of row `r`.
    pub fn locate(&self, r: usize) -> (&Path, u64) {
        (&self.path, self.file_row + r as u64 + 1)
    }

    pub fn cell_error(&self, r: usize, column: &str, message: impl Into<String>) -> IngestError {
        let (path, row) = self.locate(r);
        IngestError::Cell {
            path: path.to_owned(),
            row: row as usize,
            column: column.to_owned(),
            message: message.into(),
        }
    }
}

/// The input files and how to read them.
#[derive(Debug)]
pub struct Source {
    pub files: Vec<SourceFile>,
    /// The raw columns the schema reads, in the order batches hold them.
    needed: Vec<String>,
    /// Per needed column, the schema path that asked for it (for error messages).
    referrers: BTreeMap<String, String>,
    csv: CsvOptions,
    pub text: TextRules,
    /// The event-time column and the unit of its numbers.
    timestamp: Option<(String, TimestampUnit)>,
    partition_dtypes: BTreeMap<String, DataType>,
    batch_rows: usize,
    /// Side tables joined to every batch.
    pub tables: Vec<SideTable>,
}

impl Source {
    /// The files to read, which must share one format.
    pub fn new(
        files: Vec<SourceFile>,
        needed: Vec<String>,
        referrers: BTreeMap<String, String>,
        csv: &CsvOptions,
        timestamp: Option<(String, TimestampUnit)>,
        batch_rows: usize,
    ) -> Result<Self, IngestError> {
        let format = files.first().map(|f| f.format).ok_or_else(|| IngestError::Data("no input file".into()))?;
        if let Some(other) = files.iter().find(|f| f.format != format) {
            return Err(IngestError::read(
                &other.path,
                format!("mixes formats: {} is {format:?}", files[0].path.display()),
            ));
        }
        let partition_dtypes = hive::partition_dtypes(files.iter().map(|f| f.partitions.as_slice()));
        Ok(Source {
            text: text_rules(format, csv),
            files,
            needed,
            referrers,
            csv: csv.clone(),
            timestamp,
            partition_dtypes,
            batch_rows: batch_rows.max(1),
            tables: Vec::new(),
        })
    }

    /// Joins `tables` to every batch.
    pub fn with_tables(mut self, tables: Vec<SideTable>) -> Self {
        self.tables = tables;
        self
    }

    pub fn format(&self) -> Format {
        self.files[0].format
    }

    /// The raw columns every batch holds: the log's, then each side table's.
    pub fn columns(&self) -> Vec<String> {
        let mut out = self.needed.clone();
        out.extend(self.tables.iter().flat_map(SideTable::columns));
        out
    }

    /// Every batch of every file, in order.
    pub fn batches(&self) -> Batches<'_> {
        Batches { source: self, next_file: 0, reader: None, file_row: 0, first_row: 0, dtypes: None, failed: false }
    }

    /// The rows of the input when its files' metadata say (Parquet and Arrow IPC; CSV must be
    /// read to know), for the first pass's progress bar.
    pub fn known_rows(&self) -> Option<u64> {
        self.files.iter().map(|f| typed::row_count(&f.path, f.format)).sum()
    }

    fn referrer(&self, column: &str) -> String {
        self.referrers.get(column).cloned().unwrap_or_else(|| "source".to_owned())
    }

    fn open(&self, file: &SourceFile) -> Result<FileReader, IngestError> {
        match file.format {
            Format::Csv => {
                let chunk_bytes = self.batch_rows.saturating_mul(CSV_BYTES_PER_ROW);
                Ok(FileReader::Csv(csv::CsvChunks::open(&file.path, &self.csv, chunk_bytes)?))
            }
            Format::Parquet | Format::Ipc => {
                let available = typed::column_names(&file.path, file.format)?;
                let with_partitions: Vec<String> =
                    available.iter().cloned().chain(file.partitions.iter().map(|(k, _)| k.clone())).collect();
                check_columns(&file.path, &with_partitions, &self.needed, &|c| self.referrer(c))?;
                let in_file: Vec<String> = self.needed.iter().filter(|c| available.contains(c)).cloned().collect();
                let batches = typed::TypedBatches::open(&file.path, file.format, &in_file, self.batch_rows)?;
                Ok(FileReader::Typed(batches))
            }
        }
    }

    /// A frame read from `file` as a batch: partition columns added, the needed columns in
    /// order, numeric event times in seconds, canonical dtypes.
    fn prepare(&self, file: &SourceFile, mut df: DataFrame, first_of_file: bool) -> Result<DataFrame, IngestError> {
        let path = &file.path;
        let rows = df.height();
        for (key, value) in &file.partitions {
            if self.needed.contains(key) && df.column(key).is_err() {
                let column = hive::partition_column(key, value, &self.partition_dtypes[key], rows)
                    .map_err(|e| IngestError::read(path, e))?;
                df.with_column(column).map_err(|e| IngestError::read(path, e))?;
            }
        }
        if first_of_file && file.format == Format::Csv {
            let available: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
            check_columns(path, &available, &self.needed, &|c| self.referrer(c))?;
        }
        let mut df = df.select(self.needed.iter().map(String::as_str)).map_err(|e| IngestError::read(path, e))?;
        if let Some((column, unit)) = self.timestamp.as_ref().filter(|(_, unit)| *unit != TimestampUnit::Seconds) {
            if let Ok(c) = df.column(column) {
                if c.dtype().is_primitive_numeric() {
                    let numbers =
                        c.as_materialized_series().cast(&DataType::Float64).map_err(|e| IngestError::read(path, e))?;
                    let seconds = (&numbers / unit.per_second()).with_name(column.as_str().into());
                    df.with_column(seconds.into()).map_err(|e| IngestError::read(path, e))?;
                }
            }
        }
        canonicalize(&mut df).map_err(|e| IngestError::read(path, e))?;
        Ok(df)
    }
}

enum FileReader {
    Csv(csv::CsvChunks),
    Typed(typed::TypedBatches),
}

impl FileReader {
    fn next_frame(&mut self) -> Option<Result<DataFrame, IngestError>> {
        match self {
            FileReader::Csv(chunks) => chunks.next(),
            FileReader::Typed(batches) => batches.next(),
        }
    }
}

/// The batches of a [`Source`], in order; the first error ends them.
pub struct Batches<'a> {
    source: &'a Source,
    next_file: usize,
    reader: Option<(usize, FileReader)>,
    file_row: u64,
    first_row: u64,
    /// The canonical dtypes of the first batch, and its file: every batch must agree.
    dtypes: Option<(PathBuf, Vec<DataType>)>,
    failed: bool,
}

impl std::fmt::Debug for Batches<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches").field("next_file", &self.next_file).field("first_row", &self.first_row).finish()
    }
}

impl Batches<'_> {
    fn step(&mut self) -> Option<Result<RawTable, IngestError>> {
        loop {
            if self.reader.is_none() {
                let index = self.next_file;
                let file = self.source.files.get(index)?;
                self.next_file += 1;
                self.file_row = 0;
                match self.source.open(file) {
                    Ok(reader) => self.reader = Some((index, reader)),
                    Err(e) => return Some(Err(e)),
                }
            }
            let (index, reader) = self.reader.as_mut().expect("opened above");
            let file = &self.source.files[*index];
            match reader.next_frame() {
                None if self.file_row == 0 => return Some(Err(IngestError::EmptyFile { path: file.path.clone() })),
                None => self.reader = None,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(df)) => {
                    let df = match self.source.prepare(file, df, self.file_row == 0) {
                        Ok(df) => df,
                        Err(e) => return Some(Err(e)),
                    };
                    if let Err(e) = self.check_dtypes(file, &df) {
                        return Some(Err(e));
                    }
                    let mut table = RawTable {
                        path: file.path.clone(),
                        file_row: self.file_row,
                        first_row: self.first_row,
                        split: file.split,
                        text: self.source.text.clone(),
                        df,
                        missing_ids: Vec::new(),
                    };
                    for side_table in &self.source.tables {
                        match side_table.join(&mut table) {
                            Ok(missing) => table.missing_ids.push(missing),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    self.file_row += table.rows() as u64;
                    self.first_row += table.rows() as u64;
                    return Some(Ok(table));
                }
            }
        }
    }

    fn check_dtypes(&mut self, file: &SourceFile, df: &DataFrame) -> Result<(), IngestError> {
        let dtypes: Vec<DataType> = df.dtypes();
        let Some((first, expected)) = &self.dtypes else {
            self.dtypes = Some((file.path.clone(), dtypes));
            return Ok(());
        };
        for ((name, found), want) in df.get_column_names().iter().zip(&dtypes).zip(expected) {
            if found != want {
                return Err(IngestError::read(
                    &file.path,
                    format!("column {name:?} holds {found} here but {want} in {}", first.display()),
                ));
            }
        }
        Ok(())
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<RawTable, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.step();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// A file found by [`expand`], with the directory its Hive partition folders are read below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    pub path: PathBuf,
    pub partition_base: PathBuf,
}

/// Expands paths, globs and directories (relative ones against `base`) in order, without
/// duplicates. A directory stands for every data file below it (as Spark and DataFusion write
/// them: names starting with `.` or `_`, such as `_SUCCESS` and `.crc` files, are left out),
/// sorted by path.
pub fn expand(patterns: &[String], base: &Path) -> Result<Vec<FoundFile>, IngestError> {
    let mut out: Vec<FoundFile> = Vec::new();
    for pattern in patterns {
        let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
        let text = full.to_string_lossy().into_owned();
        let is_glob = pattern.contains(['*', '?', '[']);
        let matched: Vec<FoundFile> = if is_glob {
            let partition_base: PathBuf =
                full.components().take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '['])).collect();
            let mut v: Vec<PathBuf> = glob::glob(&text)
                .map_err(|source| IngestError::Glob { pattern: pattern.clone(), source })?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v.into_iter().map(|path| FoundFile { path, partition_base: partition_base.clone() }).collect()
        } else if full.is_dir() {
            let mut v = Vec::new();
            walk(&full, &mut v).map_err(|e| IngestError::read(&full, e))?;
            v.sort();
            v.into_iter().map(|path| FoundFile { path, partition_base: full.clone() }).collect()
        } else if full.is_file() {
            let partition_base = full.parent().map(Path::to_owned).unwrap_or_default();
            vec![FoundFile { path: full.clone(), partition_base }]
        } else {
            return Err(IngestError::read(&full, "no such file or directory"));
        };
        if matched.is_empty() {
            return Err(IngestError::NoFiles { pattern: text });
        }
        for found in matched {
            if !out.iter().any(|f| f.path == found.path) {
                out.push(found);
            }
        }
    }
    Ok(out)
}

/// Every data file below `dir`, skipping names that start with `.` or `_`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
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

/// Reads the `needed` columns of one whole file (a feature table: small next to a log), in
/// canonical dtypes; `referrers` names, per column, what asked for it in errors.
pub fn read_file(
    path: &Path,
    format: Format,
    csv: &CsvOptions,
    needed: &[String],
    referrers: &dyn Fn(&str) -> String,
) -> Result<DataFrame, IngestError> {
    let file = SourceFile { path: path.to_owned(), format, split: None, partitions: Vec::new() };
    let names: BTreeMap<String, String> = needed.iter().map(|c| (c.clone(), referrers(c))).collect();
    let source = Source::new(vec![file], needed.to_vec(), names, csv, None, BATCH_ROWS)?;
    let mut out: Option<DataFrame> = None;
    for batch in source.batches() {
        let batch = batch?;
        match &mut out {
            None => out = Some(batch.df),
            Some(df) => {
                df.vstack_mut_owned(batch.df).map_err(|e| IngestError::read(path, e))?;
            }
        }
    }
    let mut df = out.ok_or_else(|| IngestError::EmptyFile { path: path.to_owned() })?;
    df.rechunk_mut();
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

/// The column names of a file, without reading its rows (CSV: the header line).
pub fn column_names(path: &Path, format: Format, csv: &CsvOptions) -> Result<Vec<String>, IngestError> {
    if let Some(names) = &csv.columns {
        return Ok(names.clone());
    }
    match format {
        Format::Csv => csv::header(path, csv),
        Format::Parquet | Format::Ipc => typed::column_names(path, format),
    }
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
