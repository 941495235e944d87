//! The fitted feature pipeline (`features.json`): everything needed to encode one raw record
//! exactly as ingestion did, without Polars.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::PipelineError;
use crate::spec::{AttentionSpec, Condition, Ids, LabelSpec, Pooling, Scope, Side, TaskType};
use crate::value::RawValue;

/// Version of the `features.json` format; bumped on any incompatible change.
pub const PIPELINE_FORMAT_VERSION: u32 = 1;
/// Id of a category not in the vocabulary (unseen in train, or below `min_count`).
pub const OOV_ID: u32 = 0;
/// Id of a null cell.
pub const NULL_ID: u32 = 1;
/// First id of a known category, hash bucket or numeric bucket.
pub const FIRST_ID: u32 = 2;

/// The fitted pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeaturePipeline {
    pub format_version: u32,
    /// Dataset name from the schema.
    pub dataset: String,
    /// SHA-256 of the canonical schema JSON this pipeline was fitted from.
    pub schema_hash: String,
    pub ids: Ids,
    /// How raw text cells are read (trimming, null texts): applied to JSON strings too.
    pub text: TextRules,
    pub features: Vec<FittedFeature>,
    /// Vocabulary name -> categories in id order, starting at id [`FIRST_ID`].
    pub vocabularies: BTreeMap<String, Vec<String>>,
    pub tasks: Vec<FittedTask>,
    /// Raw columns copied into the encoded splits as `extra.<column>`.
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// The user and item tables joined at ingestion, where serving finds the same rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableRef>,
}

/// A side table as ingestion read it: serving loads the same file to look features up by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRef {
    pub side: crate::Side,
    /// Absolute, as resolved at ingestion.
    pub path: std::path::PathBuf,
    pub format: crate::Format,
    /// The table's key column.
    pub key: String,
}

/// Rules for raw text cells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextRules {
    pub trim_whitespace: bool,
    /// Texts read as null (compared after trimming).
    pub null_values: Vec<String>,
}

impl TextRules {
    /// A text cell as a raw value.
    pub fn cell<'a>(&self, s: &'a str) -> RawValue<'a> {
        let s = if self.trim_whitespace { s.trim() } else { s };
        if self.null_values.iter().any(|n| n == s) {
            RawValue::Null
        } else {
            RawValue::Str(s)
        }
    }

    /// Applies the rules to a value of any type (only text is affected).
    pub fn apply<'a>(&self, v: RawValue<'a>) -> RawValue<'a> {
        match v {
            RawValue::Str(s) => self.cell(s),
            other => other,
        }
    }
}

/// One fitted feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedFeature {
    pub name: String,
    pub column: String,
    pub side: Side,
    pub transform: Transform,
}

/// A feature's fitted transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Transform {
    Categorical {
        ids: IdMapping,
        embedding_dim: usize,
    },
    MultiCategorical {
        separator: String,
        ids: IdMapping,
        embedding_dim: usize,
        pooling: Pooling,
        /// With `pooling: attention`, the candidate feature and the sequence length.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attention: Option<AttentionSpec>,
    },
    Numeric {
        numeric: NumericTransform,
        scale: Scale,
    },
    Bucketized {
        numeric: NumericTransform,
        boundaries: Vec<f64>,
        embedding_dim: usize,
    },
}

/// How a category becomes an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IdMapping {
    /// Look the category up in `vocabularies[vocabulary]`.
    Vocabulary { vocabulary: String },
    /// `FIRST_ID + xxh3_64(key, seed) % buckets`.
    Hashing { buckets: u32, seed: u64 },
}

/// Fill, clip and log1p of a numeric feature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NumericTransform {
    pub fill: f64,
    pub clip: [Option<f64>; 2],
    pub log1p: bool,
}

impl NumericTransform {
    /// The transformed value before scaling or bucketing.
    pub fn apply(&self, x: Option<f64>) -> f64 {
        let mut v = x.unwrap_or(self.fill);
        if let Some(lo) = self.clip[0] {
            v = v.max(lo);
        }
        if let Some(hi) = self.clip[1] {
            v = v.min(hi);
        }
        if self.log1p {
            v = v.max(0.0).ln_1p();
        }
        v
    }
}

/// Scaling of a numeric feature, with statistics fitted on train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scale {
    None,
    Standardize { mean: f64, std: f64 },
    MinMax { min: f64, max: f64 },
}

impl Scale {
    pub fn apply(&self, v: f64) -> f32 {
        match *self {
            Scale::None => v as f32,
            Scale::Standardize { mean, std } => ((v - mean) / std) as f32,
            Scale::MinMax { min, max } => ((v - min) / (max - min)) as f32,
        }
    }
}

/// Bucket id of a value: `FIRST_ID + #{boundaries <= v}`.
pub fn bucket_id(boundaries: &[f64], v: f64) -> u32 {
    FIRST_ID + boundaries.partition_point(|b| *b <= v) as u32
}

/// Hash bucket id of a category key.
pub fn hash_id(key: &str, buckets: u32, seed: u64) -> u32 {
    FIRST_ID + (xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), seed) % u64::from(buckets)) as u32
}

/// What an encoded feature column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodedKind {
    /// One id per row (`u32`).
    Id,
    /// A list of ids per row (`list<u32>`).
    IdList,
    /// One number per row (`f32`).
    Value,
}

impl FittedFeature {
    pub fn encoded_kind(&self) -> EncodedKind {
        match self.transform {
            Transform::Categorical { .. } | Transform::Bucketized { .. } => EncodedKind::Id,
            Transform::MultiCategorical { .. } => EncodedKind::IdList,
            Transform::Numeric { .. } => EncodedKind::Value,
        }
    }

    /// Embedding dimension, for features with an embedding table.
    pub fn embedding_dim(&self) -> Option<usize> {
        match self.transform {
            Transform::Categorical { embedding_dim, .. }
            | Transform::MultiCategorical { embedding_dim, .. }
            | Transform::Bucketized { embedding_dim, .. } => Some(embedding_dim),
            Transform::Numeric { .. } => None,
        }
    }

    /// Name of the embedding table this feature reads; features sharing a vocabulary share it.
    pub fn embedding_table(&self) -> Option<&str> {
        match &self.transform {
            Transform::Categorical { ids: IdMapping::Vocabulary { vocabulary }, .. }
            | Transform::MultiCategorical { ids: IdMapping::Vocabulary { vocabulary }, .. } => Some(vocabulary),
            Transform::Numeric { .. } => None,
            _ => Some(&self.name),
        }
    }
}

/// One task, with its label definition for reading labels from raw data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedTask {
    pub name: String,
    pub kind: TaskType,
    /// Class names (multiclass only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    pub scope: Scope,
    pub weight: f64,
    /// How the label is read; absent for a product task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<LabelSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Condition>,
    /// The tasks whose product this one is (the schema's `product_of`); empty for a task with
    /// a label column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_of: Vec<String>,
}

impl FittedTask {
    /// The raw columns its label and mask are read from (none for a product task).
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.label.iter().map(|l| l.column.as_str()).chain(self.mask.iter().map(|m| m.column.as_str()))
    }
}

/// The label and mask of a product task from its factors' (label, mask) pairs: 0 where any
/// factor is labeled 0 (the chain stopped there), 1 where every factor is labeled 1, and
/// unlabeled otherwise.
pub fn product_target(factors: impl IntoIterator<Item = (f32, u8)>) -> (f32, u8) {
    let mut all_known = true;
    for (label, mask) in factors {
        if mask != 0 && label == 0.0 {
            return (0.0, 1);
        }
        all_known &= mask != 0;
    }
    if all_known {
        (1.0, 1)
    } else {
        (0.0, 0)
    }
}

impl FeaturePipeline {
    /// The task indices of task `t`'s factors (empty unless it is a product task; validation
    /// guarantees that they name earlier tasks).
    pub fn factors(&self, t: usize) -> Vec<usize> {
        self.tasks[t]
            .product_of
            .iter()
            .map(|name| self.tasks.iter().position(|u| &u.name == name).expect("validated factor names"))
            .collect()
    }

    /// Number of rows of every embedding table, by table name.
    pub fn table_sizes(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out = BTreeMap::new();
        for f in &self.features {
            if let (Some(table), Some(dim)) = (f.embedding_table(), f.embedding_dim()) {
                out.insert(table.to_owned(), (self.cardinality(f), dim));
            }
        }
        out
    }

    /// Number of distinct ids of a categorical feature, reserved ids included (0 for numerics).
    pub fn cardinality(&self, f: &FittedFeature) -> usize {
        let known = match &f.transform {
            Transform::Categorical { ids, .. } | Transform::MultiCategorical { ids, .. } => match ids {
                IdMapping::Vocabulary { vocabulary } => self.vocabularies.get(vocabulary).map_or(0, Vec::len),
                IdMapping::Hashing { buckets, .. } => *buckets as usize,
            },
            Transform::Bucketized { boundaries, .. } => boundaries.len() + 1,
            Transform::Numeric { .. } => return 0,
        };
        known + FIRST_ID as usize
    }

    pub fn feature(&self, name: &str) -> Option<&FittedFeature> {
        self.features.iter().find(|f| f.name == name)
    }

    /// The first place where this pipeline and `other` differ, as `path: this vs other` (a
    /// feature's path names the feature), `None` when they are equal: what a refusal to mix
    /// data and a model of different pipelines should say.
    pub fn difference(&self, other: &FeaturePipeline) -> Option<String> {
        // Where the side tables were read from does not change an encoding.
        let comparable = |p: &FeaturePipeline| {
            let mut v = serde_json::to_value(p).expect("pipelines serialize");
            v.as_object_mut().expect("a pipeline is an object").remove("tables");
            v
        };
        let (a, b) = (comparable(self), comparable(other));
        first_difference(&a, &b, String::new())
    }

    /// Reads `features.json`, refusing an unknown format version.
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PipelineError::Io { path: path.to_owned(), source })?;
        let mut de = serde_json::Deserializer::from_str(&text);
        let pipeline: FeaturePipeline = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            PipelineError::Invalid { path: path.to_owned(), message: format!("{}: {}", e.path(), e.inner()) }
        })?;
        if pipeline.format_version != PIPELINE_FORMAT_VERSION {
            return Err(PipelineError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "format_version {} is not supported (this build reads {PIPELINE_FORMAT_VERSION})",
                    pipeline.format_version
                ),
            });
        }
        pipeline.check().map_err(|message| PipelineError::Invalid { path: path.to_owned(), message })?;
        Ok(pipeline)
    }

    /// Internal consistency: every vocabulary a feature names exists.
    fn check(&self) -> Result<(), String> {
        for (i, f) in self.features.iter().enumerate() {
            if let Transform::Categorical { ids: IdMapping::Vocabulary { vocabulary }, .. }
            | Transform::MultiCategorical { ids: IdMapping::Vocabulary { vocabulary }, .. } = &f.transform
            {
                if !self.vocabularies.contains_key(vocabulary) {
                    return Err(format!("features[{i}].transform.ids.vocabulary: no vocabulary named {vocabulary:?}"));
                }
            }
        }
        // Attention pooling names its candidate: a categorical feature of the same dimension.
        for (i, f) in self.features.iter().enumerate() {
            if let Transform::MultiCategorical { pooling, attention, embedding_dim, .. } = &f.transform {
                match (*pooling == Pooling::Attention, attention) {
                    (false, None) => {}
                    (true, Some(a)) => {
                        let target = self.features.iter().find(|g| g.name == a.target);
                        let ok = target.is_some_and(|g| {
                            matches!(g.transform, Transform::Categorical { .. })
                                && g.embedding_dim() == Some(*embedding_dim)
                        });
                        if !ok || a.max_length == 0 {
                            return Err(format!(
                                "features[{i}].transform.attention: {:?} is no categorical feature of dimension \
                                 {embedding_dim}, or max_length is 0",
                                a.target
                            ));
                        }
                    }
                    _ => return Err(format!("features[{i}].transform: pooling \"attention\" goes with `attention`")),
                }
            }
        }
        // A product task's factors are earlier binary tasks, and it reads no label column.
        for (i, t) in self.tasks.iter().enumerate() {
            if t.label.is_none() == t.product_of.is_empty() {
                return Err(format!("tasks[{i}]: needs exactly one of label and product_of"));
            }
            for name in &t.product_of {
                if !self.tasks[..i].iter().any(|f| &f.name == name && f.kind == TaskType::Binary) {
                    return Err(format!("tasks[{i}].product_of: {name:?} is no earlier binary task"));
                }
            }
        }
        Ok(())
    }
}

/// The first path at which two JSON values differ, with both values.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    let at = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (key, va) in x {
                match y.get(key) {
                    Some(vb) => {
                        if let Some(d) = first_difference(va, vb, at(key)) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{}: {va} vs absent", at(key))),
                }
            }
            y.iter().find(|(key, _)| !x.contains_key(*key)).map(|(key, vb)| format!("{}: absent vs {vb}", at(key)))
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                let name = va.get("name").and_then(Value::as_str).map(|n| format!(" ({n:?})")).unwrap_or_default();
                if let Some(d) = first_difference(va, vb, format!("{path}[{i}]{name}")) {
                    return Some(d);
                }
            }
            (x.len() != y.len()).then(|| format!("{path}: {} entries vs {}", x.len(), y.len()))
        }
        _ => (a != b).then(|| format!("{path}: {a} vs {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_boundaries() {
        let b = [0.0, 10.0, 20.0];
        assert_eq!(bucket_id(&b, -1.0), 2);
        assert_eq!(bucket_id(&b, 0.0), 3);
        assert_eq!(bucket_id(&b, 9.9), 3);
        assert_eq!(bucket_id(&b, 20.0), 5);
    }

    #[test]
    fn numeric_transform_order_is_fill_clip_log1p() {
        let t = NumericTransform { fill: 5.0, clip: [Some(-2.0), Some(100.0)], log1p: true };
        assert_eq!(t.apply(None), 6f64.ln());
        assert_eq!(t.apply(Some(1000.0)), 101f64.ln());
        assert_eq!(t.apply(Some(-1.5)), 0.0);
    }

    #[test]
    fn hashing_is_stable() {
        // Pinned (computed with Python's `xxhash` package): a change of hash function would
        // silently re-map every deployed model's ids.
        assert_eq!(hash_id("user_42", 1000, 0), 167);
        assert_eq!(hash_id("abc", 1 << 20, 7), 235_796);
        assert_ne!(hash_id("abc", 1 << 20, 7), hash_id("abc", 1 << 20, 8));
    }

    #[test]
    fn text_rules_trim_then_null() {
        let rules = TextRules { trim_whitespace: true, null_values: vec!["?".into(), String::new()] };
        assert_eq!(rules.cell("  ? "), RawValue::Null);
        assert_eq!(rules.cell("   "), RawValue::Null);
        assert_eq!(rules.cell(" Male "), RawValue::Str("Male"));
    }

    fn with_scale(mean: f64, std: f64) -> FeaturePipeline {
        let numeric = NumericTransform { fill: mean, clip: [None, None], log1p: false };
        FeaturePipeline {
            format_version: PIPELINE_FORMAT_VERSION,
            dataset: "d".into(),
            schema_hash: "h".into(),
            ids: Ids::default(),
            text: TextRules::default(),
            features: vec![FittedFeature {
                name: "age".into(),
                column: "age".into(),
                side: Side::User,
                transform: Transform::Numeric { numeric, scale: Scale::Standardize { mean, std } },
            }],
            vocabularies: BTreeMap::from([("region".to_owned(), vec!["r1".to_owned(), "r2".to_owned()])]),
            tasks: Vec::new(),
            passthrough: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// A hand-edited `features.json` whose product task names no earlier binary task is
    /// refused with where, not a panic when the model is built.
    #[test]
    fn product_tasks_must_name_earlier_binary_tasks() {
        let task = |name: &str, label: bool, product_of: &[&str]| FittedTask {
            name: name.into(),
            kind: TaskType::Binary,
            classes: Vec::new(),
            scope: Scope::Pair,
            weight: 1.0,
            label: label.then(|| serde_json::from_value(serde_json::json!({"column": name})).unwrap()),
            mask: None,
            product_of: product_of.iter().map(|f| f.to_string()).collect(),
        };
        let mut pipeline = with_scale(0.0, 1.0);
        pipeline.tasks =
            vec![task("click", true, &[]), task("buy", true, &[]), task("click_buy", false, &["click", "buy"])];
        assert_eq!(pipeline.check(), Ok(()));
        assert_eq!(pipeline.factors(2), [0, 1]);
        pipeline.tasks.swap(1, 2);
        assert_eq!(pipeline.check().unwrap_err(), "tasks[1].product_of: \"buy\" is no earlier binary task");
        pipeline.tasks.swap(1, 2);
        pipeline.tasks[2].label = pipeline.tasks[0].label.clone();
        assert_eq!(pipeline.check().unwrap_err(), "tasks[2]: needs exactly one of label and product_of");
    }

    /// A hand-edited attention pooling without its candidate, or naming a feature that cannot
    /// be one, is refused at load instead of reaching the model.
    #[test]
    fn attention_pooling_must_name_a_categorical_feature_of_its_dimension() {
        let ids = || IdMapping::Vocabulary { vocabulary: "region".into() };
        let feature = |name: &str, transform| FittedFeature {
            name: name.into(),
            column: name.into(),
            side: Side::User,
            transform,
        };
        let mut pipeline = with_scale(0.0, 1.0);
        pipeline.features.push(feature("item", Transform::Categorical { ids: ids(), embedding_dim: 2 }));
        let hist = |pooling, target: &str| Transform::MultiCategorical {
            separator: "|".into(),
            ids: ids(),
            embedding_dim: 2,
            pooling,
            attention: Some(AttentionSpec { target: target.into(), max_length: 3 }),
        };
        pipeline.features.push(feature("hist", hist(Pooling::Attention, "item")));
        assert_eq!(pipeline.check(), Ok(()));
        pipeline.features[2].transform = hist(Pooling::Attention, "age");
        assert!(pipeline
            .check()
            .unwrap_err()
            .starts_with("features[2].transform.attention: \"age\" is no categorical"));
        pipeline.features[2].transform = hist(Pooling::Mean, "item");
        assert_eq!(pipeline.check().unwrap_err(), "features[2].transform: pooling \"attention\" goes with `attention`");
    }

    #[test]
    fn a_difference_names_the_feature_the_statistic_and_both_values() {
        let a = with_scale(0.5, 1.1102230246251565e-16);
        assert_eq!(a.difference(&a.clone()), None);
        let mut moved = a.clone();
        moved.tables.push(TableRef {
            side: Side::User,
            path: "/elsewhere/users.parquet".into(),
            format: crate::Format::Parquet,
            key: "user".into(),
        });
        assert_eq!(a.difference(&moved), None, "where a table was read does not change the encoding");
        let b = with_scale(0.5, 1.1102230246251563e-16);
        assert_eq!(
            a.difference(&b).unwrap(),
            "features[0] (\"age\").transform.scale.std: 1.1102230246251565e-16 vs 1.1102230246251563e-16"
        );
        let mut c = a.clone();
        c.vocabularies.get_mut("region").unwrap().reverse();
        assert_eq!(a.difference(&c).unwrap(), "vocabularies.region[0]: \"r1\" vs \"r2\"");
        c.vocabularies.get_mut("region").unwrap().push("r3".into());
        assert!(a.difference(&c).unwrap().starts_with("vocabularies.region[0]"));
    }

    proptest::proptest! {
        /// Every finite f64 (subnormals and extremes included) survives a write and a read of a
        /// pipeline exactly, so a copied pipeline compares and hashes equal to its original.
        #[test]
        fn fitted_statistics_survive_a_json_round_trip(
            mean in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
            std in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL,
        ) {
            for (mean, std) in [(mean, std.abs()), (f64::MAX, f64::MIN_POSITIVE), (f64::MIN, 5e-324), (-0.0, f64::EPSILON)] {
                let p = with_scale(mean, std);
                let text = serde_json::to_string_pretty(&p).unwrap();
                let back: FeaturePipeline = serde_json::from_str(&text).unwrap();
                proptest::prop_assert_eq!(back.difference(&p), None);
                proptest::prop_assert_eq!(serde_json::to_string_pretty(&back).unwrap(), text);
                let Transform::Numeric { scale: Scale::Standardize { mean: m, std: s }, .. } = back.features[0].transform else {
                    unreachable!("a numeric feature")
                };
                proptest::prop_assert_eq!((m.to_bits(), s.to_bits()), (mean.to_bits(), std.to_bits()));
            }
        }
    }
}
