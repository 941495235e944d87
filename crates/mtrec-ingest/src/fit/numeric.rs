//! A numeric feature's statistics, gathered batch by batch over the train rows, and the
//! transform fitted from them.
//!
//! Up to [`FitOptions::exact_values`] train rows, the raw values are kept in source order and
//! every statistic is computed exactly, as if the column were in memory. Beyond that, memory
//! stays bounded: the mean and the scaling statistics come from running sums (Welford's
//! update, exact up to rounding), minimum and maximum are tracked exactly, and the median and
//! quantile boundaries come from a uniform sample of [`FitOptions::sample_values`] train rows,
//! chosen by a seeded hash of each row's place among them, so that it is the same whatever the
//! batches. By the
//! Dvoretzky–Kiefer–Wolfowitz inequality, every quantile of a sample of k rows is within
//! `sqrt(ln(2/δ) / 2k)` of its rank in the train split with probability 1 − δ: for the default
//! k = 2^20 and δ = 10⁻⁹, within 0.32% of the rows.

use std::collections::BinaryHeap;

use mtrec_schema::{DatasetSchema, FeatureSpec, Fill, FillRule, Normalize, NumericTransform, Scale, Transform};

use crate::error::IngestError;

/// How exactly numeric statistics are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FitOptions {
    /// Train rows up to which every numeric statistic is exact.
    pub exact_values: usize,
    /// Rows in the sample that gives medians and quantiles beyond `exact_values`.
    pub sample_values: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { exact_values: 1 << 21, sample_values: 1 << 20 }
    }
}

/// The spread, relative to the values' magnitude, under which a numeric feature is constant on
/// train: the rounding residue of summing equal values is about 1e-16 of them.
const CONSTANT_RELATIVE_SPREAD: f64 = 1e-12;

/// The seed of the hash that picks the sample's rows.
const SAMPLE_SEED: u64 = 0x05EE_D5A3_D1E5_0001;

/// Running statistics of one numeric feature over the train rows.
#[derive(Debug)]
pub(crate) struct NumericStats {
    transform_of_values: NumericTransform,
    needs_quantiles: bool,
    options: FitOptions,
    /// Raw train values in source order (`None` for a null) while there are few enough.
    exact: Option<Vec<Option<f64>>>,
    /// Beyond `exact_values`: the sampled rows, as (hash of the row id, value; NaN for a null),
    /// the largest hash on top.
    sample: BinaryHeap<(u64, SampledValue)>,
    values: u64,
    nulls: u64,
    /// Sum of the raw values, in source order (the mean fill).
    sum: f64,
    /// Welford's running mean and sum of squared deviations of the transformed values.
    moments: Moments,
    transformed_min: f64,
    transformed_max: f64,
}

/// A sampled raw value, ordered by its bits only so that it can sit in a heap beside its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SampledValue(u64);

#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// These moments merged with `n` copies of `x`.
    fn with_copies(self, x: f64, n: u64) -> Moments {
        if n == 0 {
            return self;
        }
        let total = self.n + n;
        let delta = x - self.mean;
        Moments {
            n: total,
            mean: self.mean + delta * n as f64 / total as f64,
            m2: self.m2 + delta * delta * self.n as f64 * n as f64 / total as f64,
        }
    }
}

impl NumericStats {
    pub(crate) fn new(spec: &FeatureSpec, options: FitOptions) -> Self {
        let needs_quantiles = matches!(spec.fill, Some(Fill::Rule(FillRule::Median)))
            || spec.bucketize.as_ref().is_some_and(|b| b.boundaries.is_none());
        NumericStats {
            // The fill does not matter for values that are present.
            transform_of_values: NumericTransform {
                fill: 0.0,
                clip: spec.clip.unwrap_or([None, None]),
                log1p: spec.log1p.unwrap_or(false),
            },
            needs_quantiles,
            options,
            exact: Some(Vec::new()),
            sample: BinaryHeap::new(),
            values: 0,
            nulls: 0,
            sum: 0.0,
            moments: Moments::default(),
            transformed_min: f64::INFINITY,
            transformed_max: f64::NEG_INFINITY,
        }
    }

    /// Adds the next train row's value (`None` for a null or non-finite number).
    pub(crate) fn add(&mut self, value: Option<f64>) {
        let position = self.values + self.nulls;
        match value {
            Some(x) => {
                self.values += 1;
                self.sum += x;
                let t = self.transform_of_values.apply(Some(x));
                self.moments.add(t);
                self.transformed_min = self.transformed_min.min(t);
                self.transformed_max = self.transformed_max.max(t);
            }
            None => self.nulls += 1,
        }
        match &mut self.exact {
            Some(exact) => {
                exact.push(value);
                if exact.len() > self.options.exact_values {
                    let exact = self.exact.take().expect("checked");
                    if self.needs_quantiles {
                        for (position, v) in exact.into_iter().enumerate() {
                            self.sample_row(position as u64, v);
                        }
                    }
                }
            }
            None if self.needs_quantiles => self.sample_row(position, value),
            None => {}
        }
    }

    /// Offers the train row at `position` (its place among the train rows, in source order) to
    /// the sample: the rows with the smallest hashes of their positions are kept.
    fn sample_row(&mut self, position: u64, value: Option<f64>) {
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(&position.to_le_bytes(), SAMPLE_SEED);
        let entry = (hash, SampledValue(value.unwrap_or(f64::NAN).to_bits()));
        if self.sample.len() < self.options.sample_values {
            self.sample.push(entry);
        } else if self.sample.peek().is_some_and(|top| hash < top.0) {
            self.sample.pop();
            self.sample.push(entry);
        }
    }

    /// Whether no train row had a value.
    pub(crate) fn is_empty(&self) -> bool {
        self.values == 0
    }

    /// The feature's transform, and its one transformed value when all are equal.
    ///
    /// A feature constant on train cannot be scaled by its spread, which is zero (or rounding
    /// residue, about 1e-16 of the value): it is shifted by its value and not scaled (a scale
    /// of 1 for `standardize`, a range of 1 for `min_max`), so that values met later stay in
    /// proportion instead of being multiplied by 10^16. Constant means equal within a
    /// relative 1e-12.
    pub(crate) fn finish(self, schema: &DatasetSchema, spec: &FeatureSpec) -> (Transform, Option<f64>) {
        match self.exact {
            Some(ref exact) => {
                let raw: Vec<f64> = exact.iter().flatten().copied().collect();
                let nulls = exact.len() - raw.len();
                fit_exact(schema, spec, &raw, nulls)
            }
            None => self.fit_streamed(schema, spec),
        }
    }

    fn fit_streamed(self, schema: &DatasetSchema, spec: &FeatureSpec) -> (Transform, Option<f64>) {
        let mut sampled: Vec<Option<f64>> = self
            .sample
            .iter()
            .map(|(_, v)| {
                let x = f64::from_bits(v.0);
                (!x.is_nan()).then_some(x)
            })
            .collect();
        let fill = match spec.fill.clone().unwrap_or(Fill::Rule(FillRule::Mean)) {
            Fill::Value(v) => v,
            Fill::Rule(FillRule::Zero) => 0.0,
            Fill::Rule(FillRule::Mean) => self.sum / self.values as f64,
            Fill::Rule(FillRule::Median) => {
                let mut present: Vec<f64> = sampled.iter().flatten().copied().collect();
                present.sort_unstable_by(f64::total_cmp);
                present[present.len() / 2]
            }
        };
        let numeric = NumericTransform { fill, ..self.transform_of_values };
        let filled = numeric.apply(None);
        let moments = self.moments.with_copies(filled, self.nulls);
        let (mut min, mut max) = (self.transformed_min, self.transformed_max);
        if self.nulls > 0 {
            (min, max) = (min.min(filled), max.max(filled));
        }
        let constant = (max - min <= CONSTANT_RELATIVE_SPREAD * min.abs().max(max.abs())).then_some(min);
        if let Some(b) = &spec.bucketize {
            let boundaries = match &b.boundaries {
                Some(bounds) => bounds.clone(),
                None => {
                    let mut values: Vec<f64> = sampled.drain(..).map(|v| numeric.apply(v)).collect();
                    quantile_boundaries(&mut values, b.quantiles.expect("validated: boundaries or quantiles"))
                }
            };
            let transform = Transform::Bucketized { numeric, boundaries, embedding_dim: schema.embedding_dim(spec) };
            return (transform, constant);
        }
        let scale = match (spec.normalize.unwrap_or_default(), constant) {
            (Normalize::None, _) => Scale::None,
            (Normalize::Standardize, Some(value)) => Scale::Standardize { mean: value, std: 1.0 },
            (Normalize::Standardize, None) => {
                Scale::Standardize { mean: moments.mean, std: (moments.m2 / moments.n as f64).sqrt() }
            }
            (Normalize::MinMax, Some(value)) => Scale::MinMax { min: value, max: value + 1.0 },
            (Normalize::MinMax, None) => Scale::MinMax { min, max },
        };
        (Transform::Numeric { numeric, scale }, constant)
    }
}

/// The transform fitted on all raw train values in source order (`nulls` more rows were null
/// or not finite).
fn fit_exact(schema: &DatasetSchema, spec: &FeatureSpec, raw: &[f64], nulls: usize) -> (Transform, Option<f64>) {
    let fill = match spec.fill.clone().unwrap_or(Fill::Rule(FillRule::Mean)) {
        Fill::Value(v) => v,
        Fill::Rule(FillRule::Zero) => 0.0,
        Fill::Rule(FillRule::Mean) => raw.iter().sum::<f64>() / raw.len() as f64,
        Fill::Rule(FillRule::Median) => {
            let mut v = raw.to_vec();
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
        return (transform, constant);
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
    (Transform::Numeric { numeric, scale }, constant)
}

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

/// An error for a feature without a value on train: there is nothing to fit.
pub(crate) fn all_null_error(files: &[String], i: usize, spec: &FeatureSpec) -> IngestError {
    IngestError::Data(format!(
        "features[{i}] ({}): column {:?} is null in every train row ({}): nothing to fit",
        spec.name,
        spec.column(),
        files.join(", ")
    ))
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

    fn spec(json: serde_json::Value) -> (DatasetSchema, FeatureSpec) {
        let schema: DatasetSchema = serde_json::from_value(serde_json::json!({
            "name": "t", "features": [json.clone()],
            "tasks": [{"name": "y", "type": "binary", "label": {"column": "y"}}],
            "split": {"method": "random", "fractions": {"train": 0.8, "valid": 0.1, "test": 0.1}}
        }))
        .unwrap();
        (schema, serde_json::from_value(json).unwrap())
    }

    /// Deterministic skewed values with some nulls.
    fn values(n: usize) -> Vec<Option<f64>> {
        let mut state = 7u64;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                (u > 0.05).then(|| (u * 8.0).exp())
            })
            .collect()
    }

    fn fitted(spec: &(DatasetSchema, FeatureSpec), values: &[Option<f64>], options: FitOptions) -> Transform {
        let mut stats = NumericStats::new(&spec.1, options);
        values.iter().for_each(|&v| stats.add(v));
        stats.finish(&spec.0, &spec.1).0
    }

    #[test]
    fn streamed_statistics_equal_exact_ones_when_the_sample_holds_every_row() {
        let data = values(10_000);
        let streamed = FitOptions { exact_values: 10, sample_values: 1 << 20 };
        let exact = FitOptions::default();
        let scaled = spec(serde_json::json!(
            {"name": "x", "side": "item", "type": "numeric", "fill": "median", "log1p": true, "normalize": "standardize"}
        ));
        let (Transform::Numeric { numeric: a, scale: sa }, Transform::Numeric { numeric: b, scale: sb }) =
            (fitted(&scaled, &data, exact), fitted(&scaled, &data, streamed))
        else {
            panic!("numeric transforms")
        };
        assert_eq!(a, b, "the same fill (the median), clip and log1p");
        let (Scale::Standardize { mean: m1, std: s1 }, Scale::Standardize { mean: m2, std: s2 }) = (sa, sb) else {
            panic!("standardized")
        };
        assert!((m1 - m2).abs() <= 1e-12 * m1.abs() && (s1 - s2).abs() <= 1e-12 * s1, "{m1} {s1} / {m2} {s2}");
        let bucketed = spec(serde_json::json!(
            {"name": "x", "side": "item", "type": "numeric", "fill": "mean", "bucketize": {"quantiles": 10}}
        ));
        assert_eq!(fitted(&bucketed, &data, exact), fitted(&bucketed, &data, streamed));
    }

    #[test]
    fn sampled_quantiles_are_within_the_stated_rank_bound() {
        let data = values(200_000);
        let k = 4096;
        let options = FitOptions { exact_values: 10, sample_values: k };
        let bucketed = spec(serde_json::json!(
            {"name": "x", "side": "item", "type": "numeric", "fill": "zero", "bucketize": {"quantiles": 10}}
        ));
        let Transform::Bucketized { boundaries, numeric, .. } = fitted(&bucketed, &data, options) else {
            panic!("bucketized")
        };
        assert_eq!(boundaries.len(), 9);
        let mut all: Vec<f64> = data.iter().map(|&v| numeric.apply(v)).collect();
        all.sort_unstable_by(f64::total_cmp);
        // Dvoretzky–Kiefer–Wolfowitz with δ = 1e-9.
        let bound = ((2.0f64 / 1e-9).ln() / (2.0 * k as f64)).sqrt();
        for (j, b) in boundaries.iter().enumerate() {
            let rank = all.partition_point(|x| x < b) as f64 / all.len() as f64;
            let want = (j + 1) as f64 / 10.0;
            assert!((rank - want).abs() <= bound, "boundary {j}: rank {rank} vs {want} ± {bound}");
        }
    }

    #[test]
    fn moments_merge_copies_as_if_added() {
        let mut a = Moments::default();
        let mut b = Moments::default();
        for x in [1.0, 4.0, 2.5] {
            a.add(x);
            b.add(x);
        }
        for _ in 0..3 {
            b.add(7.0);
        }
        let merged = a.with_copies(7.0, 3);
        assert!((merged.mean - b.mean).abs() < 1e-12 && (merged.m2 - b.m2).abs() < 1e-9);
        assert_eq!(merged.n, 6);
    }
}
