//! Fitting the feature pipeline on the train rows only, batch by batch: vocabularies (exact
//! counts of every distinct value), hashed features' distinct values (for the report), and the
//! numeric features' statistics ([`numeric`]). Memory grows with the distinct values, not with
//! the rows.

mod numeric;

use std::collections::{BTreeMap, HashMap, HashSet};

use mtrec_schema::{
    split_tokens, DatasetSchema, FeaturePipeline, FeatureSpec, FeatureType, FittedFeature, FittedTask, IdMapping,
    Pooling, TextRules, Transform, PIPELINE_FORMAT_VERSION,
};
use rayon::prelude::*;

use crate::cells::Cells;
use crate::error::IngestError;
use crate::source::RawTable;

use numeric::{all_null_error, NumericStats};
pub use numeric::{quantile_boundaries, FitOptions};

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

/// What fitting gathers, one part per vocabulary or feature, each updated on its own thread.
#[derive(Debug)]
enum Part {
    /// A vocabulary shared by `members` (feature indices): counts of each key, and how many
    /// keys each member contributed.
    Vocabulary {
        name: String,
        members: Vec<usize>,
        counts: foldhash::HashMap<String, u64>,
        seen: Vec<u64>,
    },
    /// A hashed categorical feature's distinct train values.
    Hashed {
        feature: usize,
        distinct: HashSet<String>,
    },
    Numeric {
        feature: usize,
        stats: Box<NumericStats>,
    },
}

/// Fits the pipeline of a schema over the train rows of one batch after another.
#[derive(Debug)]
pub struct Fitter<'a> {
    schema: &'a DatasetSchema,
    text: TextRules,
    parts: Vec<Part>,
}

impl<'a> Fitter<'a> {
    pub fn new(schema: &'a DatasetSchema, text: TextRules, options: FitOptions) -> Self {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut parts = Vec::new();
        for (i, f) in schema.features.iter().enumerate() {
            match (f.kind, &f.hashing) {
                (FeatureType::Numeric, _) => {
                    parts.push(Part::Numeric { feature: i, stats: Box::new(NumericStats::new(f, options)) })
                }
                (_, Some(_)) => parts.push(Part::Hashed { feature: i, distinct: HashSet::new() }),
                (_, None) => groups.entry(DatasetSchema::vocabulary_name(f)).or_default().push(i),
            }
        }
        for (name, members) in groups {
            let seen = vec![0; members.len()];
            parts.push(Part::Vocabulary { name, members, counts: Default::default(), seen });
        }
        Fitter { schema, text, parts }
    }

    /// Adds the rows `train` (positions in `table`) of one batch.
    pub fn update(
        &mut self,
        table: &RawTable,
        cells: &HashMap<String, Cells>,
        train: &[u32],
    ) -> Result<(), IngestError> {
        let (schema, text) = (self.schema, &self.text);
        self.parts.par_iter_mut().try_for_each(|part| -> Result<(), IngestError> {
            match part {
                Part::Vocabulary { members, counts, seen, .. } => {
                    for (k, &i) in members.iter().enumerate() {
                        let spec = &schema.features[i];
                        let column = &cells[spec.column()];
                        for &r in train {
                            for_each_key(spec, text, column, r as usize, |key| {
                                seen[k] += 1;
                                match counts.get_mut(key) {
                                    Some(c) => *c += 1,
                                    None => {
                                        counts.insert(key.to_owned(), 1);
                                    }
                                }
                            });
                        }
                    }
                }
                Part::Hashed { feature, distinct } => {
                    let spec = &schema.features[*feature];
                    let column = &cells[spec.column()];
                    for &r in train {
                        for_each_key(spec, text, column, r as usize, |key| {
                            if !distinct.contains(key) {
                                distinct.insert(key.to_owned());
                            }
                        });
                    }
                }
                Part::Numeric { feature, stats } => {
                    let spec = &schema.features[*feature];
                    let column = &cells[spec.column()];
                    for &r in train {
                        let value = text.apply(column.get(r as usize));
                        let (x, _) = mtrec_schema::encode::finite_number(value, spec.column())
                            .map_err(|e| table.cell_error(r as usize, spec.column(), e.message))?;
                        stats.add(x);
                    }
                }
            }
            Ok(())
        })
    }

    /// The fitted pipeline; `files` are the input's files, named when a feature has no value.
    pub fn finish(self, files: &[String]) -> Result<(FeaturePipeline, FitStats), IngestError> {
        let schema = self.schema;
        let mut stats = FitStats::default();
        let mut vocabularies = BTreeMap::new();
        let mut transforms: BTreeMap<usize, Transform> = BTreeMap::new();
        for part in self.parts {
            match part {
                Part::Vocabulary { name, members, counts, seen } => {
                    for (&i, &n) in members.iter().zip(&seen) {
                        if n == 0 && schema.features[i].kind == FeatureType::Categorical {
                            return Err(all_null_error(files, i, &schema.features[i]));
                        }
                    }
                    let vocab = schema.features[members[0]].vocabulary.clone().unwrap_or_default();
                    let mut entries: Vec<(String, u64)> =
                        counts.into_iter().filter(|(_, c)| *c >= vocab.min_count).collect();
                    entries.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    let distinct = entries.len();
                    if let Some(max) = vocab.max_size {
                        entries.truncate(max);
                    }
                    if entries.len() < distinct {
                        stats.truncated_vocabularies.insert(name.clone(), distinct);
                    }
                    vocabularies.insert(name, entries.into_iter().map(|(k, _)| k).collect());
                }
                Part::Hashed { feature, distinct } => {
                    let spec = &schema.features[feature];
                    if distinct.is_empty() && spec.kind == FeatureType::Categorical {
                        return Err(all_null_error(files, feature, spec));
                    }
                    stats.hashed_distinct.insert(spec.name.clone(), distinct);
                }
                Part::Numeric { feature, stats: numeric } => {
                    let spec = &schema.features[feature];
                    if numeric.is_empty() {
                        return Err(all_null_error(files, feature, spec));
                    }
                    let (transform, constant) = numeric.finish(schema, spec);
                    if let Some(value) = constant {
                        stats.constant.insert(spec.name.clone(), value);
                    }
                    transforms.insert(feature, transform);
                }
            }
        }
        let features = schema
            .features
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let ids = || match &spec.hashing {
                    Some(h) => IdMapping::Hashing { buckets: h.buckets, seed: h.seed },
                    None => IdMapping::Vocabulary { vocabulary: DatasetSchema::vocabulary_name(spec) },
                };
                let transform = match spec.kind {
                    FeatureType::Categorical => {
                        Transform::Categorical { ids: ids(), embedding_dim: schema.embedding_dim(spec) }
                    }
                    FeatureType::MultiCategorical => Transform::MultiCategorical {
                        separator: spec.separator.clone().unwrap_or_else(|| "|".to_owned()),
                        ids: ids(),
                        embedding_dim: schema.embedding_dim(spec),
                        pooling: spec.pooling.unwrap_or(Pooling::Mean),
                        attention: spec.attention.clone(),
                    },
                    FeatureType::Numeric => transforms.remove(&i).expect("every numeric feature is fitted"),
                };
                FittedFeature { name: spec.name.clone(), column: spec.column().to_owned(), side: spec.side, transform }
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
                product_of: t.product_of.clone(),
            })
            .collect();
        let pipeline = FeaturePipeline {
            format_version: PIPELINE_FORMAT_VERSION,
            dataset: schema.name.clone(),
            schema_hash: schema.hash(),
            ids: schema.ids.clone(),
            text: self.text,
            features,
            vocabularies,
            tasks,
            passthrough: schema.passthrough.clone(),
            tables: Vec::new(),
        };
        Ok((pipeline, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
