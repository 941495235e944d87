//! Loading and static validation of a dataset schema. Checks that need the data (columns exist,
//! dtypes) live in ingestion; these need only the schema. Every error names its JSON path.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{SchemaError, SchemaFileError};
use crate::spec::{DatasetSchema, FeatureSpec, FeatureType, Fill, Normalize, Pooling, Side, SplitMethod, TaskType};
use crate::value::RawValue;

/// Reads, parses and validates a schema file.
pub fn load_schema(path: &Path) -> Result<DatasetSchema, SchemaFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SchemaFileError::Io { path: path.to_owned(), source })?;
    parse_schema(&text).map_err(|error| SchemaFileError::Invalid { path: path.to_owned(), error })
}

/// Parses and validates a schema from JSON text.
pub fn parse_schema(text: &str) -> Result<DatasetSchema, SchemaError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let schema: DatasetSchema = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde_json appends " at line L column C": keep it, it helps in a large file.
        SchemaError::new(if path == "." { "$".to_owned() } else { path }, message)
    })?;
    schema.validate()?;
    Ok(schema)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl DatasetSchema {
    /// SHA-256 (hex) of the schema's canonical JSON: equal for equal schemas, whatever their
    /// formatting.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a schema always serializes");
        let digest = Sha256::digest(&canonical);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The embedding dimension of a feature (its own or the default).
    pub fn embedding_dim(&self, f: &FeatureSpec) -> usize {
        f.embedding_dim.unwrap_or(self.defaults.embedding_dim)
    }

    /// Vocabulary name of a vocabulary-encoded categorical feature (its shared name or its own).
    pub fn vocabulary_name(f: &FeatureSpec) -> String {
        f.vocabulary.as_ref().and_then(|v| v.shared.clone()).unwrap_or_else(|| f.name.clone())
    }

    /// Static checks; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SchemaError> {
        if self.name.trim().is_empty() {
            return Err(SchemaError::new("name", "must not be empty"));
        }
        let delimiter = &self.source.csv.delimiter;
        if delimiter.len() != 1 || !delimiter.is_ascii() {
            return Err(SchemaError::new(
                "source.csv.delimiter",
                format!("must be one ASCII character, got {delimiter:?}"),
            ));
        }
        if !self.source.csv.has_header && self.source.csv.columns.is_none() {
            return Err(SchemaError::new("source.csv.columns", "required when has_header is false"));
        }
        if self.features.is_empty() {
            return Err(SchemaError::new("features", "at least one feature is required"));
        }
        for (side, table, id) in
            [("user", &self.tables.user, &self.ids.user), ("item", &self.tables.item, &self.ids.item)]
        {
            let Some(table) = table else { continue };
            if id.is_none() {
                return Err(SchemaError::new(
                    format!("tables.{side}"),
                    format!("needs ids.{side}: the table is joined on the log's {side} ids"),
                ));
            }
            if table.path.trim().is_empty() || table.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
                return Err(SchemaError::new(format!("tables.{side}"), "path and key must not be empty"));
            }
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, f) in self.features.iter().enumerate() {
            let at = |field: &str| format!("features[{i}].{field}");
            if !valid_name(&f.name) {
                return Err(SchemaError::new(at("name"), format!("{:?}: use letters, digits and _ only", f.name)));
            }
            if let Some(j) = seen.insert(&f.name, i) {
                return Err(SchemaError::new(
                    at("name"),
                    format!("duplicate feature name {:?} (also features[{j}])", f.name),
                ));
            }
            self.validate_feature(f, &at)?;
        }
        self.validate_shared_vocabularies()?;
        self.validate_tasks()?;
        self.validate_split()?;
        for (i, c) in self.passthrough.iter().enumerate() {
            if !valid_name(c) {
                return Err(SchemaError::new(
                    format!("passthrough[{i}]"),
                    format!("{c:?}: use letters, digits and _ only"),
                ));
            }
        }
        Ok(())
    }

    /// A multi-categorical feature's `attention`: given exactly with `pooling: attention`, its
    /// target a categorical item feature of the same embedding dimension, on a user or context
    /// sequence.
    fn validate_attention(&self, f: &FeatureSpec, at: &dyn Fn(&str) -> String) -> Result<(), SchemaError> {
        let attention = match (f.pooling == Some(Pooling::Attention), &f.attention) {
            (false, None) => return Ok(()),
            (true, Some(a)) => a,
            (true, None) => return Err(SchemaError::new(at("attention"), "required with pooling \"attention\"")),
            (false, Some(_)) => {
                return Err(SchemaError::new(at("attention"), "applies with pooling \"attention\" only"))
            }
        };
        if !(1..=256).contains(&attention.max_length) {
            return Err(SchemaError::new(at("attention.max_length"), "must be between 1 and 256"));
        }
        if f.side == Side::Item {
            return Err(SchemaError::new(at("side"), "an attended sequence is a user or context feature"));
        }
        let target = self.features.iter().find(|t| t.name == attention.target);
        let Some(target) = target.filter(|t| t.kind == FeatureType::Categorical && t.side == Side::Item) else {
            return Err(SchemaError::new(
                at("attention.target"),
                format!("{:?} names no categorical item feature", attention.target),
            ));
        };
        if self.embedding_dim(target) != self.embedding_dim(f) {
            return Err(SchemaError::new(
                at("attention.target"),
                format!(
                    "{:?} has embedding_dim {}, the sequence {}",
                    target.name,
                    self.embedding_dim(target),
                    self.embedding_dim(f)
                ),
            ));
        }
        Ok(())
    }

    fn validate_feature(&self, f: &FeatureSpec, at: &dyn Fn(&str) -> String) -> Result<(), SchemaError> {
        let not_for = |field: &str, present: bool| -> Result<(), SchemaError> {
            if present {
                let kind =
                    serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                return Err(SchemaError::new(at(field), format!("does not apply to a {kind} feature")));
            }
            Ok(())
        };
        if f.embedding_dim == Some(0) {
            return Err(SchemaError::new(at("embedding_dim"), "must be at least 1"));
        }
        match f.kind {
            FeatureType::Categorical | FeatureType::MultiCategorical => {
                for (field, present) in [
                    ("fill", f.fill.is_some()),
                    ("clip", f.clip.is_some()),
                    ("log1p", f.log1p.is_some()),
                    ("normalize", f.normalize.is_some()),
                    ("bucketize", f.bucketize.is_some()),
                ] {
                    not_for(field, present)?;
                }
                if f.kind == FeatureType::Categorical {
                    not_for("separator", f.separator.is_some())?;
                    not_for("pooling", f.pooling.is_some())?;
                    not_for("attention", f.attention.is_some())?;
                } else {
                    self.validate_attention(f, at)?;
                }
                if f.separator.as_deref() == Some("") {
                    return Err(SchemaError::new(at("separator"), "must not be empty"));
                }
                if f.vocabulary.is_some() && f.hashing.is_some() {
                    return Err(SchemaError::new(at("hashing"), "give either vocabulary or hashing, not both"));
                }
                if let Some(h) = &f.hashing {
                    if h.buckets == 0 || h.buckets > u32::MAX - 2 {
                        return Err(SchemaError::new(at("hashing.buckets"), "must be between 1 and 2^32 - 3"));
                    }
                }
                if let Some(v) = &f.vocabulary {
                    if v.max_size == Some(0) {
                        return Err(SchemaError::new(at("vocabulary.max_size"), "must be at least 1"));
                    }
                    if let Some(shared) = &v.shared {
                        if !valid_name(shared) {
                            return Err(SchemaError::new(
                                at("vocabulary.shared"),
                                format!("{shared:?}: use letters, digits and _ only"),
                            ));
                        }
                    }
                }
            }
            FeatureType::Numeric => {
                for (field, present) in [
                    ("vocabulary", f.vocabulary.is_some()),
                    ("hashing", f.hashing.is_some()),
                    ("separator", f.separator.is_some()),
                    ("pooling", f.pooling.is_some()),
                    ("attention", f.attention.is_some()),
                    ("embedding_dim", f.embedding_dim.is_some() && f.bucketize.is_none()),
                ] {
                    not_for(field, present)?;
                }
                if let Some(Fill::Value(v)) = f.fill {
                    if !v.is_finite() {
                        return Err(SchemaError::new(at("fill"), "must be finite"));
                    }
                }
                if let Some([Some(lo), Some(hi)]) = f.clip {
                    if lo > hi {
                        return Err(SchemaError::new(at("clip"), format!("low {lo} is above high {hi}")));
                    }
                }
                if let Some(b) = &f.bucketize {
                    if f.normalize.is_some_and(|n| n != Normalize::None) {
                        return Err(SchemaError::new(at("normalize"), "a bucketized feature is not normalized"));
                    }
                    match (&b.boundaries, b.quantiles) {
                        (Some(bounds), None) => {
                            if bounds.is_empty()
                                || bounds.iter().any(|x| !x.is_finite())
                                || bounds.windows(2).any(|w| w[0] >= w[1])
                            {
                                return Err(SchemaError::new(
                                    at("bucketize.boundaries"),
                                    "must be finite, non-empty and strictly increasing",
                                ));
                            }
                        }
                        (None, Some(q)) if q >= 2 => {}
                        (None, Some(_)) => {
                            return Err(SchemaError::new(at("bucketize.quantiles"), "must be at least 2"))
                        }
                        _ => {
                            return Err(SchemaError::new(
                                at("bucketize"),
                                "give exactly one of boundaries or quantiles",
                            ))
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Features sharing a vocabulary must agree on its settings and embedding dimension, and a
    /// shared name must not be another feature's own vocabulary.
    fn validate_shared_vocabularies(&self) -> Result<(), SchemaError> {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, f) in self.features.iter().enumerate() {
            if f.kind != FeatureType::Numeric && f.hashing.is_none() {
                groups.entry(Self::vocabulary_name(f)).or_default().push(i);
            }
        }
        for (name, members) in &groups {
            let first = &self.features[members[0]];
            for &i in &members[1..] {
                let f = &self.features[i];
                let shared = f.vocabulary.as_ref().and_then(|v| v.shared.as_ref());
                if shared.is_none() {
                    return Err(SchemaError::new(
                        format!("features[{i}].name"),
                        format!("{name:?} is already the name of a shared vocabulary"),
                    ));
                }
                if self.embedding_dim(f) != self.embedding_dim(first) {
                    return Err(SchemaError::new(
                        format!("features[{i}].embedding_dim"),
                        format!("features sharing vocabulary {name:?} need one embedding dimension ({} here, {} for features[{}])",
                            self.embedding_dim(f), self.embedding_dim(first), members[0]),
                    ));
                }
                let (a, b) = (f.vocabulary.clone().unwrap_or_default(), first.vocabulary.clone().unwrap_or_default());
                if a.min_count != b.min_count || a.max_size != b.max_size {
                    return Err(SchemaError::new(
                        format!("features[{i}].vocabulary"),
                        format!(
                            "features sharing vocabulary {name:?} need the same min_count and max_size as features[{}]",
                            members[0]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_tasks(&self) -> Result<(), SchemaError> {
        if self.tasks.is_empty() {
            return Err(SchemaError::new("tasks", "at least one task is required"));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, t) in self.tasks.iter().enumerate() {
            let at = |field: &str| format!("tasks[{i}].{field}");
            if !valid_name(&t.name) {
                return Err(SchemaError::new(at("name"), format!("{:?}: use letters, digits and _ only", t.name)));
            }
            if let Some(j) = seen.insert(&t.name, i) {
                return Err(SchemaError::new(
                    at("name"),
                    format!("duplicate task name {:?} (also tasks[{j}])", t.name),
                ));
            }
            if !(t.weight.is_finite() && t.weight >= 0.0) {
                return Err(SchemaError::new(at("weight"), "must be a finite number >= 0"));
            }
            let l = match (&t.label, t.product_of.is_empty()) {
                (Some(l), true) => l,
                (None, false) => {
                    self.validate_product(i, &seen)?;
                    continue;
                }
                (None, true) => return Err(SchemaError::new(at("label"), "required (or product_of)")),
                (Some(_), false) => {
                    return Err(SchemaError::new(
                        at("label"),
                        "a product_of task takes its label from its factors: give label or product_of",
                    ))
                }
            };
            if l.column.is_empty() {
                return Err(SchemaError::new(at("label.column"), "must not be empty"));
            }
            match t.kind {
                TaskType::Multiclass => {
                    let classes = t.classes.as_deref().unwrap_or_default();
                    if classes.len() < 2 {
                        return Err(SchemaError::new(at("classes"), "a multiclass task needs at least 2 classes"));
                    }
                    let mut uniq = classes.to_vec();
                    uniq.sort();
                    uniq.dedup();
                    if uniq.len() != classes.len() {
                        return Err(SchemaError::new(at("classes"), "class names must be unique"));
                    }
                }
                _ if t.classes.is_some() => {
                    return Err(SchemaError::new(at("classes"), "only a multiclass task has classes"));
                }
                _ => {}
            }
            let rules = [l.positive.is_some(), l.threshold.is_some(), l.map.is_some()].iter().filter(|b| **b).count();
            if rules > 1 {
                return Err(SchemaError::new(at("label"), "give at most one of positive, threshold and map"));
            }
            if l.negative.is_some() && l.positive.is_none() {
                return Err(SchemaError::new(at("label.negative"), "needs `positive` too"));
            }
            if t.kind != TaskType::Binary && (l.positive.is_some() || l.threshold.is_some()) {
                return Err(SchemaError::new(
                    at("label"),
                    "positive, negative and threshold apply to binary tasks only",
                ));
            }
            if l.log1p && t.kind != TaskType::Regression {
                return Err(SchemaError::new(at("label.log1p"), "applies to regression tasks only"));
            }
            if let Some(map) = &l.map {
                for (k, v) in map {
                    let ok = match t.kind {
                        TaskType::Binary => v.as_f64().is_some_and(|x| x == 0.0 || x == 1.0),
                        TaskType::Regression => v.as_f64().is_some_and(f64::is_finite),
                        TaskType::Multiclass => {
                            v.as_str().is_some_and(|c| t.classes.as_deref().unwrap_or_default().iter().any(|x| x == c))
                        }
                    };
                    if !ok {
                        let want = match t.kind {
                            TaskType::Binary => "0 or 1",
                            TaskType::Regression => "a number",
                            TaskType::Multiclass => "one of the task's classes",
                        };
                        return Err(SchemaError::new(
                            at(&format!("label.map.{k}")),
                            format!("must be {want}, got {v}"),
                        ));
                    }
                }
            }
            if let Some(m) = &t.mask {
                if m.column.is_empty() {
                    return Err(SchemaError::new(at("mask.column"), "must not be empty"));
                }
            }
        }
        Ok(())
    }

    /// A `product_of` task: binary, unmasked, of at least two distinct binary factors declared
    /// before it (`earlier`: their names and indices) in its scope.
    fn validate_product(&self, i: usize, earlier: &HashMap<&str, usize>) -> Result<(), SchemaError> {
        let t = &self.tasks[i];
        let at = |field: &str| format!("tasks[{i}].{field}");
        if t.kind != TaskType::Binary || t.classes.is_some() {
            return Err(SchemaError::new(at("type"), "a product_of task is binary"));
        }
        if t.mask.is_some() {
            return Err(SchemaError::new(at("mask"), "a product_of task's rows are labeled by its factors' labels"));
        }
        if t.product_of.len() < 2 {
            return Err(SchemaError::new(at("product_of"), "needs at least two tasks"));
        }
        for (k, name) in t.product_of.iter().enumerate() {
            let at = || at(&format!("product_of[{k}]"));
            let Some(&j) = earlier.get(name.as_str()).filter(|&&j| j != i) else {
                return Err(SchemaError::new(at(), format!("{name:?} names no task declared before this one")));
            };
            if t.product_of[..k].contains(name) {
                return Err(SchemaError::new(at(), format!("{name:?} is named twice")));
            }
            let factor = &self.tasks[j];
            if factor.kind != TaskType::Binary || factor.scope != t.scope {
                return Err(SchemaError::new(
                    at(),
                    format!("{name:?} must be a binary task of the same scope (tasks[{j}])"),
                ));
            }
        }
        Ok(())
    }

    fn validate_split(&self) -> Result<(), SchemaError> {
        let s = &self.split;
        let method =
            serde_json::to_value(s.method).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let not_for = |field: &str, present: bool| -> Result<(), SchemaError> {
            if present {
                return Err(SchemaError::new(
                    format!("split.{field}"),
                    format!("does not apply to split method {method:?}"),
                ));
            }
            Ok(())
        };
        let by_fraction = matches!(s.method, SplitMethod::Random | SplitMethod::User);
        not_for("fractions", s.fractions.is_some() && !by_fraction)?;
        not_for("seed", s.seed != 0 && !by_fraction)?;
        not_for("valid_from", s.valid_from.is_some() && s.method != SplitMethod::Time)?;
        not_for("test_from", s.test_from.is_some() && s.method != SplitMethod::Time)?;
        for (field, present) in [("train", s.train.is_some()), ("valid", s.valid.is_some()), ("test", s.test.is_some())]
        {
            not_for(field, present && s.method != SplitMethod::Files)?;
        }
        match s.method {
            SplitMethod::Random | SplitMethod::User => {
                let Some(f) = s.fractions else {
                    return Err(SchemaError::new("split.fractions", "required for this split method"));
                };
                for (name, x) in [("train", f.train), ("valid", f.valid), ("test", f.test)] {
                    if !(0.0..=1.0).contains(&x) {
                        return Err(SchemaError::new(
                            format!("split.fractions.{name}"),
                            format!("must be in [0, 1], got {x}"),
                        ));
                    }
                }
                let sum = f.train + f.valid + f.test;
                if (sum - 1.0).abs() > 1e-6 {
                    let shown = (sum * 1e9).round() / 1e9;
                    return Err(SchemaError::new("split.fractions", format!("must sum to 1, got {shown}")));
                }
                if f.train == 0.0 {
                    return Err(SchemaError::new(
                        "split.fractions.train",
                        "must be above 0: the pipeline is fitted on train",
                    ));
                }
                if s.method == SplitMethod::User && self.ids.user.is_none() {
                    return Err(SchemaError::new("ids.user", "required by split method \"user\""));
                }
            }
            SplitMethod::Time => {
                if self.ids.timestamp.is_none() {
                    return Err(SchemaError::new("ids.timestamp", "required by split method \"time\""));
                }
                let (valid, test) = self.time_cutoffs()?;
                if valid > test {
                    return Err(SchemaError::new("split.test_from", "must not be before valid_from"));
                }
            }
            SplitMethod::Files => {
                for (field, p) in [("train", &s.train), ("valid", &s.valid), ("test", &s.test)] {
                    if p.as_ref().is_none_or(|p| p.as_slice().is_empty()) {
                        return Err(SchemaError::new(format!("split.{field}"), "required by split method \"files\""));
                    }
                }
            }
        }
        if self.ids.timestamp.is_none() {
            for (field, set) in [
                ("ids.timestamp_unit", self.ids.timestamp_unit.is_some()),
                ("ids.timestamp_format", self.ids.timestamp_format.is_some()),
            ] {
                if set {
                    return Err(SchemaError::new(field, "applies to ids.timestamp, which is not set"));
                }
            }
        }
        Ok(())
    }

    /// The time split's cutoffs `(valid_from, test_from)` as numbers: as given, or epoch seconds
    /// for dates and RFC 3339 times.
    pub fn time_cutoffs(&self) -> Result<(f64, f64), SchemaError> {
        Ok((
            self.cutoff("split.valid_from", self.split.valid_from.as_ref())?,
            self.cutoff("split.test_from", self.split.test_from.as_ref())?,
        ))
    }

    /// A time cut-off in seconds: a number in `ids.timestamp_unit`, or a date-time.
    fn cutoff(&self, path: &str, value: Option<&serde_json::Value>) -> Result<f64, SchemaError> {
        let Some(value) = value else {
            return Err(SchemaError::new(path, "required by split method \"time\""));
        };
        let unit = self.ids.timestamp_unit.unwrap_or_default();
        if let Some(x) = value.as_f64() {
            return Ok(x / unit.per_second());
        }
        let text =
            value.as_str().ok_or_else(|| SchemaError::new(path, "must be a number, a date or an RFC 3339 time"))?;
        match crate::timestamp::timestamp_seconds(RawValue::Str(text), unit, None) {
            Ok(Some(t)) => Ok(t),
            _ => Err(SchemaError::new(path, format!("{text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))),
        }
    }
}
