//! Reading an encoded split back (`train.arrow`, ...) into an [`EncodedDataset`], for
//! training, prediction and evaluation. Ids are checked against their table sizes here, once,
//! so nothing downstream can index an embedding table out of range.

use std::collections::BTreeMap;
use std::path::Path;

use mtrec_schema::{columns, EncodedDataset, EncodedKind, FeatureColumn, FeaturePipeline, FittedFeature, Split};
use polars::prelude::*;

use crate::error::IngestError;
use crate::files;

/// Reads `features.json` of an ingest directory.
pub fn load_pipeline(dir: &Path) -> Result<FeaturePipeline, IngestError> {
    Ok(FeaturePipeline::load(&dir.join(files::FEATURES))?)
}

/// Reads split `split` of the ingest directory `dir`, checking it against `pipeline`.
pub fn load_split(dir: &Path, split: Split, pipeline: &FeaturePipeline) -> Result<EncodedDataset, IngestError> {
    let path = dir.join(files::split(split));
    let file = std::fs::File::open(&path).map_err(|e| IngestError::read(&path, e))?;
    let df = IpcReader::new(file).finish().map_err(|e| IngestError::read(&path, e))?;
    let mut df = df;
    df.rechunk_mut();
    let rows = df.height();
    let column = |name: &str| -> Result<&Series, IngestError> {
        df.column(name).map(Column::as_materialized_series).map_err(|_| {
            IngestError::read(&path, format!("column {name:?} is missing: not an mtrec ingest of this pipeline"))
        })
    };
    let wrong = |name: &str, e: PolarsError| IngestError::read(&path, format!("column {name:?}: {e}"));

    let mut features = Vec::with_capacity(pipeline.features.len());
    for f in &pipeline.features {
        let s = column(&f.name)?;
        features.push(feature_column(s, f, pipeline.cardinality(f)).map_err(|e| IngestError::read(&path, e))?);
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
