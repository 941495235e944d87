//! Fitting the feature pipeline on the train rows only: vocabularies, fill values, scaling
//! statistics and quantile boundaries.

use std::collections::{BTreeMap, HashMap, HashSet};

use mtrec_schema::{
    split_tokens, DatasetSchema, FeaturePipeline, FeatureSpec, FeatureType, Fill, FillRule, FittedFeature, FittedTask,
    IdMapping, Normalize, NumericTransform, Pooling, Scale, TextRules, Transform, PIPELINE_FORMAT_VERSION,
};
use rayon::prelude::*;

use crate::cells::Cells;
use crate::error::IngestError;
use crate::source::RawTable;

/// Facts learned while fitting that the report shows.
#[derive(Debug, Default)]
pub struct FitStats {
    /// Distinct train values of each hashed feature, by feature name.
    pub hashed_distinct: HashMap<String, HashSet<String>>,
    /// Numeric features whose transformed train values are all equal (within a relative 1e-12),
    /// by feature name, with that value.
    pub constant: BTreeMap<String, f64>,
    /// Vocabularies cut to their `max_size`: name -> distinct train values before the cut.
    pub truncated_vocabularies: BTreeMap<String, usize>,
}

/// Calls `f` with every category key of feature cell `row` (one for a categorical, the tokens
/// of a multi-categorical). Nulls are skipped.
fn for_each_key(spec: &FeatureSpec, text: &TextRules, cells: &Cells, row: usize, mut f: impl FnMut(&str)) {
    match spec.kind {
        FeatureType::MultiCategorical if cells.is_list() => {
            for t in cells.tokens(row).unwrap_or_default().iter().flatten() {
                text.cell(t).with_key(|k| {
                    if let Some(k) = k.filter(|k| !k.is_empty()) {
                        f(k);
                    }
                });
            }
        }
        FeatureType::MultiCategorical => {
            let sep = spec.separator.as_deref().unwrap_or("|");
            let cell = text.apply(cells.get(row));
            if !cell.is_null() {
                for t in split_tokens(text, sep, cell) {
                    t.with_key(|k| k.map(&mut f));
                }
            }
        }
        _ => text.apply(cells.get(row)).with_key(|k| k.map(f)).unwrap_or(()),
    }
}

fn all_null_error(table: &RawTable, i: usize, spec: &FeatureSpec) -> IngestError {
    let files: Vec<String> = table.files.iter().map(|f| f.path.display().to_string()).collect();
    IngestError::Data(format!(
        "features[{i}] ({}): column {:?} is null in every train row ({}): nothing to fit",
        spec.name,
        spec.column(),
        files.join(", ")
    ))
}

/// Fits the pipeline on `train` rows.
pub fn fit(
    schema: &DatasetSchema,
    table: &RawTable,
    cells: &HashMap<String, Cells>,
    train: &[u32],
) -> Result<(FeaturePipeline, FitStats), IngestError> {
    let text = &table.text;
    // Vocabularies, one per group of features sharing it, fitted in parallel.
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, f) in schema.features.iter().enumerate() {
        if f.kind != FeatureType::Numeric && f.hashing.is_none() {
            groups.entry(DatasetSchema::vocabulary_name(f)).or_default().push(i);
        }
    }
    let vocabularies: Vec<(String, Vec<String>, Option<usize>)> = groups
        .par_iter()
        .map(|(name, members)| {
            let mut counts: foldhash::HashMap<String, u64> = foldhash::HashMap::default();
            for &i in members {
                let spec = &schema.features[i];
                let column = &cells[spec.column()];
                let mut seen = 0usize;
                for &r in train {
                    for_each_key(spec, text, column, r as usize, |k| {
                        seen += 1;
                        match counts.get_mut(k) {
                            Some(c) => *c += 1,
                            None => {
                                counts.insert(k.to_owned(), 1);
                            }
                        }
                    });
                }
                if seen == 0 && spec.kind == FeatureType::Categorical {
                    return Err(all_null_error(table, i, spec));
                }
            }
            let vocab = spec_vocabulary(&schema.features[members[0]]);
            let mut entries: Vec<(String, u64)> = counts.into_iter().filter(|(_, c)| *c >= vocab.min_count).collect();
            entries.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let distinct = entries.len();
            if let Some(max) = vocab.max_size {
                entries.truncate(max);
            }
            let truncated = (entries.len() < distinct).then_some(distinct);
            Ok((name.clone(), entries.into_iter().map(|(k, _)| k).collect(), truncated))
        })
        .collect::<Result<Vec<(String, Vec<String>, Option<usize>)>, IngestError>>()?;

    let mut stats = FitStats::default();
    let vocabularies: Vec<(String, Vec<String>)> = vocabularies
        .into_iter()
        .map(|(name, vocab, truncated)| {
            if let Some(distinct) = truncated {
                stats.truncated_vocabularies.insert(name.clone(), distinct);
            }
            (name, vocab)
        })
        .collect();
    let features: Vec<(FittedFeature, Fitted)> = schema
        .features
        .par_iter()
        .enumerate()
        .map(|(i, spec)| fit_feature(schema, table, cells, train, i, spec))
        .collect::<Result<_, _>>()?;
    let features = features
        .into_iter()
        .map(|(f, fitted)| {
            if let Some(d) = fitted.hashed_distinct {
                stats.hashed_distinct.insert(f.name.clone(), d);
            }
            if let Some(value) = fitted.constant {
                stats.constant.insert(f.name.clone(), value);
            }
            f
        })
        .collect();

    let tasks = schema
        .tasks
        .iter()
        .map(|t| FittedTask {
            name: t.name.clone(),
            kind: t.kind,
            classes: t.classes.clone().unwrap_or_default(),
            scope: t.scope,
            weight: t.weight,
            label: t.label.clone(),
            mask: t.mask.clone(),
        })
        .collect();
    let pipeline = FeaturePipeline {
        format_version: PIPELINE_FORMAT_VERSION,
        dataset: schema.name.clone(),
        schema_hash: schema.hash(),
        ids: schema.ids.clone(),
        text: table.text.clone(),
        features,
        vocabularies: vocabularies.into_iter().collect(),
        tasks,
        passthrough: schema.passthrough.clone(),
    };
    Ok((pipeline, stats))
}

fn spec_vocabulary(f: &FeatureSpec) -> mtrec_schema::VocabularySpec {
    f.vocabulary.clone().unwrap_or_default()
}

/// What fitting one feature learned besides its transform.
#[derive(Default)]
struct Fitted {
    /// A hashed feature's distinct train values.
    hashed_distinct: Option<HashSet<String>>,
    /// A numeric feature's one transformed train value, when it has only one.
    constant: Option<f64>,
}

fn fit_feature(
    schema: &DatasetSchema,
    table: &RawTable,
    cells: &HashMap<String, Cells>,
    train: &[u32],
    i: usize,
    spec: &FeatureSpec,
) -> Result<(FittedFeature, Fitted), IngestError> {
    let column = &cells[spec.column()];
    let text = &table.text;
    let ids = || match &spec.hashing {
        Some(h) => IdMapping::Hashing { buckets: h.buckets, seed: h.seed },
        None => IdMapping::Vocabulary { vocabulary: DatasetSchema::vocabulary_name(spec) },
    };
    let mut fitted = Fitted::default();
    if spec.hashing.is_some() {
        let mut set = HashSet::new();
        for &r in train {
            for_each_key(spec, text, column, r as usize, |k| {
                if !set.contains(k) {
                    set.insert(k.to_owned());
                }
            });
        }
        if set.is_empty() && spec.kind == FeatureType::Categorical {
            return Err(all_null_error(table, i, spec));
        }
        fitted.hashed_distinct = Some(set);
    }
    let transform = match spec.kind {
        FeatureType::Categorical => Transform::Categorical { ids: ids(), embedding_dim: schema.embedding_dim(spec) },
        FeatureType::MultiCategorical => Transform::MultiCategorical {
            separator: spec.separator.clone().unwrap_or_else(|| "|".to_owned()),
            ids: ids(),
            embedding_dim: schema.embedding_dim(spec),
            pooling: spec.pooling.unwrap_or(Pooling::Mean),
        },
        FeatureType::Numeric => {
            let (transform, constant) = fit_numeric(schema, table, column, train, i, spec)?;
            fitted.constant = constant;
            transform
        }
    };
    let feature =
        FittedFeature { name: spec.name.clone(), column: spec.column().to_owned(), side: spec.side, transform };
    Ok((feature, fitted))
}

/// A numeric feature's transform, fitted on the train rows (nulls, and numbers that are
/// infinite or beyond `f32`, are filled), and its one transformed value when all are equal.
///
/// A feature constant on train cannot be scaled by its spread, which is zero (or rounding
/// residue, about 1e-16 of the value): it is shifted by its value and not scaled (a scale of
/// 1 for `standardize`, a range of 1 for `min_max`), so that values met later stay in
/// proportion instead of being multiplied by 10^16. Constant means equal within a relative
/// 1e-12.
fn fit_numeric(
    schema: &DatasetSchema,
    table: &RawTable,
    column: &Cells,
    train: &[u32],
    i: usize,
    spec: &FeatureSpec,
) -> Result<(Transform, Option<f64>), IngestError> {
    let mut raw: Vec<f64> = Vec::with_capacity(train.len());
    let mut nulls = 0usize;
    for &r in train {
        let value = table.text.apply(column.get(r as usize));
        match mtrec_schema::encode::finite_number(value, spec.column()) {
            Ok((Some(x), _)) => raw.push(x),
            Ok((None, _)) => nulls += 1,
            Err(e) => return Err(table.cell_error(r as usize, spec.column(), e.message)),
        }
    }
    if raw.is_empty() {
        return Err(all_null_error(table, i, spec));
    }
    let fill = match spec.fill.clone().unwrap_or(Fill::Rule(FillRule::Mean)) {
        Fill::Value(v) => v,
        Fill::Rule(FillRule::Zero) => 0.0,
        Fill::Rule(FillRule::Mean) => raw.iter().sum::<f64>() / raw.len() as f64,
        Fill::Rule(FillRule::Median) => {
            let mut v = raw.clone();
            v.sort_unstable_by(f64::total_cmp);
            v[v.len() / 2]
        }
    };
    let numeric =
        NumericTransform { fill, clip: spec.clip.unwrap_or([None, None]), log1p: spec.log1p.unwrap_or(false) };
    // Statistics are over the transformed train values, nulls filled.
    let mut values: Vec<f64> = raw.iter().map(|&x| numeric.apply(Some(x))).collect();
    values.extend(std::iter::repeat_n(numeric.apply(None), nulls));
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let constant = (max - min <= CONSTANT_RELATIVE_SPREAD * min.abs().max(max.abs())).then_some(min);
    if let Some(b) = &spec.bucketize {
        let boundaries = match (&b.boundaries, b.quantiles) {
            (Some(bounds), _) => bounds.clone(),
            (None, Some(q)) => quantile_boundaries(&mut values, q),
            (None, None) => unreachable!("validated: bucketize has boundaries or quantiles"),
        };
        let transform = Transform::Bucketized { numeric, boundaries, embedding_dim: schema.embedding_dim(spec) };
        return Ok((transform, constant));
    }
    let n = values.len() as f64;
    let scale = match (spec.normalize.unwrap_or_default(), constant) {
        (Normalize::None, _) => Scale::None,
        (Normalize::Standardize, Some(value)) => Scale::Standardize { mean: value, std: 1.0 },
        (Normalize::Standardize, None) => {
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
            Scale::Standardize { mean, std: var.sqrt() }
        }
        (Normalize::MinMax, Some(value)) => Scale::MinMax { min: value, max: value + 1.0 },
        (Normalize::MinMax, None) => Scale::MinMax { min, max },
    };
    Ok((Transform::Numeric { numeric, scale }, constant))
}

/// The spread, relative to the values' magnitude, under which a numeric feature is constant on
/// train: the rounding residue of summing equal values is about 1e-16 of them.
const CONSTANT_RELATIVE_SPREAD: f64 = 1e-12;

/// Boundaries of `q` equal-frequency buckets: the values at ranks `k * n / q` (k = 1 .. q-1),
/// deduplicated, so a bucket boundary never splits equal values.
pub fn quantile_boundaries(values: &mut [f64], q: usize) -> Vec<f64> {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    let mut out: Vec<f64> = (1..q).map(|k| values[(k * n / q).min(n - 1)]).collect();
    out.dedup();
    out.retain(|b| *b > values[0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_split_evenly_and_dedupe() {
        let mut v: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(quantile_boundaries(&mut v, 4), vec![25.0, 50.0, 75.0]);
        let mut constant = vec![3.0; 50];
        assert!(quantile_boundaries(&mut constant, 10).is_empty());
        let mut skewed = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0];
        assert_eq!(quantile_boundaries(&mut skewed, 4), vec![1.0]);
    }

    #[test]
    fn all_keys_of_a_multi_categorical_cell() {
        use polars::prelude::NewChunkedArray;
        let spec: FeatureSpec = serde_json::from_value(serde_json::json!(
            {"name": "h", "side": "user", "type": "multi_categorical", "separator": "|"}
        ))
        .unwrap();
        let text = TextRules { trim_whitespace: true, null_values: vec![String::new()] };
        let cells = Cells::Str(polars::prelude::StringChunked::from_slice("h".into(), &[" a| b||c ", ""]));
        let mut keys = Vec::new();
        for_each_key(&spec, &text, &cells, 0, |k| keys.push(k.to_owned()));
        assert_eq!(keys, ["a", "b", "c"]);
        keys.clear();
        for_each_key(&spec, &text, &cells, 1, |k| keys.push(k.to_owned()));
        assert!(keys.is_empty());
    }
}
