//! # mtrec-ingest
//!
//! Raw interaction logs in, encoded Arrow shards out, with memory bounded whatever the size of
//! the log: the input is read twice, batch by batch. A row's path, top to bottom:
//!
//! 1. [`source`]: expand the schema's paths (or `--input`: files, globs, directories with Hive
//!    partition folders), detect each file's format, read it in batches with Polars (Parquet
//!    and Arrow through the streaming engine, CSV plain or gzip as text), check the needed
//!    columns exist, cast to a few canonical dtypes.
//! 2. [`split`]: assign each row to train, valid or test, by the row alone.
//! 3. [`fit`]: first pass, fit the feature pipeline on the train rows only.
//! 4. [`encode`]: second pass, encode every row through [`mtrec_schema::Encoder`], the encoder
//!    serving uses for JSON records, and write it to its split's shards ([`shards`]).
//! 5. [`report`] and the atomic write of `features.json`, `schema.json`, `manifest.json`, the
//!    shards and `ingest_report.json` (a temporary directory renamed into place).
//!
//! [`encoded`] reads the shards back. This crate knows nothing of tensors or models.

pub mod cells;
pub mod encode;
pub mod encoded;
pub mod error;
pub mod fit;
pub mod join;
pub mod progress;
pub mod report;
pub mod shards;
pub mod source;
pub mod split;
pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mtrec_schema::fs::StagedDir;
use mtrec_schema::{
    load_schema, DatasetSchema, Encoder, FeaturePipeline, FeatureType, Format, SchemaError, ShardManifest, Side, Split,
    SplitMethod, MANIFEST_FILE, SHARD_FORMAT_VERSION,
};

pub use error::IngestError;
pub use fit::FitOptions;
pub use report::IngestReport;

use cells::Cells;
use progress::Progress;
use shards::SplitWriter;
use source::{RawTable, Source, SourceFile};

/// File names inside an ingest directory (the shards are listed in `manifest.json`).
pub mod files {
    pub const FEATURES: &str = "features.json";
    pub const SCHEMA: &str = "schema.json";
    pub const REPORT: &str = "ingest_report.json";
}

/// Rows per shard unless `--shard-rows` says otherwise.
pub const DEFAULT_SHARD_ROWS: usize = 1 << 20;

/// The seed of the spread of train rows over their shards.
const SHUFFLE_SEED: u64 = 0x5_4A2D_5EED;

/// What `mtrec ingest` was asked to do.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub schema: PathBuf,
    /// Paths or globs replacing the schema's `source.path` (relative to the working directory).
    pub input: Vec<String>,
    pub out: PathBuf,
    /// Replace an existing output directory.
    pub force: bool,
    /// Rows per shard (train shards hold about this many).
    pub shard_rows: usize,
    /// Rows read at a time (Parquet and Arrow batches; CSV chunks of about 128 bytes a row).
    pub batch_rows: usize,
    pub fit: FitOptions,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

impl IngestOptions {
    /// Ingesting the schema's own source into `out`, with the defaults.
    pub fn new(schema: &Path, out: &Path) -> Self {
        IngestOptions {
            schema: schema.to_owned(),
            input: Vec::new(),
            out: out.to_owned(),
            force: false,
            shard_rows: DEFAULT_SHARD_ROWS,
            batch_rows: source::BATCH_ROWS,
            fit: FitOptions::default(),
            progress: false,
        }
    }
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
    let files = resolve_inputs(&schema, opts, &schema_error)?;
    let (needed, referrers) = needed_columns(&schema);
    let schema_dir = opts.schema.parent().unwrap_or(Path::new("."));
    let (log_needed, tables) = side_tables(&schema, schema_dir, &files, &needed, &schema_error)?;
    let timestamp = schema.ids.timestamp.as_ref().map(|c| (c.clone(), schema.ids.timestamp_unit.unwrap_or_default()));
    let source =
        Source::new(files, log_needed.clone(), referrers.clone(), &schema.source.csv, timestamp, opts.batch_rows)?
            .with_tables(tables);
    let referrer = |c: &str| referrers.get(c).cloned().unwrap_or_else(|| "source".to_owned());
    let sources: Vec<String> = source.files.iter().map(|f| f.path.display().to_string()).collect();
    // Text is parsed as numbers only where it comes from CSV: the log's or a table's.
    let text_ok = |c: &str| {
        let from_csv = |format: Format| format == Format::Csv;
        match source.tables.iter().find(|t| t.columns().iter().any(|tc| tc == c)) {
            Some(table) => from_csv(table.format),
            None => from_csv(source.format()) && log_needed.iter().any(|n| n == c),
        }
    };
    let columns = source.columns();

    // First pass: split and fit.
    let progress = Progress::new(opts.progress, "reading and fitting", source.known_rows());
    let mut splitter = split::Splitter::new(&schema)?;
    let mut fitter = fit::Fitter::new(&schema, source.text.clone(), opts.fit);
    let mut rows = [0u64; 3];
    for batch in source.batches() {
        let batch = batch?;
        let cells = cells_of(&batch, &columns)?;
        if batch.first_row == 0 {
            check_dtypes(&schema, &text_ok, &cells, &referrer)?;
        }
        let assigned = splitter.assign(&batch)?;
        for split in Split::ALL {
            rows[split.index()] += assigned[split.index()].len() as u64;
        }
        fitter.update(&batch, &cells, &assigned[Split::Train.index()])?;
        progress.advance(batch.rows());
    }
    progress.finish();
    let split_warnings = splitter.finish(rows)?;
    if rows[Split::Train.index()] == 0 {
        return Err(IngestError::EmptyTrainSplit);
    }
    tracing::info!(seconds = started.elapsed().as_secs_f64(), rows = rows.iter().sum::<u64>(), "read, split, fitted");
    let (pipeline, stats) = fitter.finish(&sources)?;
    let encoder = Encoder::new(pipeline);

    // Second pass: encode and write the shards.
    let tmp = StagedDir::new(&opts.out).map_err(|e| IngestError::write(&opts.out, e))?;
    let root = tmp.path();
    let mut writers = [
        SplitWriter::spread(root, Split::Train, opts.shard_rows, rows[0], SHUFFLE_SEED)?,
        SplitWriter::sequential(root, Split::Valid, opts.shard_rows)?,
        SplitWriter::sequential(root, Split::Test, opts.shard_rows)?,
    ];
    let mut summaries: [encode::SplitSummary; 3] =
        std::array::from_fn(|_| encode::SplitSummary::empty(encoder.pipeline()));
    let progress = Progress::new(opts.progress, "encoding", Some(rows.iter().sum()));
    let mut splitter = split::Splitter::new(&schema)?;
    // Per side table and split, the log rows whose id the table lacks.
    let mut missing_ids = vec![[0u64; 3]; source.tables.len()];
    for batch in source.batches() {
        let batch = batch?;
        let cells = cells_of(&batch, &columns)?;
        let assigned = splitter.assign(&batch)?;
        for (t, missing) in batch.missing_ids.iter().enumerate() {
            let mut is_missing = vec![false; batch.rows()];
            missing.iter().for_each(|&r| is_missing[r as usize] = true);
            for split in Split::ALL {
                let count = assigned[split.index()].iter().filter(|&&r| is_missing[r as usize]).count();
                missing_ids[t][split.index()] += count as u64;
            }
        }
        for split in Split::ALL {
            let members = &assigned[split.index()];
            if members.is_empty() {
                continue;
            }
            let encoded = encode::encode_split(&encoder, &batch, &cells, members)?;
            summaries[split.index()].add(encoded.summary);
            writers[split.index()].write(encoded.df)?;
        }
        progress.advance(batch.rows());
    }
    progress.finish();
    let [train, valid, test] = writers;
    let manifest = ShardManifest {
        format_version: SHARD_FORMAT_VERSION,
        schema_hash: encoder.pipeline().schema_hash.clone(),
        pipeline: files::FEATURES.to_owned(),
        shard_rows: opts.shard_rows,
        shuffle_seed: SHUFFLE_SEED,
        train: train.finish()?,
        valid: valid.finish()?,
        test: test.finish()?,
    };
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "encoded and written");
    let mut pipeline = encoder.pipeline().clone();
    pipeline.tables = source.tables.iter().map(join::SideTable::reference).collect();
    let tables =
        source.tables.iter().zip(missing_ids).map(|(t, missing)| report::TableReport::new(t, missing)).collect();
    let seconds = started.elapsed().as_secs_f64();
    let report = report::build(&pipeline, sources, tables, &summaries, &stats, split_warnings, seconds);
    write_json(root, files::FEATURES, &pipeline)?;
    write_json(root, files::SCHEMA, &schema)?;
    write_json(root, MANIFEST_FILE, &manifest)?;
    write_json(root, files::REPORT, &report)?;
    tmp.commit().map_err(|e| IngestError::write(&opts.out, e))?;
    Ok(Ingested { pipeline, report })
}

/// The cells of every needed column of a batch.
fn cells_of(batch: &RawTable, columns: &[String]) -> Result<HashMap<String, Cells>, IngestError> {
    columns.iter().map(|c| Ok((c.clone(), Cells::of(batch, c)?))).collect()
}

fn resolve_inputs(
    schema: &DatasetSchema,
    opts: &IngestOptions,
    schema_error: &dyn Fn(&str, String) -> IngestError,
) -> Result<Vec<SourceFile>, IngestError> {
    let schema_dir = opts.schema.parent().unwrap_or(Path::new("."));
    let with_format = |found: Vec<source::FoundFile>, split: Option<Split>| -> Result<Vec<SourceFile>, IngestError> {
        found
            .into_iter()
            .map(|f| {
                Ok(SourceFile {
                    format: source::detect_format(&f.path, schema.source.format)?,
                    partitions: source::partitions(&f.path, &f.partition_base),
                    path: f.path,
                    split,
                })
            })
            .collect()
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
            let found = source::expand(paths.as_ref().expect("validated").as_slice(), schema_dir)?;
            out.extend(with_format(found, Some(split))?);
        }
        return Ok(out);
    }
    let found = if !opts.input.is_empty() {
        source::expand(&opts.input, Path::new("."))?
    } else {
        let Some(p) = &schema.source.path else {
            return Err(schema_error("source.path", "no source: set source.path or pass --input".into()));
        };
        source::expand(p.as_slice(), schema_dir)?
    };
    with_format(found, None)
}

/// The side tables of the schema, loaded, and the needed columns left for the log to hold:
/// a table gives the needed columns it holds that the log (its first file) does not.
fn side_tables(
    schema: &DatasetSchema,
    schema_dir: &Path,
    files: &[SourceFile],
    needed: &[String],
    schema_error: &dyn Fn(&str, String) -> IngestError,
) -> Result<(Vec<String>, Vec<join::SideTable>), IngestError> {
    let specs = [
        (Side::User, "user", &schema.tables.user, &schema.ids.user),
        (Side::Item, "item", &schema.tables.item, &schema.ids.item),
    ];
    let mut log_needed = needed.to_vec();
    let mut tables = Vec::new();
    if schema.tables.is_empty() {
        return Ok((log_needed, tables));
    }
    let first = &files[0];
    let mut taken: std::collections::HashSet<String> =
        source::column_names(&first.path, first.format, &schema.source.csv)?.into_iter().collect();
    taken.extend(first.partitions.iter().map(|(k, _)| k.clone()));
    // A table's CSV has its own header, whatever the log's.
    let csv = mtrec_schema::CsvOptions { has_header: true, columns: None, ..schema.source.csv.clone() };
    for (side, name, spec, id) in specs {
        let Some(spec) = spec else { continue };
        let id_column = id.clone().expect("validated: a table needs its id column");
        let path =
            if Path::new(&spec.path).is_absolute() { PathBuf::from(&spec.path) } else { schema_dir.join(&spec.path) };
        let format = source::detect_format(&path, spec.format)?;
        let key = spec.key.clone().unwrap_or_else(|| id_column.clone());
        let available = source::column_names(&path, format, &csv)?;
        if !available.contains(&key) {
            return Err(schema_error(
                &format!("tables.{name}.key"),
                format!("column {key:?} not in {} (available: {})", path.display(), available.join(", ")),
            ));
        }
        let provided = join::provided_columns(needed, &taken, &available, &key);
        log_needed.retain(|c| !provided.contains(c));
        taken.extend(provided.iter().cloned());
        tables.push(join::SideTable::load(side, &path, format, &key, &id_column, &provided, &csv)?);
    }
    Ok((log_needed, tables))
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
        if let Some(l) = &t.label {
            refs.push((l.column.clone(), format!("tasks[{i}].label.column")));
        }
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

/// Column dtypes against what each feature needs. Text is parsed only where it comes from CSV
/// (`text_ok`): in a typed file a numeric feature on a text column is a schema or data mistake.
fn check_dtypes(
    schema: &DatasetSchema,
    text_ok: &dyn Fn(&str) -> bool,
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
            FeatureType::Numeric if c.is_text() && !text_ok(f.column()) => {
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
        if cells[ts].is_text() && !text_ok(ts) {
            return Err(wrong(ts, "text", "numbers or timestamps"));
        }
    }
    for l in schema.tasks.iter().filter_map(|t| t.label.as_ref()) {
        if cells[&l.column].is_list() {
            return Err(wrong(&l.column, "lists", "one label per row"));
        }
    }
    Ok(())
}

fn write_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> Result<(), IngestError> {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value).map_err(|e| IngestError::write(&path, e))?;
    std::fs::write(&path, text + "\n").map_err(|e| IngestError::write(&path, e))
}
