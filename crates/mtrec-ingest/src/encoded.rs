//! Reading encoded splits back, shard by shard, into [`EncodedDataset`]s for training,
//! prediction and evaluation. Each shard is checked against its manifest entry (size,
//! checksum, rows) before it is trusted, and ids are checked against their table sizes, so
//! nothing downstream can index an embedding table out of range or miss rows silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mtrec_schema::{
    columns, EncodedDataset, EncodedKind, FeatureColumn, FeaturePipeline, FittedFeature, ShardEntry, ShardManifest,
    Split, MANIFEST_FILE, SHARD_FORMAT_VERSION,
};
use polars::prelude::*;

use crate::error::IngestError;
use crate::files;

/// Reads `features.json` of an ingest directory.
pub fn load_pipeline(dir: &Path) -> Result<FeaturePipeline, IngestError> {
    Ok(FeaturePipeline::load(&dir.join(files::FEATURES))?)
}

/// Reads `manifest.json` of an ingest directory. A directory of the single-file layout of
/// earlier versions (`train.arrow`, ...) is refused with what to do.
pub fn load_manifest(dir: &Path) -> Result<ShardManifest, IngestError> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        let reason = if dir.join("train.arrow").exists() {
            "this ingest directory has the single-file layout of mtrec 0.2 (train.arrow, valid.arrow, \
             test.arrow); run mtrec ingest again to write it as shards"
        } else {
            "no manifest.json: not an mtrec ingest directory"
        };
        return Err(IngestError::read(dir, reason));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| IngestError::read(&path, e))?;
    let manifest: ShardManifest = serde_json::from_str(&text).map_err(|e| IngestError::read(&path, e))?;
    if manifest.format_version != SHARD_FORMAT_VERSION {
        return Err(IngestError::read(
            &path,
            format!(
                "shard format version {} (this build reads {SHARD_FORMAT_VERSION}): run mtrec ingest again",
                manifest.format_version
            ),
        ));
    }
    for split in Split::ALL {
        let shards = manifest.split(split);
        let sum: usize = shards.shards.iter().map(|s| s.rows).sum();
        if sum != shards.rows {
            return Err(IngestError::read(
                &path,
                format!("the {split} split lists {} rows but its shards hold {sum}", shards.rows),
            ));
        }
    }
    Ok(manifest)
}

/// Which columns of a shard to read: training needs neither the raw ids nor the passthrough
/// columns, and a pass over the labels needs no feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    All,
    ForTraining,
    /// Labels, masks and row ids; the features are left empty (zero columns of each kind).
    LabelsOnly,
}

/// One split of an ingest directory, read shard by shard.
#[derive(Debug, Clone)]
pub struct ShardedSplit {
    dir: PathBuf,
    split: Split,
    shards: Vec<ShardEntry>,
    rows: usize,
    pipeline: FeaturePipeline,
}

/// Opens split `split` of the ingest directory `dir`, checking that it was encoded with
/// `pipeline`.
pub fn open_split(dir: &Path, split: Split, pipeline: &FeaturePipeline) -> Result<ShardedSplit, IngestError> {
    let manifest = load_manifest(dir)?;
    if manifest.schema_hash != pipeline.schema_hash {
        return Err(IngestError::read(
            &dir.join(MANIFEST_FILE),
            format!(
                "the shards were encoded with schema {} but the pipeline is of schema {}",
                manifest.schema_hash, pipeline.schema_hash
            ),
        ));
    }
    let shards = manifest.split(split);
    Ok(ShardedSplit {
        dir: dir.to_owned(),
        split,
        shards: shards.shards.clone(),
        rows: shards.rows,
        pipeline: pipeline.clone(),
    })
}

impl ShardedSplit {
    pub fn split(&self) -> Split {
        self.split
    }

    /// The pipeline the split is read with.
    pub fn pipeline(&self) -> &FeaturePipeline {
        &self.pipeline
    }

    /// Rows of all shards.
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Rows of shard `i`.
    pub fn shard_rows(&self, i: usize) -> usize {
        self.shards[i].rows
    }

    /// Reads shard `i`, checked against its manifest entry.
    pub fn read(&self, i: usize, columns: Columns) -> Result<EncodedDataset, IngestError> {
        let entry = &self.shards[i];
        let path = self.dir.join(&entry.file);
        let bytes = std::fs::read(&path).map_err(|e| IngestError::read(&path, e))?;
        if bytes.len() as u64 != entry.bytes {
            return Err(IngestError::read(
                &path,
                format!(
                    "{} bytes where the manifest lists {}: the shard is truncated or was replaced",
                    bytes.len(),
                    entry.bytes
                ),
            ));
        }
        let sum = crate::shards::checksum(&bytes);
        if sum != entry.xxh3 {
            return Err(IngestError::read(
                &path,
                format!("checksum {sum} where the manifest lists {}: the shard is corrupt", entry.xxh3),
            ));
        }
        let mut reader = IpcReader::new(std::io::Cursor::new(bytes));
        match columns {
            Columns::All => {}
            Columns::ForTraining => reader = reader.with_columns(Some(training_columns(&self.pipeline, true))),
            Columns::LabelsOnly => reader = reader.with_columns(Some(training_columns(&self.pipeline, false))),
        }
        let df = reader.finish().map_err(|e| IngestError::read(&path, e))?;
        if df.height() != entry.rows {
            return Err(IngestError::read(
                &path,
                format!("{} rows where the manifest lists {}", df.height(), entry.rows),
            ));
        }
        if columns == Columns::LabelsOnly {
            return labels_only(df, &path, self.split, &self.pipeline);
        }
        dataset(df, &path, self.split, &self.pipeline)
    }

    /// Reads every shard into one dataset, in manifest order.
    pub fn read_all(&self, columns: Columns) -> Result<EncodedDataset, IngestError> {
        let mut all = empty_dataset(self.split, &self.pipeline, columns);
        for i in 0..self.shards.len() {
            all.append(self.read(i, columns)?);
        }
        Ok(all)
    }
}

/// Reads split `split` of the ingest directory `dir` whole (every column, shards in manifest
/// order), checking it against `pipeline`: for data that fits in memory.
pub fn load_split(dir: &Path, split: Split, pipeline: &FeaturePipeline) -> Result<EncodedDataset, IngestError> {
    open_split(dir, split, pipeline)?.read_all(Columns::All)
}

/// The columns training reads: features (if `features`), labels, masks and row ids.
fn training_columns(pipeline: &FeaturePipeline, features: bool) -> Vec<String> {
    let mut out: Vec<String> =
        if features { pipeline.features.iter().map(|f| f.name.clone()).collect() } else { Vec::new() };
    for t in &pipeline.tasks {
        out.push(columns::label(&t.name));
        out.push(columns::mask(&t.name));
    }
    out.push(columns::ROW.to_owned());
    out
}

/// A dataset of no rows with the columns of `pipeline`.
pub fn empty_dataset(split: Split, pipeline: &FeaturePipeline, columns: Columns) -> EncodedDataset {
    let features = pipeline
        .features
        .iter()
        .map(|f| match f.encoded_kind() {
            EncodedKind::Id => FeatureColumn::Ids(Vec::new()),
            EncodedKind::Value => FeatureColumn::Values(Vec::new()),
            EncodedKind::IdList => FeatureColumn::Lists { offsets: vec![0], values: Vec::new() },
        })
        .collect();
    let all = columns == Columns::All;
    EncodedDataset {
        split,
        rows: 0,
        features,
        labels: vec![Vec::new(); pipeline.tasks.len()],
        masks: vec![Vec::new(); pipeline.tasks.len()],
        user_ids: (all && pipeline.ids.user.is_some()).then(Vec::new),
        item_ids: (all && pipeline.ids.item.is_some()).then(Vec::new),
        row_ids: Vec::new(),
        extras: BTreeMap::new(),
    }
}

/// A shard's labels, masks and row ids as an [`EncodedDataset`] whose feature columns are
/// empty.
fn labels_only(
    df: DataFrame,
    path: &Path,
    split: Split,
    pipeline: &FeaturePipeline,
) -> Result<EncodedDataset, IngestError> {
    let mut out = empty_dataset(split, pipeline, Columns::ForTraining);
    let wrong = |name: &str, e: PolarsError| IngestError::read(path, format!("column {name:?}: {e}"));
    for (t, task) in pipeline.tasks.iter().enumerate() {
        let name = columns::label(&task.name);
        let c = df.column(&name).map_err(|e| wrong(&name, e))?;
        out.labels[t] = c.f32().map_err(|e| wrong(&name, e))?.into_no_null_iter().collect();
        let name = columns::mask(&task.name);
        let c = df.column(&name).map_err(|e| wrong(&name, e))?;
        out.masks[t] = c.u8().map_err(|e| wrong(&name, e))?.into_no_null_iter().collect();
    }
    let c = df.column(columns::ROW).map_err(|e| wrong(columns::ROW, e))?;
    out.row_ids = c.u64().map_err(|e| wrong(columns::ROW, e))?.into_no_null_iter().collect();
    out.rows = df.height();
    Ok(out)
}

/// A shard's frame as an [`EncodedDataset`].
fn dataset(
    df: DataFrame,
    path: &Path,
    split: Split,
    pipeline: &FeaturePipeline,
) -> Result<EncodedDataset, IngestError> {
    let mut df = df;
    df.rechunk_mut();
    let rows = df.height();
    let column = |name: &str| -> Result<&Series, IngestError> {
        df.column(name).map(Column::as_materialized_series).map_err(|_| {
            IngestError::read(path, format!("column {name:?} is missing: not an mtrec ingest of this pipeline"))
        })
    };
    let wrong = |name: &str, e: PolarsError| IngestError::read(path, format!("column {name:?}: {e}"));

    let mut features = Vec::with_capacity(pipeline.features.len());
    for f in &pipeline.features {
        let s = column(&f.name)?;
        features.push(feature_column(s, f, pipeline.cardinality(f)).map_err(|e| IngestError::read(path, e))?);
    }
    let mut labels = Vec::new();
    let mut masks = Vec::new();
    for t in &pipeline.tasks {
        let name = columns::label(&t.name);
        labels.push(column(&name)?.f32().map_err(|e| wrong(&name, e))?.into_no_null_iter().collect());
        let name = columns::mask(&t.name);
        masks.push(column(&name)?.u8().map_err(|e| wrong(&name, e))?.into_no_null_iter().collect());
    }
    let strings = |name: &str| -> Result<Option<Vec<String>>, IngestError> {
        match df.column(name) {
            Err(_) => Ok(None),
            Ok(c) => Ok(Some(
                c.as_materialized_series()
                    .str()
                    .map_err(|e| wrong(name, e))?
                    .iter()
                    .map(|v| v.unwrap_or_default().to_owned())
                    .collect(),
            )),
        }
    };
    let user_ids = strings(columns::USER_ID)?;
    let item_ids = strings(columns::ITEM_ID)?;
    let row_ids = column(columns::ROW)?.u64().map_err(|e| wrong(columns::ROW, e))?.into_no_null_iter().collect();
    let mut extras = BTreeMap::new();
    for c in &pipeline.passthrough {
        let name = columns::extra(c);
        if let Ok(col) = df.column(&name) {
            if col.dtype().is_primitive_numeric() {
                let v = col.as_materialized_series().cast(&DataType::Float64).map_err(|e| wrong(&name, e))?;
                extras.insert(
                    c.clone(),
                    v.f64().map_err(|e| wrong(&name, e))?.iter().map(|x| x.unwrap_or(f64::NAN)).collect(),
                );
            }
        }
    }
    Ok(EncodedDataset { split, rows, features, labels, masks, user_ids, item_ids, row_ids, extras })
}

/// An encoded feature's Polars column as a [`FeatureColumn`], checking every id against the
/// feature's table size.
pub(crate) fn feature_column(s: &Series, f: &FittedFeature, cardinality: usize) -> Result<FeatureColumn, String> {
    let wrong = |e: PolarsError| format!("column {:?}: {e}", f.name);
    let cardinality = cardinality as u32;
    let check = |ids: &[u32]| -> Result<(), String> {
        match ids.iter().position(|&id| id >= cardinality) {
            Some(r) => Err(format!(
                "column {:?}: id {} at position {r} is outside its table of {cardinality} ids (features.json does not match this data)",
                f.name, ids[r]
            )),
            None => Ok(()),
        }
    };
    Ok(match f.encoded_kind() {
        EncodedKind::Id => {
            let ids: Vec<u32> = s.u32().map_err(wrong)?.into_no_null_iter().collect();
            check(&ids)?;
            FeatureColumn::Ids(ids)
        }
        EncodedKind::Value => FeatureColumn::Values(s.f32().map_err(wrong)?.into_no_null_iter().collect()),
        EncodedKind::IdList => {
            let list = s.list().map_err(wrong)?;
            let mut offsets = Vec::with_capacity(s.len() + 1);
            let mut values = Vec::new();
            offsets.push(0);
            for item in list.amortized_iter() {
                if let Some(item) = item {
                    values.extend(item.as_ref().u32().map_err(wrong)?.into_no_null_iter());
                }
                offsets.push(values.len());
            }
            check(&values)?;
            FeatureColumn::Lists { offsets, values }
        }
    })
}
