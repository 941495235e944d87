//! The encoder: a [`FeaturePipeline`] compiled for lookups. Ingestion encodes every cell through
//! it, and serving encodes one JSON record through [`Encoder::encode_record`], so both produce
//! the same ids and values by construction (and a test in `mtrec-ingest` checks it row by row).

use std::collections::{HashMap, HashSet};

/// Vocabulary lookups: a fast hasher, since every categorical cell goes through one.
type VocabularyLookup = foldhash::HashMap<String, u32>;

use serde::Serialize;

use crate::error::CellError;
use crate::pipeline::{
    bucket_id, hash_id, FeaturePipeline, IdMapping, TextRules, Transform, FIRST_ID, NULL_ID, OOV_ID,
};
use crate::spec::{Condition, TaskType};
use crate::value::{json_key, RawValue};

/// One encoded feature value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EncodedValue {
    Id(u32),
    Ids(Vec<u32>),
    Value(f32),
}

/// How a value was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Known,
    /// A category not in the vocabulary: the out-of-vocabulary id.
    Oov,
    Null,
    /// A number that is infinite or beyond `f32`'s range: encoded like a null (filled).
    NonFinite,
}

/// Something a record's encoding had to assume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordWarning {
    /// The record field (raw column) concerned.
    pub field: String,
    pub kind: RecordWarningKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordWarningKind {
    /// The field was absent and encoded as null (numerics: filled).
    Missing,
    /// A category not in the vocabulary, mapped to the OOV id.
    OutOfVocabulary,
    /// A number that is infinite or beyond `f32`'s range, encoded as null (filled).
    NonFinite,
}

/// A record's encoding: one value per feature, in pipeline order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncodedRecord {
    pub values: Vec<EncodedValue>,
    pub warnings: Vec<RecordWarning>,
}

/// A compiled pipeline.
#[derive(Debug, Clone)]
pub struct Encoder {
    pipeline: FeaturePipeline,
    /// One lookup per feature with a vocabulary (indexed like `pipeline.features`).
    lookups: Vec<Option<std::sync::Arc<VocabularyLookup>>>,
    /// Per task, its label rule (`None` for a product task) and its factors' indices.
    labels: Vec<Option<LabelRule>>,
    factors: Vec<Vec<usize>>,
    masks: Vec<Option<ConditionRule>>,
}

impl Encoder {
    pub fn new(pipeline: FeaturePipeline) -> Self {
        let mut tables: HashMap<&str, std::sync::Arc<VocabularyLookup>> = HashMap::new();
        for (name, tokens) in &pipeline.vocabularies {
            let map = tokens.iter().enumerate().map(|(i, t)| (t.clone(), FIRST_ID + i as u32)).collect();
            tables.insert(name, std::sync::Arc::new(map));
        }
        let lookups = pipeline
            .features
            .iter()
            .map(|f| match &f.transform {
                Transform::Categorical { ids: IdMapping::Vocabulary { vocabulary }, .. }
                | Transform::MultiCategorical { ids: IdMapping::Vocabulary { vocabulary }, .. } => {
                    tables.get(vocabulary.as_str()).cloned()
                }
                _ => None,
            })
            .collect();
        let labels = pipeline.tasks.iter().map(LabelRule::compile).collect();
        let factors = (0..pipeline.tasks.len()).map(|t| pipeline.factors(t)).collect();
        let masks = pipeline.tasks.iter().map(|t| t.mask.as_ref().map(ConditionRule::compile)).collect();
        Self { pipeline, lookups, labels, factors, masks }
    }

    pub fn pipeline(&self) -> &FeaturePipeline {
        &self.pipeline
    }

    /// The id of one category of feature `f`.
    pub fn category_id(&self, f: usize, value: RawValue<'_>) -> (u32, Lookup) {
        value.with_key(|key| match key {
            None => (NULL_ID, Lookup::Null),
            Some(key) => self.known_category_id(f, key),
        })
    }

    fn known_category_id(&self, f: usize, key: &str) -> (u32, Lookup) {
        match &self.pipeline.features[f].transform {
            Transform::Categorical { ids, .. } | Transform::MultiCategorical { ids, .. } => match ids {
                IdMapping::Vocabulary { .. } => match self.lookups[f].as_ref().and_then(|m| m.get(key)) {
                    Some(&id) => (id, Lookup::Known),
                    None => (OOV_ID, Lookup::Oov),
                },
                IdMapping::Hashing { buckets, seed } => (hash_id(key, *buckets, *seed), Lookup::Known),
            },
            _ => (OOV_ID, Lookup::Oov),
        }
    }

    /// Encodes one scalar cell of a categorical, bucketized or numeric feature.
    pub fn encode_scalar(&self, f: usize, value: RawValue<'_>) -> Result<(EncodedValue, Lookup), CellError> {
        let value = self.pipeline.text.apply(value);
        let feature = &self.pipeline.features[f];
        match &feature.transform {
            Transform::Categorical { .. } => {
                let (id, lookup) = self.category_id(f, value);
                Ok((EncodedValue::Id(id), lookup))
            }
            Transform::MultiCategorical { separator, .. } => {
                let (ids, lookup) = self.encode_text_list(f, value, separator);
                Ok((EncodedValue::Ids(ids), lookup))
            }
            Transform::Numeric { numeric, scale } => {
                let (x, lookup) = finite_number(value, &feature.column)?;
                Ok((EncodedValue::Value(scale.apply(numeric.apply(x))), lookup))
            }
            Transform::Bucketized { numeric, boundaries, .. } => {
                let (x, lookup) = finite_number(value, &feature.column)?;
                Ok((EncodedValue::Id(bucket_id(boundaries, numeric.apply(x))), lookup))
            }
        }
    }

    /// Encodes a multi-categorical cell given as text: split on the separator, empty tokens
    /// skipped, a null cell is `[NULL_ID]`.
    fn encode_text_list(&self, f: usize, value: RawValue<'_>, separator: &str) -> (Vec<u32>, Lookup) {
        match value {
            RawValue::Null => (vec![NULL_ID], Lookup::Null),
            other => self.encode_tokens(f, split_tokens(&self.pipeline.text, separator, other)),
        }
    }

    /// Encodes the tokens of a multi-categorical cell (from a text cell or a list); null tokens
    /// and empty tokens are skipped. The lookup is `Oov` if any token was out of vocabulary.
    pub fn encode_tokens<'a>(&self, f: usize, tokens: impl Iterator<Item = RawValue<'a>>) -> (Vec<u32>, Lookup) {
        let mut ids = Vec::new();
        let mut lookup = Lookup::Known;
        for token in tokens {
            if token.is_null() || token == RawValue::Str("") {
                continue;
            }
            let (id, l) = self.category_id(f, token);
            if l == Lookup::Oov {
                lookup = Lookup::Oov;
            }
            ids.push(id);
        }
        (ids, lookup)
    }

    /// Encodes one raw record, a JSON object keyed by source column. Absent fields are
    /// encoded as null (with a warning); a value of the wrong type is an error naming the field.
    pub fn encode_record(
        &self,
        record: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<EncodedRecord, CellError> {
        let mut values = Vec::with_capacity(self.pipeline.features.len());
        let mut warnings = Vec::new();
        for (f, feature) in self.pipeline.features.iter().enumerate() {
            let raw = record.get(&feature.column);
            let (value, lookup) = self.encode_field(f, raw)?;
            if raw.is_none() {
                warnings.push(RecordWarning { field: feature.column.clone(), kind: RecordWarningKind::Missing });
            }
            match lookup {
                Lookup::Oov => warnings
                    .push(RecordWarning { field: feature.column.clone(), kind: RecordWarningKind::OutOfVocabulary }),
                Lookup::NonFinite => {
                    warnings.push(RecordWarning { field: feature.column.clone(), kind: RecordWarningKind::NonFinite })
                }
                Lookup::Known | Lookup::Null => {}
            }
            values.push(value);
        }
        Ok(EncodedRecord { values, warnings })
    }

    /// Encodes feature `f` from its JSON field (`None`: absent, encoded like null). A
    /// multi-categorical accepts a list or a separated text; any other feature a scalar.
    pub fn encode_field(&self, f: usize, raw: Option<&serde_json::Value>) -> Result<(EncodedValue, Lookup), CellError> {
        let feature = &self.pipeline.features[f];
        let field = &feature.column;
        let raw = raw.unwrap_or(&serde_json::Value::Null);
        match (&feature.transform, raw) {
            (Transform::MultiCategorical { .. }, serde_json::Value::Array(items)) => {
                let mut tokens = Vec::with_capacity(items.len());
                for item in items {
                    let token = RawValue::from_json(item).ok_or_else(|| CellError {
                        column: field.clone(),
                        message: "list items must be strings, numbers or booleans".to_owned(),
                    })?;
                    tokens.push(self.pipeline.text.apply(token));
                }
                let (ids, lookup) = self.encode_tokens(f, tokens.into_iter());
                Ok((EncodedValue::Ids(ids), lookup))
            }
            _ => {
                let value = RawValue::from_json(raw).ok_or_else(|| CellError {
                    column: field.clone(),
                    message: format!("expected a scalar, got {}", json_type(raw)),
                })?;
                self.encode_scalar(f, value)
            }
        }
    }

    /// The label of task `t` from its label cell, `None` when null (and always for a product
    /// task, whose label comes from its factors: [`crate::product_target`]).
    pub fn label(&self, t: usize, value: RawValue<'_>) -> Result<Option<f32>, CellError> {
        let (Some(rule), Some(spec)) = (&self.labels[t], &self.pipeline.tasks[t].label) else { return Ok(None) };
        rule.read(self.pipeline.text.apply(value)).map_err(|message| CellError { column: spec.column.clone(), message })
    }

    /// Whether task `t`'s mask condition holds for its condition cell (true without a mask).
    pub fn mask_holds(&self, t: usize, value: RawValue<'_>) -> Result<bool, CellError> {
        match &self.masks[t] {
            None => Ok(true),
            Some(rule) => rule
                .holds(self.pipeline.text.apply(value))
                .map_err(|message| CellError { column: rule.column.clone(), message }),
        }
    }

    /// Label and mask of task `t` for a JSON record (absent columns read as null).
    pub fn record_label(
        &self,
        t: usize,
        record: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(f32, u8), CellError> {
        let task = &self.pipeline.tasks[t];
        let Some(spec) = &task.label else {
            let factors: Result<Vec<_>, _> = self.factors[t].iter().map(|&f| self.record_label(f, record)).collect();
            return Ok(crate::product_target(factors?));
        };
        let cell = |column: &str| -> Result<RawValue<'_>, CellError> {
            let v = record.get(column).unwrap_or(&serde_json::Value::Null);
            RawValue::from_json(v).ok_or_else(|| CellError {
                column: column.to_owned(),
                message: format!("expected a scalar, got {}", json_type(v)),
            })
        };
        let label = self.label(t, cell(&spec.column)?)?;
        let holds = match &task.mask {
            Some(m) => self.mask_holds(t, cell(&m.column)?)?,
            None => true,
        };
        Ok(match label {
            Some(y) if holds => (y, 1),
            _ => (0.0, 0),
        })
    }
}

/// The tokens of a multi-categorical text cell (a scalar that is not text is one token), after
/// the text rules; empty and null tokens are dropped. Fitting and encoding both split with this.
pub fn split_tokens<'a>(
    text: &'a TextRules,
    separator: &'a str,
    value: RawValue<'a>,
) -> impl Iterator<Item = RawValue<'a>> {
    let (split, single) = match value {
        RawValue::Str(s) => (Some(s.split(separator)), None),
        other => (None, Some(other)),
    };
    split.into_iter().flatten().map(|t| text.cell(t)).chain(single).filter(|t| !t.is_null() && *t != RawValue::Str(""))
}

/// The number of a numeric feature's cell, and how it was resolved: `None` with
/// [`Lookup::Null`] for a null, and with [`Lookup::NonFinite`] for an infinite number or one
/// beyond `f32`'s range (the model computes in `f32`), which is encoded like a null. NaN reads
/// as null, as everywhere.
pub fn finite_number(value: RawValue<'_>, column: &str) -> Result<(Option<f64>, Lookup), CellError> {
    let x = value
        .as_number()
        .map_err(|e| CellError { column: column.to_owned(), message: format!("cannot parse {:?} as a number", e.0) })?;
    Ok(match x {
        None => (None, Lookup::Null),
        Some(x) if !x.is_finite() || x.abs() > f64::from(f32::MAX) => (None, Lookup::NonFinite),
        Some(x) => (Some(x), Lookup::Known),
    })
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn keys(values: &[serde_json::Value]) -> HashSet<String> {
    values.iter().filter_map(json_key).collect()
}

/// Whether a set of keys given in a schema (label values, mask values) holds `key`, a boolean
/// and its number counting as one value: `[1]` holds `true`, `[true]` holds 1.
fn contains(set: &HashSet<String>, key: &str) -> bool {
    let alias = match key {
        "true" => Some("1"),
        "false" => Some("0"),
        "1" => Some("true"),
        "0" => Some("false"),
        _ => None,
    };
    set.contains(key) || alias.is_some_and(|a| set.contains(a))
}

/// A task's label definition, compiled.
#[derive(Debug, Clone)]
struct LabelRule {
    kind: TaskType,
    positive: Option<HashSet<String>>,
    negative: Option<HashSet<String>>,
    threshold: Option<f64>,
    map: Option<HashMap<String, serde_json::Value>>,
    classes: HashMap<String, usize>,
    log1p: bool,
}

impl LabelRule {
    fn compile(task: &crate::pipeline::FittedTask) -> Option<Self> {
        let label = task.label.as_ref()?;
        Some(Self {
            kind: task.kind,
            positive: label.positive.as_deref().map(keys),
            negative: label.negative.as_deref().map(keys),
            threshold: label.threshold,
            map: label.map.as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            classes: task.classes.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect(),
            log1p: label.log1p,
        })
    }

    fn read(&self, value: RawValue<'_>) -> Result<Option<f32>, String> {
        let Some(key) = value.category_key() else { return Ok(None) };
        if let Some(map) = &self.map {
            let mapped = map
                .get(key.as_ref())
                .ok_or_else(|| format!("label value {key:?} is not in the label's map (keys: {})", list(map.keys())))?;
            return Ok(Some(match self.kind {
                TaskType::Multiclass => self.class_index(mapped.as_str().unwrap_or_default())?,
                _ => mapped.as_f64().ok_or_else(|| format!("label map value for {key:?} is not a number"))? as f32,
            }));
        }
        match self.kind {
            TaskType::Binary => {
                if let Some(pos) = &self.positive {
                    if contains(pos, &key) {
                        return Ok(Some(1.0));
                    }
                    return match &self.negative {
                        Some(neg) if !contains(neg, &key) => Err(format!(
                            "label value {key:?} is neither positive ({}) nor negative ({})",
                            list(pos.iter()),
                            list(neg.iter())
                        )),
                        _ => Ok(Some(0.0)),
                    };
                }
                let x = value.as_number().map_err(|e| format!("label value {:?} is not a number", e.0))?;
                let Some(x) = x else { return Ok(None) };
                match self.threshold {
                    Some(t) => Ok(Some(if x > t { 1.0 } else { 0.0 })),
                    None if x == 0.0 || x == 1.0 => Ok(Some(x as f32)),
                    None => Err(format!(
                        "label value {key:?} is not 0/1 (give the label `positive` values, a `threshold` or a `map`)"
                    )),
                }
            }
            TaskType::Regression => {
                let x = value.as_number().map_err(|e| format!("label value {:?} is not a number", e.0))?;
                let Some(x) = x else { return Ok(None) };
                // A label the model cannot represent would make every loss after it NaN or inf.
                let learned = if self.log1p { x.max(0.0).ln_1p() as f32 } else { x as f32 };
                if !learned.is_finite() {
                    return Err(format!("label value {key:?} is not a finite number within f32's range"));
                }
                Ok(Some(learned))
            }
            TaskType::Multiclass => self.class_index(&key).map(Some),
        }
    }

    fn class_index(&self, class: &str) -> Result<f32, String> {
        let mut names: Vec<_> = self.classes.iter().collect();
        names.sort_by_key(|(_, i)| **i);
        self.classes.get(class).map(|&i| i as f32).ok_or_else(|| {
            format!("label value {class:?} is not one of the classes ({})", list(names.into_iter().map(|(c, _)| c)))
        })
    }
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let mut v: Vec<_> = items.map(|s| format!("{s:?}")).collect();
    v.sort();
    v.join(", ")
}

/// `value OP bound` for one of gt, ge, lt, le.
type Comparison = fn(f64, f64) -> bool;

/// A mask condition, compiled.
#[derive(Debug, Clone)]
struct ConditionRule {
    column: String,
    is_in: Option<HashSet<String>>,
    not_in: Option<HashSet<String>>,
    bounds: [(Option<f64>, Comparison); 4],
}

impl ConditionRule {
    fn compile(c: &Condition) -> Self {
        Self {
            column: c.column.clone(),
            is_in: c.is_in.as_deref().map(keys),
            not_in: c.not_in.as_deref().map(keys),
            bounds: [(c.gt, |x, b| x > b), (c.ge, |x, b| x >= b), (c.lt, |x, b| x < b), (c.le, |x, b| x <= b)],
        }
    }

    fn holds(&self, value: RawValue<'_>) -> Result<bool, String> {
        let Some(key) = value.category_key() else { return Ok(false) };
        let member = |set: &HashSet<String>| contains(set, &key);
        if self.is_in.as_ref().is_some_and(|s| !member(s)) {
            return Ok(false);
        }
        if self.not_in.as_ref().is_some_and(member) {
            return Ok(false);
        }
        if self.bounds.iter().any(|(b, _)| b.is_some()) {
            let x = value.as_number().map_err(|e| format!("mask value {:?} is not a number", e.0))?.unwrap_or(f64::NAN);
            for (bound, test) in &self.bounds {
                if let Some(b) = bound {
                    if !test(x, *b) {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }
}
