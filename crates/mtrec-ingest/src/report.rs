//! `ingest_report.json` and its readable summary.

use std::collections::BTreeMap;
use std::fmt;

use mtrec_schema::{FeaturePipeline, IdMapping, Side, TaskType, Transform};
use serde::Serialize;

use mtrec_schema::Split;

use crate::encode::SplitSummary;
use crate::fit::FitStats;
use crate::join::SideTable;

/// One number per split.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerSplit<T> {
    pub train: T,
    pub valid: T,
    pub test: T,
}

impl<T> PerSplit<T> {
    fn from_fn(mut f: impl FnMut(Split) -> T) -> Self {
        Self { train: f(Split::Train), valid: f(Split::Valid), test: f(Split::Test) }
    }
    fn get(&self, s: Split) -> &T {
        match s {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub dataset: String,
    pub schema_hash: String,
    pub sources: Vec<String>,
    /// The side tables joined to the log.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableReport>,
    pub rows: PerSplit<usize>,
    pub features: Vec<FeatureReport>,
    pub tasks: Vec<TaskReport>,
    /// What the data made the pipeline assume or leave out, in words (`mtrec ingest` prints
    /// them): constant or truncated features, non-finite numbers, tasks without labels or with
    /// one class, empty splits.
    pub warnings: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FeatureReport {
    pub name: String,
    /// `categorical`, `multi_categorical`, `numeric` or `bucketized`.
    pub kind: &'static str,
    /// Ids of the feature's table, reserved ids (OOV, null) included; 0 for numerics.
    pub cardinality: usize,
    /// Fraction of null rows.
    pub null_rate: PerSplit<f64>,
    /// Fraction of non-null categorical values (tokens, for multi-categorical) mapped to OOV.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oov_rate: Option<PerSplit<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashing: Option<HashReport>,
    /// Numeric features: numbers that were infinite or beyond `f32`'s range, encoded like nulls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_finite: Option<PerSplit<usize>>,
    /// Numeric features: the one value the feature takes on train (after fill, clip and log1p),
    /// when it is constant there; it is then shifted, not scaled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constant_on_train: Option<f64>,
}

/// A side table joined to the log.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub side: Side,
    pub path: String,
    pub rows: usize,
    /// The columns it gave the log.
    pub columns: Vec<String>,
    /// Log rows whose id the table lacks: their table columns are null.
    pub missing_ids: PerSplit<u64>,
}

impl TableReport {
    pub fn new(table: &SideTable, missing: [u64; 3]) -> Self {
        TableReport {
            side: table.side,
            path: table.path.display().to_string(),
            rows: table.rows(),
            columns: table.columns(),
            missing_ids: PerSplit::from_fn(|s| missing[s.index()]),
        }
    }
}

/// Hash collisions of a hashed feature, over its distinct train values.
#[derive(Debug, Clone, Serialize)]
pub struct HashReport {
    pub buckets: u32,
    pub distinct_values: usize,
    pub distinct_buckets: usize,
    /// Values sharing a bucket with another value: `distinct_values - distinct_buckets`.
    pub colliding_values: usize,
    /// What uniform hashing predicts for `colliding_values`: `n - m (1 - (1 - 1/m)^n)`.
    pub expected_colliding_values: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub name: String,
    pub kind: TaskType,
    /// Fraction of rows whose label counts (mask = 1).
    pub labeled_rate: PerSplit<f64>,
    /// Mean label over labeled rows: the positive rate of a binary task, the mean of a
    /// regression; `null` without labeled rows.
    pub label_mean: PerSplit<Option<f64>>,
    /// Multiclass: share of each class among labeled rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_rates: Option<PerSplit<BTreeMap<String, f64>>>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

pub fn build(
    pipeline: &FeaturePipeline,
    sources: Vec<String>,
    tables: Vec<TableReport>,
    splits: &[SplitSummary; 3],
    stats: &FitStats,
    mut warnings: Vec<String>,
    seconds: f64,
) -> IngestReport {
    let at = |s: Split| &splits[s.index()];
    for split in [Split::Valid, Split::Test] {
        if at(split).rows == 0 {
            warnings.push(format!(
                "the {split} split is empty{}",
                if split == Split::Valid {
                    ": training runs every epoch without early stopping and keeps the last"
                } else {
                    ": there is nothing to evaluate on it"
                }
            ));
        }
    }
    for t in &tables {
        let m = &t.missing_ids;
        if m.train + m.valid + m.test > 0 {
            warnings.push(format!(
                "table {}: {} log row(s) have an id it lacks (train {}, valid {}, test {}): their {} are null",
                t.path,
                m.train + m.valid + m.test,
                m.train,
                m.valid,
                m.test,
                t.columns.join(", ")
            ));
        }
    }
    let features = pipeline
        .features
        .iter()
        .enumerate()
        .map(|(f, feature)| {
            let counts = |s: Split| at(s).features[f];
            let (kind, categorical) = match &feature.transform {
                Transform::Categorical { .. } => ("categorical", true),
                Transform::MultiCategorical { .. } => ("multi_categorical", true),
                Transform::Numeric { .. } => ("numeric", false),
                Transform::Bucketized { .. } => ("bucketized", false),
            };
            let hashing = match &feature.transform {
                Transform::Categorical { ids: IdMapping::Hashing { buckets, seed }, .. }
                | Transform::MultiCategorical { ids: IdMapping::Hashing { buckets, seed }, .. } => {
                    let distinct = stats.hashed_distinct.get(&feature.name);
                    let n = distinct.map_or(0, |d| d.len());
                    let used: std::collections::HashSet<u32> = distinct
                        .into_iter()
                        .flatten()
                        .map(|k| mtrec_schema::pipeline::hash_id(k, *buckets, *seed))
                        .collect();
                    let m = f64::from(*buckets);
                    Some(HashReport {
                        buckets: *buckets,
                        distinct_values: n,
                        distinct_buckets: used.len(),
                        colliding_values: n - used.len(),
                        expected_colliding_values: n as f64 - m * (1.0 - (1.0 - 1.0 / m).powf(n as f64)),
                    })
                }
                _ => None,
            };
            let numeric = matches!(feature.transform, Transform::Numeric { .. } | Transform::Bucketized { .. });
            let non_finite = numeric.then(|| PerSplit::from_fn(|s| counts(s).non_finite));
            if let Some(n) = non_finite.as_ref().filter(|n| n.train + n.valid + n.test > 0) {
                warnings.push(format!(
                    "feature {:?}: {} number(s) infinite or beyond f32's range read as null (train {}, valid {}, test {})",
                    feature.name,
                    n.train + n.valid + n.test,
                    n.train,
                    n.valid,
                    n.test
                ));
            }
            let constant_on_train = stats.constant.get(&feature.name).copied();
            if let Some(value) = constant_on_train {
                warnings.push(format!(
                    "feature {:?}: constant on the train split ({value}): it carries no information; it is shifted \
                     by that value and not scaled",
                    feature.name
                ));
            }
            if let Transform::Categorical { ids: IdMapping::Vocabulary { vocabulary }, .. }
            | Transform::MultiCategorical { ids: IdMapping::Vocabulary { vocabulary }, .. } = &feature.transform
            {
                let known = pipeline.vocabularies.get(vocabulary).map_or(0, Vec::len);
                if known == 1 {
                    warnings.push(format!(
                        "feature {:?}: one category on the train split: it carries no information",
                        feature.name
                    ));
                }
            }
            FeatureReport {
                name: feature.name.clone(),
                kind,
                cardinality: pipeline.cardinality(feature),
                null_rate: PerSplit::from_fn(|s| ratio(counts(s).null_rows, counts(s).rows)),
                oov_rate: categorical.then(|| PerSplit::from_fn(|s| ratio(counts(s).oov, counts(s).values))),
                hashing,
                non_finite,
                constant_on_train,
            }
        })
        .collect();
    for (vocabulary, distinct) in &stats.truncated_vocabularies {
        let kept = pipeline.vocabularies.get(vocabulary).map_or(0, Vec::len);
        warnings.push(format!(
            "vocabulary {vocabulary:?}: the {kept} most frequent of {distinct} train values kept (max_size); the \
             others map to the out-of-vocabulary id"
        ));
    }
    let tasks = pipeline
        .tasks
        .iter()
        .enumerate()
        .map(|(t, task)| {
            let counts = |s: Split| &at(s).tasks[t];
            let train = counts(Split::Train);
            if train.labeled == 0 {
                warnings.push(format!(
                    "task {:?}: no labeled row in the train split: it is not trained (its head keeps its \
                     initial weights)",
                    task.name
                ));
            } else if task.kind == TaskType::Binary
                && (train.label_sum == 0.0 || train.label_sum == train.labeled as f64)
            {
                warnings.push(format!(
                    "task {:?}: every labeled train row is {}: the model can only learn the base rate",
                    task.name,
                    if train.label_sum == 0.0 { "negative" } else { "positive" }
                ));
            }
            for split in [Split::Valid, Split::Test] {
                if counts(split).labeled == 0 && at(split).rows > 0 {
                    warnings.push(format!(
                        "task {:?}: no labeled row in the {split} split: its metrics there are undefined",
                        task.name
                    ));
                }
            }
            TaskReport {
                name: task.name.clone(),
                kind: task.kind,
                labeled_rate: PerSplit::from_fn(|s| ratio(counts(s).labeled, at(s).rows)),
                label_mean: PerSplit::from_fn(|s| {
                    (counts(s).labeled > 0).then(|| counts(s).label_sum / counts(s).labeled as f64)
                }),
                class_rates: (task.kind == TaskType::Multiclass).then(|| {
                    PerSplit::from_fn(|s| {
                        task.classes
                            .iter()
                            .zip(&counts(s).per_class)
                            .map(|(c, n)| (c.clone(), ratio(*n, counts(s).labeled)))
                            .collect()
                    })
                }),
            }
        })
        .collect();
    IngestReport {
        dataset: pipeline.dataset.clone(),
        schema_hash: pipeline.schema_hash.clone(),
        sources,
        tables,
        rows: PerSplit::from_fn(|s| at(s).rows),
        features,
        tasks,
        warnings,
        seconds,
    }
}

impl fmt::Display for IngestReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rows;
        writeln!(out, "dataset {} ({} source file(s), {:.1}s)", self.dataset, self.sources.len(), self.seconds)?;
        writeln!(out, "rows: train {}  valid {}  test {}", r.train, r.valid, r.test)?;
        for t in &self.tables {
            writeln!(out, "table {}: {} rows, joined for {}", t.path, t.rows, t.columns.join(", "))?;
        }
        writeln!(
            out,
            "\n{:<24} {:<18} {:>11} {:>8} {:>8} {:>8}",
            "feature", "kind", "cardinality", "null%", "oov%val", "oov%test"
        )?;
        for f in &self.features {
            let oov = |s: Split| f.oov_rate.as_ref().map_or("-".to_owned(), |o| format!("{:.2}", 100.0 * o.get(s)));
            writeln!(
                out,
                "{:<24} {:<18} {:>11} {:>8.2} {:>8} {:>8}",
                f.name,
                f.kind,
                if f.cardinality == 0 { "-".to_owned() } else { f.cardinality.to_string() },
                100.0 * f.null_rate.train,
                oov(Split::Valid),
                oov(Split::Test)
            )?;
            if let Some(h) = &f.hashing {
                writeln!(
                    out,
                    "{:<24}   hashing: {} values into {} buckets, {} colliding (uniform hashing expects {:.1})",
                    "", h.distinct_values, h.buckets, h.colliding_values, h.expected_colliding_values
                )?;
            }
        }
        writeln!(out, "\n{:<24} {:<11} {:>20} {:>20} {:>20}", "task", "kind", "train", "valid", "test")?;
        for t in &self.tasks {
            let cell = |s: Split| match t.label_mean.get(s) {
                Some(m) => format!("{m:.4} ({:.0}% lab.)", 100.0 * t.labeled_rate.get(s)),
                None => "no labels".to_owned(),
            };
            let kind =
                serde_json::to_value(t.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            writeln!(
                out,
                "{:<24} {:<11} {:>20} {:>20} {:>20}",
                t.name,
                kind,
                cell(Split::Train),
                cell(Split::Valid),
                cell(Split::Test)
            )?;
        }
        write!(out, "(binary: positive rate; regression: mean; multiclass: mean class index; see ingest_report.json)")?;
        for w in &self.warnings {
            write!(out, "\nwarning: {w}")?;
        }
        Ok(())
    }
}
