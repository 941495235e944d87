//! # mtrec-ingest
//!
//! Raw interaction logs in, encoded Arrow splits out. A row's path, top to bottom:
//!
//! 1. [`source`]: expand the schema's paths (or `--input`), detect each file's format, read it
//!    with Polars (lazy scans with projection for Parquet and Arrow; CSV, plain or gzip, as
//!    text), check the needed columns exist, cast to a few canonical dtypes.
//! 2. [`split`]: assign each row to train, valid or test.
//! 3. [`fit`]: fit the feature pipeline on the train rows only.
//! 4. [`encode`]: encode every split through [`mtrec_schema::Encoder`], the encoder serving
//!    uses for JSON records.
//! 5. [`report`] and the atomic write of `features.json`, `schema.json`, `{train,valid,test}.arrow`
//!    and `ingest_report.json` (a temporary directory renamed into place).
//!
//! This crate knows nothing of tensors or models.

pub mod cells;
pub mod encode;
pub mod encoded;
pub mod error;
pub mod fit;
pub mod report;
pub mod source;
pub mod split;
pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mtrec_schema::fs::StagedDir;
use mtrec_schema::{
    load_schema, DatasetSchema, Encoder, FeaturePipeline, FeatureType, Format, SchemaError, Split, SplitMethod,
};
use polars::prelude::*;

pub use error::IngestError;
pub use report::IngestReport;

use cells::Cells;
use source::{FileSpan, RawTable};

/// File names inside an ingest directory.
pub mod files {
    pub const FEATURES: &str = "features.json";
    pub const SCHEMA: &str = "schema.json";
    pub const REPORT: &str = "ingest_report.json";
    /// `train.arrow`, `valid.arrow`, `test.arrow`.
    pub fn split(split: super::Split) -> String {
        format!("{split}.arrow")
    }
}

/// What `mtrec ingest` was asked to do.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub schema: PathBuf,
    /// Paths or globs replacing the schema's `source.path` (relative to the working directory).
    pub input: Vec<String>,
    pub out: PathBuf,
    /// Replace an existing output directory.
    pub force: bool,
}

/// The result of a successful ingest.
#[derive(Debug)]
pub struct Ingested {
    pub pipeline: FeaturePipeline,
    pub report: IngestReport,
}

/// Runs the whole ingestion; on error nothing is left at `opts.out`.
pub fn ingest(opts: &IngestOptions) -> Result<Ingested, IngestError> {
    let started = Instant::now();
    let schema = load_schema(&opts.schema)?;
    if opts.out.exists() && !opts.force {
        return Err(IngestError::OutputExists { path: opts.out.clone() });
    }
    let schema_error = |path: &str, message: String| IngestError::SchemaVsData {
        schema: opts.schema.clone(),
        error: SchemaError::new(path, message),
    };

    let inputs = resolve_inputs(&schema, opts, &schema_error)?;
    let (needed, referrers) = needed_columns(&schema);
    let referrer = |c: &str| referrers.get(c).cloned().unwrap_or_else(|| "source".to_owned());

    let format = inputs[0].1;
    if let Some((path, _, _)) = inputs.iter().find(|(_, f, _)| *f != format) {
        return Err(IngestError::read(path, format!("mixes formats: {} is {format:?}", inputs[0].0.display())));
    }
    let mut frames = Vec::with_capacity(inputs.len());
    let mut files = Vec::with_capacity(inputs.len());
    let mut start = 0;
    for (path, format, split) in &inputs {
        let timestamp = schema.ids.timestamp.as_deref().map(|c| (c, schema.ids.timestamp_unit.unwrap_or_default()));
        let df = source::read_file(path, *format, &schema.source.csv, &needed, &referrer, timestamp)?;
        files.push(FileSpan { path: path.clone(), start, rows: df.height(), split: *split });
        start += df.height();
        frames.push(df);
    }
    let mut df = frames.remove(0);
    for (other, span) in frames.into_iter().zip(&files[1..]) {
        df.vstack_mut_owned(other).map_err(|e| {
            IngestError::read(&span.path, format!("columns differ in type from {}: {e}", files[0].path.display()))
        })?;
    }
    let table = RawTable { df, files, text: source::text_rules(format, &schema.source.csv) };
    let cells: HashMap<String, Cells> =
        needed.iter().map(|c| Ok((c.clone(), Cells::of(&table, c)?))).collect::<Result<_, IngestError>>()?;
    check_dtypes(&schema, format, &cells, &referrer)?;

    let (rows, split_warnings) = split::assign(&schema, &table)?;
    if rows[Split::Train.index()].is_empty() {
        return Err(IngestError::EmptyTrainSplit);
    }
    tracing::info!(seconds = started.elapsed().as_secs_f64(), rows = table.df.height(), "read and split");
    let (pipeline, stats) = fit::fit(&schema, &table, &cells, &rows[Split::Train.index()])?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "fitted");
    let encoder = Encoder::new(pipeline);
    let tmp = StagedDir::new(&opts.out).map_err(|e| IngestError::write(&opts.out, e))?;
    // Splits are encoded and written in chunks of rows (one Arrow record batch each): only
    // one chunk of encoded data is in memory at a time.
    let mut summaries = Vec::with_capacity(3);
    for split in Split::ALL {
        let path = tmp.path().join(files::split(split));
        summaries.push(write_split(&path, &encoder, &table, &cells, &rows[split.index()])?);
        tracing::info!(seconds = started.elapsed().as_secs_f64(), split = split.name(), "encoded and written");
    }
    let summaries: [encode::SplitSummary; 3] = summaries.try_into().expect("three splits");
    let pipeline = encoder.pipeline().clone();
    let sources = table.files.iter().map(|f| f.path.display().to_string()).collect();
    let report = report::build(&pipeline, sources, &summaries, &stats, split_warnings, started.elapsed().as_secs_f64());
    write_json(tmp.path(), files::FEATURES, &pipeline)?;
    write_json(tmp.path(), files::SCHEMA, &schema)?;
    write_json(tmp.path(), files::REPORT, &report)?;
    tmp.commit().map_err(|e| IngestError::write(&opts.out, e))?;
    Ok(Ingested { pipeline, report })
}

type Input = (PathBuf, Format, Option<Split>);

fn resolve_inputs(
    schema: &DatasetSchema,
    opts: &IngestOptions,
    schema_error: &dyn Fn(&str, String) -> IngestError,
) -> Result<Vec<Input>, IngestError> {
    let schema_dir = opts.schema.parent().unwrap_or(Path::new("."));
    let with_format = |paths: Vec<PathBuf>, split: Option<Split>| -> Result<Vec<Input>, IngestError> {
        paths.into_iter().map(|p| Ok((p.clone(), source::detect_format(&p, schema.source.format)?, split))).collect()
    };
    if schema.split.method == SplitMethod::Files {
        if !opts.input.is_empty() {
            return Err(schema_error(
                "split.method",
                "--input cannot replace the per-split files of split method \"files\"".into(),
            ));
        }
        let mut out = Vec::new();
        for (split, paths) in [
            (Split::Train, &schema.split.train),
            (Split::Valid, &schema.split.valid),
            (Split::Test, &schema.split.test),
        ] {
            let paths = source::expand(paths.as_ref().expect("validated").as_slice(), schema_dir)?;
            out.extend(with_format(paths, Some(split))?);
        }
        return Ok(out);
    }
    let paths = if !opts.input.is_empty() {
        source::expand(&opts.input, Path::new("."))?
    } else {
        let Some(p) = &schema.source.path else {
            return Err(schema_error("source.path", "no source: set source.path or pass --input".into()));
        };
        source::expand(p.as_slice(), schema_dir)?
    };
    with_format(paths, None)
}

/// Every raw column the schema reads, and for each the JSON path of its first reader.
fn needed_columns(schema: &DatasetSchema) -> (Vec<String>, BTreeMap<String, String>) {
    let mut refs: Vec<(String, String)> = Vec::new();
    let ids = &schema.ids;
    for (path, c) in [("ids.user", &ids.user), ("ids.item", &ids.item), ("ids.timestamp", &ids.timestamp)] {
        if let Some(c) = c {
            refs.push((c.clone(), path.to_owned()));
        }
    }
    for (i, f) in schema.features.iter().enumerate() {
        let path = if f.column.is_some() { format!("features[{i}].column") } else { format!("features[{i}].name") };
        refs.push((f.column().to_owned(), path));
    }
    for (i, t) in schema.tasks.iter().enumerate() {
        refs.push((t.label.column.clone(), format!("tasks[{i}].label.column")));
        if let Some(m) = &t.mask {
            refs.push((m.column.clone(), format!("tasks[{i}].mask.column")));
        }
    }
    for (i, c) in schema.passthrough.iter().enumerate() {
        refs.push((c.clone(), format!("passthrough[{i}]")));
    }
    let mut needed = Vec::new();
    let mut referrers = BTreeMap::new();
    for (c, path) in refs {
        if let std::collections::btree_map::Entry::Vacant(e) = referrers.entry(c.clone()) {
            needed.push(c);
            e.insert(path);
        }
    }
    (needed, referrers)
}

/// Column dtypes against what each feature needs. Text is parsed only from CSV: in a typed file
/// a numeric feature on a text column is a schema or data mistake.
fn check_dtypes(
    schema: &DatasetSchema,
    format: Format,
    cells: &HashMap<String, Cells>,
    referrer: &dyn Fn(&str) -> String,
) -> Result<(), IngestError> {
    let wrong = |column: &str, found: &str, want: &str| {
        IngestError::Data(format!("{}: column {column:?} holds {found}, expected {want}", referrer(column)))
    };
    for f in &schema.features {
        let c = &cells[f.column()];
        match f.kind {
            FeatureType::Numeric if c.is_list() => return Err(wrong(f.column(), "lists", "numbers")),
            FeatureType::Numeric if c.is_text() && format != Format::Csv => {
                return Err(wrong(f.column(), "text", "numbers"))
            }
            FeatureType::Categorical if c.is_list() => return Err(wrong(f.column(), "lists", "one category per row")),
            _ => {}
        }
    }
    for column in [&schema.ids.user, &schema.ids.item, &schema.ids.timestamp].into_iter().flatten() {
        if cells[column].is_list() {
            return Err(wrong(column, "lists", "one value per row"));
        }
    }
    if let Some(ts) = &schema.ids.timestamp {
        if cells[ts].is_text() && format != Format::Csv {
            return Err(wrong(ts, "text", "numbers or timestamps"));
        }
    }
    for t in &schema.tasks {
        if cells[&t.label.column].is_list() {
            return Err(wrong(&t.label.column, "lists", "one label per row"));
        }
    }
    Ok(())
}

fn write_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> Result<(), IngestError> {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value).map_err(|e| IngestError::write(&path, e))?;
    std::fs::write(&path, text + "\n").map_err(|e| IngestError::write(&path, e))
}

/// The IPC field descriptions of `df`'s columns, for the batched Arrow writer.
fn ipc_fields(df: &DataFrame) -> Vec<polars_arrow::io::ipc::IpcField> {
    let arrow = df.schema().to_arrow(CompatLevel::oldest());
    polars_arrow::io::ipc::write::default_ipc_fields(arrow.iter_values())
}

/// Rows encoded and written per Arrow record batch.
const CHUNK_ROWS: usize = 1 << 16;

/// Encodes `rows` chunk by chunk into the Arrow IPC file `path`.
fn write_split(
    path: &Path,
    encoder: &Encoder,
    table: &RawTable,
    cells: &HashMap<String, Cells>,
    rows: &[u32],
) -> Result<encode::SplitSummary, IngestError> {
    let fail = |e: PolarsError| IngestError::write(path, e);
    let file = std::fs::File::create(path).map_err(|e| IngestError::write(path, e))?;
    let mut writer = None;
    let mut summary = encode::SplitSummary::default();
    // An empty split still gets a file with every column.
    let chunks: Vec<&[u32]> = if rows.is_empty() { vec![rows] } else { rows.chunks(CHUNK_ROWS).collect() };
    for chunk in chunks {
        let encoded = encode::encode_split(encoder, table, cells, chunk)?;
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(
                IpcWriter::new(std::io::BufWriter::new(file.try_clone().map_err(|e| IngestError::write(path, e))?))
                    .with_compat_level(CompatLevel::oldest())
                    .batched(encoded.df.schema(), ipc_fields(&encoded.df))
                    .map_err(fail)?,
            ),
        };
        w.write_batch(&encoded.df).map_err(fail)?;
        summary.add(encoded.summary);
    }
    writer.expect("at least one chunk").finish().map_err(fail)?;
    Ok(summary)
}
