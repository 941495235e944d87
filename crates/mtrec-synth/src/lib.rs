//! Deterministic synthetic interaction logs with known true probabilities.
//!
//! mtrec needs a data set where the best achievable score of every task is known, so that
//! models, losses and metrics can be checked against ground truth rather than against each
//! other. [`generate`] builds one from a seed.
//!
//! # The world
//! - **Users** (`u0`, `u1`, ...) have a latent taste vector `u ~ N(0, I/latent_dim)`. Their
//!   attributes are drawn partly from projections of `u`, so features carry signal about the
//!   latent: `age_bucket`, `region`, `activity` (low/medium/high; a user appears with weight
//!   1/3/9) and `account_age_days` (log-normal, about 2% null).
//! - **Items** (`i0`, `i1`, ...) belong to one of 20 categories. Each category has a centroid
//!   in latent space and an item's latent is `v = centroid + noise`, so the category is
//!   informative about `v`. Prices are log-normal around a per-category level; popularity is
//!   Zipf-like (`s = 1`), so a few items dominate.
//! - **Events** are spread over 30 days from 2026-01-01T00:00:00Z with a diurnal rhythm and
//!   sorted by `timestamp`. Each picks a user by activity weight and an item by popularity,
//!   with a context (`hour`, `device`, `position` 1..10). `recent_items` lists the user's last
//!   up to five clicked items before the event, most recent first, joined by `|`.
//!
//! # The labels
//! With `x = u ⊙ v` and unit vectors `w1`, `w2`, the affinities `s1 = d·(w1·x)` and
//! `s2 = d·(w2·x)` (`d = latent_dim`) have roughly unit variance.
//! - `click` ~ Bernoulli(`p_click`), `p_click = σ(a·s1 + position bias + device + hour + b)`.
//! - `convert` ~ Bernoulli(`p_convert`) for clicked rows only (0 otherwise);
//!   `p_convert = σ(a·s2 − price effect + b)` is written for every row.
//! - `dwell_time` (seconds, null without a click) is log-normal around
//!   `expected_log_dwell = 3 + 0.5·s1`.
//! - `high_value` is drawn per event from a user-level `p_high_value` (latent, age, activity).
//! - `item_quality` (`low`/`mid`/`high`) is drawn per event from an item-level softmax over
//!   the item latent and its price (`p_quality_*`).
//!
//! Every probability is written beside its label, so the Bayes-optimal score of each task
//! (for example the AUC of `p_click` against `click`) can be computed from the frame itself.
//!
//! # Task correlation
//! As in the synthetic data of the MMoE paper (Ma et al., KDD 2018, §3), `w2` is built from
//! `w1` by Gram-Schmidt: `w2 = R·w1 + sqrt(1 − R²)·w⊥` with `w⊥ ⟂ w1`, so the cosine of the
//! click and conversion directions is exactly `R = task_correlation`. `R = 1` makes the two
//! tasks share one affinity, `R = 0` makes them unrelated, `R = −1` makes them opposed.
//!
//! # Determinism
//! Every random draw comes from `StdRng` streams derived from `seed`: one for the shared
//! directions, one for users, one for items and two for events. The same config always gives
//! the same frame, and changing `rows` (or `items`) leaves the user population unchanged.

use std::f64::consts::PI;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Settings of the synthetic world; plain data so it can travel with every artifact.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of distinct users.
    pub users: usize,
    /// Number of distinct items.
    pub items: usize,
    /// Number of events (rows) in the log.
    pub rows: usize,
    /// Seed of every random stream.
    pub seed: u64,
    /// Cosine similarity of the click and conversion directions, in `[-1, 1]`.
    pub task_correlation: f64,
    /// Dimension of the user and item latent vectors, at least 2.
    pub latent_dim: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { users: 2_000, items: 1_000, rows: 200_000, seed: 42, task_correlation: 0.5, latent_dim: 8 }
    }
}

impl SyntheticConfig {
    /// Checks every field, naming the first one that is out of range.
    pub fn validate(&self) -> Result<(), SynthError> {
        let invalid = |field: &'static str, message: String| Err(SynthError::InvalidConfig { field, message });
        if self.users < 1 {
            return invalid("users", format!("must be at least 1, got {}", self.users));
        }
        if self.items < 1 {
            return invalid("items", format!("must be at least 1, got {}", self.items));
        }
        if self.rows < 1 {
            return invalid("rows", format!("must be at least 1, got {}", self.rows));
        }
        if self.latent_dim < 2 {
            return invalid(
                "latent_dim",
                format!("must be at least 2 (w2 needs a direction orthogonal to w1), got {}", self.latent_dim),
            );
        }
        // `contains` is false for NaN, so NaN is rejected too.
        if !(-1.0..=1.0).contains(&self.task_correlation) {
            return invalid("task_correlation", format!("must be in [-1, 1], got {}", self.task_correlation));
        }
        Ok(())
    }
}

/// Errors of the synthetic generator.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A config field is out of range.
    #[error("invalid synthetic config: `{field}` {message}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Polars failed to build or write the frame.
    #[error("polars error: {0}")]
    Polars(#[from] PolarsError),
    /// A file operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

// ---------------------------------------------------------------------------------------
// Constants of the world. They were tuned so that with the default config the click base
// rate is ~15% and the Bayes AUC of `p_click` is ~0.77: learnable but far from trivial.
// ---------------------------------------------------------------------------------------

/// 2026-01-01T00:00:00Z: a midnight, so `timestamp % 86400 / 3600` is the hour.
const START_EPOCH: i64 = 1_767_225_600;
const DAYS: i64 = 30;
const SECONDS_PER_DAY: i64 = 86_400;
/// Relative event volume per hour: quiet nights, busy evenings.
const HOUR_WEIGHTS: [f64; 24] = [
    0.6, 0.4, 0.3, 0.25, 0.25, 0.3, 0.5, 0.8, 1.0, 1.0, 1.0, 1.1, 1.2, 1.1, 1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 1.8,
    1.5, 1.0,
];

const AGE_BUCKETS: [&str; 6] = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
/// Standard-normal quantiles splitting users 12/25/22/18/13/10% across the age buckets.
const AGE_CUTS: [f64; 5] = [-1.175, -0.332, 0.228, 0.739, 1.2816];
const REGIONS: [&str; 8] = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"];
const ACTIVITIES: [&str; 3] = ["low", "medium", "high"];
/// Standard-normal quantiles giving 50% low, 35% medium and 15% high activity users.
const ACTIVITY_CUTS: [f64; 2] = [0.0, 1.036];
/// How often a user of each activity level appears.
const ACTIVITY_WEIGHTS: [u32; 3] = [1, 3, 9];
const ACCOUNT_AGE_NULL_RATE: f64 = 0.02;

const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
const DEVICE_WEIGHTS: [f64; 3] = [0.6, 0.3, 0.1];
/// Users mostly stick to their own device; the rest of the time any device is drawn.
const DEVICE_LOYALTY: f64 = 0.8;

const CATEGORIES: usize = 20;
const CATEGORY_NAMES: [&str; CATEGORIES] = [
    "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10", "c11", "c12", "c13", "c14", "c15", "c16", "c17",
    "c18", "c19",
];
/// Share of an item latent's variance explained by its category centroid.
const CENTROID_SHARE: f64 = 0.6;
const LOG_PRICE_MEAN: f64 = 3.0;
const LOG_PRICE_CATEGORY_SD: f64 = 0.6;
const LOG_PRICE_ITEM_SD: f64 = 0.5;
/// Roughly the overall standard deviation of log price, to standardise it.
const LOG_PRICE_SD: f64 = 0.8;
const ZIPF_S: f64 = 1.0;

const POSITIONS: i64 = 10;
const RECENT_LEN: usize = 5;

const CLICK_AFFINITY: f64 = 1.0;
const CLICK_BIAS: f64 = -1.5;
const CLICK_POSITION: f64 = -0.15;
const CLICK_DEVICE: [f64; 3] = [0.0, 0.15, -0.1];
const CLICK_HOUR: f64 = 0.15;
/// Hour at which the click propensity peaks (evening browsing).
const CLICK_PEAK_HOUR: f64 = 21.0;

const CONVERT_AFFINITY: f64 = 1.0;
const CONVERT_PRICE: f64 = -0.5;
const CONVERT_BIAS: f64 = -1.8;

const DWELL_LOG_MEAN: f64 = 3.0;
const DWELL_AFFINITY: f64 = 0.5;
const DWELL_LOG_SD: f64 = 0.6;

const HIGH_VALUE_LATENT: f64 = 1.0;
const HIGH_VALUE_AGE: [f64; 6] = [-0.6, -0.2, 0.1, 0.3, 0.4, 0.2];
const HIGH_VALUE_ACTIVITY: [f64; 3] = [-0.3, 0.1, 0.5];
const HIGH_VALUE_BIAS: f64 = -1.0;

const QUALITY_LABELS: [&str; 3] = ["low", "mid", "high"];
const QUALITY_LATENT: f64 = 1.0;
/// Expensive items lean towards high quality.
const QUALITY_PRICE: [f64; 3] = [-0.6, 0.0, 0.6];
const QUALITY_BIAS: [f64; 3] = [0.0, 0.3, -0.3];

/// Independent random streams; changing one population never shifts another's draws.
#[derive(Clone, Copy)]
enum Stream {
    World = 1,
    Users = 2,
    Items = 3,
    Times = 4,
    Events = 5,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn stream_rng(seed: u64, stream: Stream) -> StdRng {
    StdRng::seed_from_u64(splitmix64(seed ^ splitmix64(stream as u64)))
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn std_normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

/// Returns `v / |v|`, or `None` when `v` is too short to have a reliable direction.
fn normalized(mut v: Vec<f64>) -> Option<Vec<f64>> {
    let norm = dot(&v, &v).sqrt();
    if norm < 1e-6 {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

fn random_unit(rng: &mut StdRng, dim: usize) -> Vec<f64> {
    loop {
        let v: Vec<f64> = (0..dim).map(|_| std_normal(rng)).collect();
        if let Some(u) = normalized(v) {
            return u;
        }
    }
}

/// Index of the bucket of `z` given ascending cut points.
fn bucket(z: f64, cuts: &[f64]) -> usize {
    cuts.iter().take_while(|&&c| z >= c).count()
}

/// Directions shared by users, items and labels.
struct World {
    dim: usize,
    /// Click (and dwell) direction.
    w1: Vec<f64>,
    /// Conversion direction, `cos(w1, w2) = task_correlation`.
    w2: Vec<f64>,
    /// High-value direction in user space.
    w3: Vec<f64>,
    /// User-space directions that drive age, activity and account age.
    age_dir: Vec<f64>,
    activity_dir: Vec<f64>,
    account_dir: Vec<f64>,
    region_dirs: Vec<Vec<f64>>,
    /// Item-space directions of the three quality classes.
    quality_dirs: Vec<Vec<f64>>,
    centroids: Vec<Vec<f64>>,
    category_log_price: Vec<f64>,
}

impl World {
    fn new(cfg: &SyntheticConfig) -> Self {
        let dim = cfg.latent_dim;
        let mut rng = stream_rng(cfg.seed, Stream::World);
        let w1 = random_unit(&mut rng, dim);
        let w_perp = loop {
            let mut g: Vec<f64> = (0..dim).map(|_| std_normal(&mut rng)).collect();
            let along = dot(&g, &w1);
            g.iter_mut().zip(&w1).for_each(|(x, w)| *x -= along * w);
            if let Some(p) = normalized(g) {
                break p;
            }
        };
        let r = cfg.task_correlation;
        let r_perp = (1.0 - r * r).max(0.0).sqrt();
        let w2 = w1.iter().zip(&w_perp).map(|(a, b)| r * a + r_perp * b).collect();
        let w3 = random_unit(&mut rng, dim);
        let age_dir = random_unit(&mut rng, dim);
        let activity_dir = random_unit(&mut rng, dim);
        let account_dir = random_unit(&mut rng, dim);
        let region_dirs = (0..REGIONS.len()).map(|_| random_unit(&mut rng, dim)).collect();
        let quality_dirs = (0..QUALITY_LABELS.len()).map(|_| random_unit(&mut rng, dim)).collect();
        // Centroid coordinates have variance CENTROID_SHARE/d so items end at about 1/d.
        let centroid_sd = (CENTROID_SHARE / dim as f64).sqrt();
        let centroids =
            (0..CATEGORIES).map(|_| (0..dim).map(|_| centroid_sd * std_normal(&mut rng)).collect()).collect();
        let category_log_price =
            (0..CATEGORIES).map(|_| LOG_PRICE_MEAN + LOG_PRICE_CATEGORY_SD * std_normal(&mut rng)).collect();
        Self {
            dim,
            w1,
            w2,
            w3,
            age_dir,
            activity_dir,
            account_dir,
            region_dirs,
            quality_dirs,
            centroids,
            category_log_price,
        }
    }
}

struct Users {
    ids: Vec<String>,
    /// Row-major `users × dim`.
    latent: Vec<f64>,
    age: Vec<u8>,
    region: Vec<u8>,
    activity: Vec<u8>,
    account_age_days: Vec<Option<f64>>,
    device: Vec<u8>,
    p_high_value: Vec<f64>,
}

impl Users {
    fn new(cfg: &SyntheticConfig, world: &World) -> Self {
        let n = cfg.users;
        let dim = world.dim;
        let sqrt_dim = (dim as f64).sqrt();
        let mut rng = stream_rng(cfg.seed, Stream::Users);
        let latent_sd = 1.0 / sqrt_dim;
        let device_dist = WeightedIndex::new(DEVICE_WEIGHTS).expect("static weights are valid");
        let mut users = Self {
            ids: (0..n).map(|i| format!("u{i}")).collect(),
            latent: Vec::with_capacity(n * dim),
            age: Vec::with_capacity(n),
            region: Vec::with_capacity(n),
            activity: Vec::with_capacity(n),
            account_age_days: Vec::with_capacity(n),
            device: Vec::with_capacity(n),
            p_high_value: Vec::with_capacity(n),
        };
        let mut region_logits = vec![0.0; REGIONS.len()];
        // Each user consumes its draws in a fixed order, so user i is the same whatever `users`.
        for _ in 0..n {
            let u: Vec<f64> = (0..dim).map(|_| latent_sd * std_normal(&mut rng)).collect();
            // sqrt(d)·(dir·u) ~ N(0, 1): mix with noise so attributes are informative, not exact.
            let proj = |dir: &[f64]| sqrt_dim * dot(dir, &u);
            let age_z = 0.7 * proj(&world.age_dir) + 0.714 * std_normal(&mut rng);
            let age = bucket(age_z, &AGE_CUTS);
            let activity_z = 0.6 * proj(&world.activity_dir) + 0.8 * std_normal(&mut rng);
            let activity = bucket(activity_z, &ACTIVITY_CUTS);
            for (logit, dir) in region_logits.iter_mut().zip(&world.region_dirs) {
                *logit = 1.5 * proj(dir);
            }
            let region = sample_softmax(&mut rng, &region_logits);
            let log_account = 5.5 + 0.4 * proj(&world.account_dir) + 1.1 * std_normal(&mut rng);
            // Drawn even when nulled so the null mask does not shift later draws.
            let account_age = log_account.exp().round();
            let account_age = (rng.gen::<f64>() >= ACCOUNT_AGE_NULL_RATE).then_some(account_age);
            let device = device_dist.sample(&mut rng);
            let p_high_value = sigmoid(
                HIGH_VALUE_LATENT * proj(&world.w3)
                    + HIGH_VALUE_AGE[age]
                    + HIGH_VALUE_ACTIVITY[activity]
                    + HIGH_VALUE_BIAS,
            );
            users.latent.extend_from_slice(&u);
            users.age.push(age as u8);
            users.region.push(region as u8);
            users.activity.push(activity as u8);
            users.account_age_days.push(account_age);
            users.device.push(device as u8);
            users.p_high_value.push(p_high_value);
        }
        users
    }
}

/// Draws an index with probability `softmax(logits)`.
fn sample_softmax(rng: &mut StdRng, logits: &[f64]) -> usize {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    let mut target = rng.gen::<f64>() * total;
    for (i, l) in logits.iter().enumerate() {
        target -= (l - max).exp();
        if target < 0.0 {
            return i;
        }
    }
    logits.len() - 1
}

struct Items {
    ids: Vec<String>,
    /// Row-major `items × dim`.
    latent: Vec<f64>,
    category: Vec<u8>,
    price: Vec<f64>,
    /// Standardised log price, used by the conversion and quality labels.
    price_z: Vec<f64>,
    popularity: Vec<f64>,
    p_quality: Vec<[f64; 3]>,
}

impl Items {
    fn new(cfg: &SyntheticConfig, world: &World) -> Self {
        let m = cfg.items;
        let dim = world.dim;
        let sqrt_dim = (dim as f64).sqrt();
        let mut rng = stream_rng(cfg.seed, Stream::Items);
        let noise_sd = ((1.0 - CENTROID_SHARE) / dim as f64).sqrt();
        // Mildly uneven category sizes, as in real catalogues.
        let category_weights: Vec<f64> = (0..CATEGORIES).map(|c| 1.0 / ((c + 1) as f64).sqrt()).collect();
        let category_dist = WeightedIndex::new(&category_weights).expect("positive weights");
        let mut items = Self {
            ids: (0..m).map(|i| format!("i{i}")).collect(),
            latent: Vec::with_capacity(m * dim),
            category: Vec::with_capacity(m),
            price: Vec::with_capacity(m),
            price_z: Vec::with_capacity(m),
            popularity: Vec::with_capacity(m),
            p_quality: Vec::with_capacity(m),
        };
        for _ in 0..m {
            let category = category_dist.sample(&mut rng);
            let centroid = &world.centroids[category];
            let v: Vec<f64> = centroid.iter().map(|c| c + noise_sd * std_normal(&mut rng)).collect();
            let log_price = world.category_log_price[category] + LOG_PRICE_ITEM_SD * std_normal(&mut rng);
            // Whole cents, like a real catalogue; clamped so a price is never zero.
            let price = ((log_price.exp() * 100.0).round() / 100.0).max(0.01);
            let price_z = (price.ln() - LOG_PRICE_MEAN) / LOG_PRICE_SD;
            let mut logits = [0.0; 3];
            for (k, logit) in logits.iter_mut().enumerate() {
                *logit = QUALITY_LATENT * sqrt_dim * dot(&world.quality_dirs[k], &v)
                    + QUALITY_PRICE[k] * price_z
                    + QUALITY_BIAS[k];
            }
            items.latent.extend_from_slice(&v);
            items.category.push(category as u8);
            items.price.push(price);
            items.price_z.push(price_z);
            items.p_quality.push(softmax3(logits));
        }
        // Zipf ranks are shuffled so popularity is unrelated to id order and category.
        let mut ranks: Vec<usize> = (1..=m).collect();
        ranks.shuffle(&mut rng);
        items.popularity = ranks.iter().map(|&r| (r as f64).powf(-ZIPF_S)).collect();
        items
    }
}

fn softmax3(logits: [f64; 3]) -> [f64; 3] {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e = logits.map(|l| (l - max).exp());
    let total: f64 = e.iter().sum();
    e.map(|x| x / total)
}

/// Column buffers of the event log, filled row by row.
struct Events {
    user: Vec<usize>,
    item: Vec<usize>,
    timestamp: Vec<i64>,
    hour: Vec<i64>,
    device: Vec<u8>,
    position: Vec<i64>,
    /// All `recent_items` strings concatenated; row `r` is `recent_buf[recent_end[r-1]..recent_end[r]]`.
    recent_buf: String,
    recent_end: Vec<usize>,
    click: Vec<i64>,
    convert: Vec<i64>,
    dwell_time: Vec<Option<f64>>,
    high_value: Vec<i64>,
    quality: Vec<u8>,
    p_click: Vec<f64>,
    p_convert: Vec<f64>,
    expected_log_dwell: Vec<f64>,
}

/// Sorted event times over the 30 days, denser in busy hours.
fn draw_timestamps(cfg: &SyntheticConfig) -> Vec<i64> {
    let mut rng = stream_rng(cfg.seed, Stream::Times);
    let hour_dist = WeightedIndex::new(HOUR_WEIGHTS).expect("static weights are valid");
    let mut ts: Vec<i64> = (0..cfg.rows)
        .map(|_| {
            let day = rng.gen_range(0..DAYS);
            let hour = hour_dist.sample(&mut rng) as i64;
            let second = rng.gen_range(0..3_600);
            START_EPOCH + day * SECONDS_PER_DAY + hour * 3_600 + second
        })
        .collect();
    ts.sort_unstable();
    ts
}

fn simulate(cfg: &SyntheticConfig, world: &World, users: &Users, items: &Items) -> Events {
    let n = cfg.rows;
    let dim = world.dim;
    let d = dim as f64;
    let timestamp = draw_timestamps(cfg);
    let mut rng = stream_rng(cfg.seed, Stream::Events);
    let user_weights: Vec<u32> = users.activity.iter().map(|&a| ACTIVITY_WEIGHTS[a as usize]).collect();
    let user_dist = WeightedIndex::new(&user_weights).expect("at least one user, weights > 0");
    let item_dist = WeightedIndex::new(&items.popularity).expect("at least one item, weights > 0");
    let device_dist = WeightedIndex::new(DEVICE_WEIGHTS).expect("static weights are valid");
    let hour_effect: Vec<f64> =
        (0..24).map(|h| CLICK_HOUR * (2.0 * PI * (h as f64 - CLICK_PEAK_HOUR) / 24.0).cos()).collect();

    // Per-user ring of recent clicks, most recent first.
    let mut recent = vec![[0usize; RECENT_LEN]; users.ids.len()];
    let mut recent_len = vec![0u8; users.ids.len()];

    let mut ev = Events {
        user: Vec::with_capacity(n),
        item: Vec::with_capacity(n),
        hour: timestamp.iter().map(|t| (t % SECONDS_PER_DAY) / 3_600).collect(),
        timestamp,
        device: Vec::with_capacity(n),
        position: Vec::with_capacity(n),
        recent_buf: String::with_capacity(n * 8),
        recent_end: Vec::with_capacity(n),
        click: Vec::with_capacity(n),
        convert: Vec::with_capacity(n),
        dwell_time: Vec::with_capacity(n),
        high_value: Vec::with_capacity(n),
        quality: Vec::with_capacity(n),
        p_click: Vec::with_capacity(n),
        p_convert: Vec::with_capacity(n),
        expected_log_dwell: Vec::with_capacity(n),
    };

    for row in 0..n {
        let user = user_dist.sample(&mut rng);
        let item = item_dist.sample(&mut rng);
        let device =
            if rng.gen::<f64>() < DEVICE_LOYALTY { users.device[user] as usize } else { device_dist.sample(&mut rng) };
        let position = rng.gen_range(1..=POSITIONS);

        // Affinities s = d·(w·(u ⊙ v)) have roughly unit variance.
        let u = &users.latent[user * dim..(user + 1) * dim];
        let v = &items.latent[item * dim..(item + 1) * dim];
        let (mut s1, mut s2) = (0.0, 0.0);
        for k in 0..dim {
            let x = u[k] * v[k];
            s1 += world.w1[k] * x;
            s2 += world.w2[k] * x;
        }
        s1 *= d;
        s2 *= d;

        let p_click = sigmoid(
            CLICK_AFFINITY * s1
                + CLICK_POSITION * (position - 1) as f64
                + CLICK_DEVICE[device]
                + hour_effect[ev.hour[row] as usize]
                + CLICK_BIAS,
        );
        let p_convert = sigmoid(CONVERT_AFFINITY * s2 + CONVERT_PRICE * items.price_z[item] + CONVERT_BIAS);
        let expected_log_dwell = DWELL_LOG_MEAN + DWELL_AFFINITY * s1;

        // recent_items is what the user had clicked before this event.
        let len = recent_len[user] as usize;
        for (j, &it) in recent[user][..len].iter().enumerate() {
            if j > 0 {
                ev.recent_buf.push('|');
            }
            ev.recent_buf.push_str(&items.ids[it]);
        }
        ev.recent_end.push(ev.recent_buf.len());

        let click = rng.gen::<f64>() < p_click;
        let (convert, dwell) = if click {
            let convert = rng.gen::<f64>() < p_convert;
            let dwell = (expected_log_dwell + DWELL_LOG_SD * std_normal(&mut rng)).exp();
            let ring = &mut recent[user];
            ring.copy_within(0..RECENT_LEN - 1, 1);
            ring[0] = item;
            recent_len[user] = (len + 1).min(RECENT_LEN) as u8;
            (convert, Some(dwell))
        } else {
            (false, None)
        };
        let high_value = rng.gen::<f64>() < users.p_high_value[user];
        let pq = items.p_quality[item];
        let q = rng.gen::<f64>();
        let quality = if q < pq[0] {
            0
        } else if q < pq[0] + pq[1] {
            1
        } else {
            2
        };

        ev.user.push(user);
        ev.item.push(item);
        ev.device.push(device as u8);
        ev.position.push(position);
        ev.click.push(i64::from(click));
        ev.convert.push(i64::from(convert));
        ev.dwell_time.push(dwell);
        ev.high_value.push(i64::from(high_value));
        ev.quality.push(quality);
        ev.p_click.push(p_click);
        ev.p_convert.push(p_convert);
        ev.expected_log_dwell.push(expected_log_dwell);
    }
    ev
}

fn str_col<'a>(name: &str, values: impl Iterator<Item = &'a str>) -> Column {
    StringChunked::from_iter_values(name.into(), values).into_column()
}

fn i64_col(name: &str, values: Vec<i64>) -> Column {
    Int64Chunked::from_vec(name.into(), values).into_column()
}

fn f64_col(name: &str, values: Vec<f64>) -> Column {
    Float64Chunked::from_vec(name.into(), values).into_column()
}

fn opt_f64_col(name: &str, values: impl Iterator<Item = Option<f64>>) -> Column {
    Float64Chunked::from_iter_options(name.into(), values).into_column()
}

fn into_frame(ev: Events, users: &Users, items: &Items) -> Result<DataFrame, SynthError> {
    let n = ev.user.len();
    let Events {
        user,
        item,
        timestamp,
        hour,
        device,
        position,
        recent_buf,
        recent_end,
        click,
        convert,
        dwell_time,
        high_value,
        quality,
        p_click,
        p_convert,
        expected_log_dwell,
    } = ev;
    let recent = (0..n).map(|r| {
        let start = if r == 0 { 0 } else { recent_end[r - 1] };
        &recent_buf[start..recent_end[r]]
    });
    let user_f64 = |values: &[f64]| -> Vec<f64> { user.iter().map(|&u| values[u]).collect() };
    let quality_col = |k: usize| -> Vec<f64> { item.iter().map(|&i| items.p_quality[i][k]).collect() };
    let columns = vec![
        str_col("user_id", user.iter().map(|&u| users.ids[u].as_str())),
        str_col("item_id", item.iter().map(|&i| items.ids[i].as_str())),
        i64_col("timestamp", timestamp),
        str_col("age_bucket", user.iter().map(|&u| AGE_BUCKETS[users.age[u] as usize])),
        str_col("region", user.iter().map(|&u| REGIONS[users.region[u] as usize])),
        str_col("activity", user.iter().map(|&u| ACTIVITIES[users.activity[u] as usize])),
        opt_f64_col("account_age_days", user.iter().map(|&u| users.account_age_days[u])),
        str_col("category", item.iter().map(|&i| CATEGORY_NAMES[items.category[i] as usize])),
        f64_col("price", item.iter().map(|&i| items.price[i]).collect()),
        i64_col("hour", hour),
        str_col("device", device.iter().map(|&d| DEVICES[d as usize])),
        i64_col("position", position),
        str_col("recent_items", recent),
        i64_col("click", click),
        i64_col("convert", convert),
        opt_f64_col("dwell_time", dwell_time.into_iter()),
        i64_col("high_value", high_value),
        str_col("item_quality", quality.iter().map(|&q| QUALITY_LABELS[q as usize])),
        f64_col("p_click", p_click),
        f64_col("p_convert", p_convert),
        f64_col("expected_log_dwell", expected_log_dwell),
        f64_col("p_high_value", user_f64(&users.p_high_value)),
        f64_col("p_quality_low", quality_col(0)),
        f64_col("p_quality_mid", quality_col(1)),
        f64_col("p_quality_high", quality_col(2)),
    ];
    Ok(DataFrame::new(n, columns)?)
}

/// Generates the synthetic interaction log described in the crate docs.
///
/// The same config always yields a bit-identical frame.
pub fn generate(cfg: &SyntheticConfig) -> Result<DataFrame, SynthError> {
    cfg.validate()?;
    let world = World::new(cfg);
    let users = Users::new(cfg, &world);
    let items = Items::new(cfg, &world);
    let events = simulate(cfg, &world, &users, &items);
    into_frame(events, &users, &items)
}

/// Writes `df` to `path` as Parquet, atomically: readers see the old file or the whole new
/// one, never a partial write.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<(), SynthError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SynthError::Io { path: p, source }
    };
    let file_name = path.file_name().ok_or_else(|| SynthError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    // Same directory as the target so the final rename never crosses file systems.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    let result = (|| {
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let file = {
            let mut writer = std::io::BufWriter::new(file);
            ParquetWriter::new(&mut writer).finish(df)?;
            writer.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?
        };
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        // Best effort: the original error matters more than a failed cleanup.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rows: usize) -> SyntheticConfig {
        SyntheticConfig { rows, ..SyntheticConfig::default() }
    }

    fn f64s(df: &DataFrame, name: &str) -> Vec<f64> {
        df.column(name).unwrap().f64().unwrap().no_null_iter().collect()
    }

    fn i64s(df: &DataFrame, name: &str) -> Vec<i64> {
        df.column(name).unwrap().i64().unwrap().no_null_iter().collect()
    }

    fn strs(df: &DataFrame, name: &str) -> Vec<String> {
        df.column(name).unwrap().str().unwrap().no_null_iter().map(str::to_owned).collect()
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    fn pearson(a: &[f64], b: &[f64]) -> f64 {
        let (ma, mb) = (mean(a), mean(b));
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(b) {
            sab += (x - ma) * (y - mb);
            saa += (x - ma) * (x - ma);
            sbb += (y - mb) * (y - mb);
        }
        sab / (saa * sbb).sqrt()
    }

    /// Rank-based AUC (Mann-Whitney U) with average ranks for tied scores.
    fn auc(scores: &[f64], labels: &[i64]) -> f64 {
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let (mut rank_sum, mut pos) = (0.0, 0.0);
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
                j += 1;
            }
            let avg_rank = (i + j) as f64 / 2.0 + 1.0;
            for &k in &idx[i..=j] {
                if labels[k] == 1 {
                    rank_sum += avg_rank;
                    pos += 1.0;
                }
            }
            i = j + 1;
        }
        let neg = scores.len() as f64 - pos;
        (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
    }

    #[test]
    fn auc_helper_matches_hand_computed_values() {
        assert_eq!(auc(&[0.1, 0.2, 0.3, 0.4], &[0, 0, 1, 1]), 1.0);
        assert_eq!(auc(&[0.1, 0.2, 0.3, 0.4], &[1, 1, 0, 0]), 0.0);
        // Pairs (pos, neg): (0.4,0.1) win, (0.4,0.3) win, (0.2,0.1) win, (0.2,0.3) loss.
        assert_eq!(auc(&[0.1, 0.2, 0.3, 0.4], &[0, 1, 0, 1]), 0.75);
        assert_eq!(auc(&[0.5, 0.5], &[0, 1]), 0.5);
    }

    #[test]
    fn schema_has_the_documented_columns_and_dtypes() {
        let df = generate(&cfg(2_000)).unwrap();
        let expected = [
            ("user_id", DataType::String),
            ("item_id", DataType::String),
            ("timestamp", DataType::Int64),
            ("age_bucket", DataType::String),
            ("region", DataType::String),
            ("activity", DataType::String),
            ("account_age_days", DataType::Float64),
            ("category", DataType::String),
            ("price", DataType::Float64),
            ("hour", DataType::Int64),
            ("device", DataType::String),
            ("position", DataType::Int64),
            ("recent_items", DataType::String),
            ("click", DataType::Int64),
            ("convert", DataType::Int64),
            ("dwell_time", DataType::Float64),
            ("high_value", DataType::Int64),
            ("item_quality", DataType::String),
            ("p_click", DataType::Float64),
            ("p_convert", DataType::Float64),
            ("expected_log_dwell", DataType::Float64),
            ("p_high_value", DataType::Float64),
            ("p_quality_low", DataType::Float64),
            ("p_quality_mid", DataType::Float64),
            ("p_quality_high", DataType::Float64),
        ];
        let got: Vec<(String, DataType)> =
            df.columns().iter().map(|c| (c.name().to_string(), c.dtype().clone())).collect();
        let want: Vec<(String, DataType)> = expected.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
        assert_eq!(got, want);
        assert_eq!(df.height(), 2_000);
        // Only account_age_days and dwell_time may hold nulls.
        for c in df.columns() {
            if !matches!(c.name().as_str(), "account_age_days" | "dwell_time") {
                assert_eq!(c.null_count(), 0, "{} has nulls", c.name());
            }
        }
    }

    #[test]
    fn same_seed_gives_identical_frames_and_other_seed_differs() {
        let a = generate(&cfg(20_000)).unwrap();
        let b = generate(&cfg(20_000)).unwrap();
        assert!(a.equals_missing(&b));
        let c = generate(&SyntheticConfig { seed: 43, ..cfg(20_000) }).unwrap();
        assert!(!a.equals_missing(&c));
    }

    #[test]
    fn changing_rows_keeps_the_user_and_item_populations() {
        let small = generate(&cfg(5_000)).unwrap();
        let large = generate(&cfg(50_000)).unwrap();
        // Attributes of every user / item seen in both frames must agree.
        let attrs = |df: &DataFrame, key: &str, cols: &[&str]| {
            let keys = strs(df, key);
            let values: Vec<Vec<String>> = cols
                .iter()
                .map(|c| {
                    let col = df.column(c).unwrap().cast(&DataType::String).unwrap();
                    col.str().unwrap().iter().map(|v| v.unwrap_or("null").to_owned()).collect()
                })
                .collect();
            let mut map = std::collections::HashMap::new();
            for (r, k) in keys.into_iter().enumerate() {
                let row: Vec<String> = values.iter().map(|v| v[r].clone()).collect();
                map.insert(k, row);
            }
            map
        };
        let user_cols = ["age_bucket", "region", "activity", "account_age_days", "p_high_value"];
        let item_cols = ["category", "price", "p_quality_low", "p_quality_high"];
        for (key, cols) in [("user_id", &user_cols[..]), ("item_id", &item_cols[..])] {
            let a = attrs(&small, key, cols);
            let b = attrs(&large, key, cols);
            let mut shared = 0;
            for (k, row) in &a {
                if let Some(other) = b.get(k) {
                    assert_eq!(row, other, "{key} {k} changed with rows");
                    shared += 1;
                }
            }
            assert!(shared > 100, "too few shared {key}s: {shared}");
        }
        let u0_age = |df: &DataFrame| {
            let users = strs(df, "user_id");
            let ages = strs(df, "age_bucket");
            users.iter().position(|u| u == "u0").map(|r| ages[r].clone())
        };
        assert_eq!(u0_age(&small), u0_age(&large));
        assert!(u0_age(&large).is_some());
        // The whole population, including users no event picked, ignores `rows`.
        let population = |rows| {
            let cfg = cfg(rows);
            let world = World::new(&cfg);
            let users = Users::new(&cfg, &world);
            (users.latent, users.age, users.account_age_days)
        };
        assert_eq!(population(10), population(100_000));
    }

    #[test]
    fn w1_and_w2_have_cosine_task_correlation() {
        for r in [-1.0, -0.3, 0.0, 0.5, 0.9, 1.0] {
            let world = World::new(&SyntheticConfig { task_correlation: r, ..cfg(1) });
            let cos = dot(&world.w1, &world.w2);
            assert!((cos - r).abs() < 1e-12, "cos {cos} != {r}");
            assert!((dot(&world.w1, &world.w1) - 1.0).abs() < 1e-12);
            assert!((dot(&world.w2, &world.w2) - 1.0).abs() < 1e-12);
        }
    }

    /// |mean(label) − mean(p)| within 4 standard errors of the Bernoulli draws.
    fn assert_calibrated(labels: &[i64], probs: &[f64], what: &str) {
        let n = labels.len() as f64;
        let rate = labels.iter().sum::<i64>() as f64 / n;
        let expected = mean(probs);
        let se = probs.iter().map(|p| p * (1.0 - p)).sum::<f64>().sqrt() / n;
        assert!((rate - expected).abs() < 4.0 * se, "{what}: rate {rate} vs mean p {expected} (se {se})");
    }

    #[test]
    fn default_world_rates_calibration_and_bayes_auc() {
        let df = generate(&SyntheticConfig::default()).unwrap();
        assert_eq!(df.height(), 200_000);
        let click = i64s(&df, "click");
        let p_click = f64s(&df, "p_click");
        assert_calibrated(&click, &p_click, "click");
        let click_rate = mean(&click.iter().map(|&c| c as f64).collect::<Vec<_>>());
        assert!((0.10..=0.20).contains(&click_rate), "click rate {click_rate}");

        let high_value = i64s(&df, "high_value");
        assert_calibrated(&high_value, &f64s(&df, "p_high_value"), "high_value");

        // Conversions are drawn on clicked rows only.
        let convert = i64s(&df, "convert");
        let p_convert = f64s(&df, "p_convert");
        let (conv_clicked, p_conv_clicked): (Vec<i64>, Vec<f64>) = click
            .iter()
            .zip(convert.iter().zip(&p_convert))
            .filter(|(c, _)| **c == 1)
            .map(|(_, (v, p))| (*v, *p))
            .unzip();
        assert_calibrated(&conv_clicked, &p_conv_clicked, "convert | click");
        assert!(click.iter().zip(&convert).all(|(c, v)| *c == 1 || *v == 0));

        let dwell = df.column("dwell_time").unwrap().f64().unwrap().clone();
        for (c, d) in click.iter().zip(dwell.iter()) {
            assert_eq!(*c == 1, d.is_some(), "dwell_time must be null exactly when click = 0");
        }

        // Quality: each class's frequency matches its mean probability.
        let quality = strs(&df, "item_quality");
        for (k, name) in QUALITY_LABELS.iter().enumerate() {
            let hits: Vec<i64> = quality.iter().map(|q| i64::from(q == name)).collect();
            let col = ["p_quality_low", "p_quality_mid", "p_quality_high"][k];
            assert_calibrated(&hits, &f64s(&df, col), col);
        }

        let bayes_auc = auc(&p_click, &click);
        assert!((0.70..=0.85).contains(&bayes_auc), "Bayes AUC {bayes_auc}");

        let nulls = df.column("account_age_days").unwrap().null_count();
        assert!(nulls > 0, "account_age_days must exercise nulls");
        let ts = i64s(&df, "timestamp");
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "timestamps must be sorted");
        assert!(ts[0] >= START_EPOCH && *ts.last().unwrap() < START_EPOCH + 30 * SECONDS_PER_DAY);
        let hour = i64s(&df, "hour");
        assert!(ts.iter().zip(&hour).all(|(t, h)| (t - START_EPOCH) / 3_600 % 24 == *h));
        let position = i64s(&df, "position");
        assert!(position.iter().all(|p| (1..=10).contains(p)));
    }

    #[test]
    fn task_correlation_controls_click_conversion_affinity_correlation() {
        // expected_log_dwell is linear in the click affinity and logit(p_convert) in the
        // conversion affinity (plus a price term), so their correlation tracks R.
        let corr_for = |r: f64| {
            let df = generate(&SyntheticConfig { task_correlation: r, ..cfg(30_000) }).unwrap();
            let s1 = f64s(&df, "expected_log_dwell");
            let logit: Vec<f64> = f64s(&df, "p_convert").iter().map(|p| (p / (1.0 - p)).ln()).collect();
            pearson(&s1, &logit)
        };
        let corrs: Vec<f64> = [-1.0, 0.0, 0.5, 1.0].iter().map(|&r| corr_for(r)).collect();
        assert!(corrs.windows(2).all(|w| w[0] < w[1]), "not increasing: {corrs:?}");
        assert!(corrs[0] < -0.5 && corrs[1].abs() < 0.3 && corrs[3] > 0.5, "{corrs:?}");
        // Bernoulli probabilities themselves follow along.
        let p_corr = |r: f64| {
            let df = generate(&SyntheticConfig { task_correlation: r, ..cfg(30_000) }).unwrap();
            pearson(&f64s(&df, "p_click"), &f64s(&df, "p_convert"))
        };
        assert!(p_corr(0.0) < p_corr(1.0));
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases: [(SyntheticConfig, &str); 7] = [
            (SyntheticConfig { users: 0, ..cfg(10) }, "users"),
            (SyntheticConfig { items: 0, ..cfg(10) }, "items"),
            (cfg(0), "rows"),
            (SyntheticConfig { latent_dim: 1, ..cfg(10) }, "latent_dim"),
            (SyntheticConfig { task_correlation: 1.5, ..cfg(10) }, "task_correlation"),
            (SyntheticConfig { task_correlation: -1.01, ..cfg(10) }, "task_correlation"),
            (SyntheticConfig { task_correlation: f64::NAN, ..cfg(10) }, "task_correlation"),
        ];
        for (bad, name) in cases {
            match generate(&bad) {
                Err(SynthError::InvalidConfig { field, message }) => {
                    assert_eq!(field, name, "{message}");
                    let shown = SynthError::InvalidConfig { field, message }.to_string();
                    assert!(shown.contains(name), "{shown}");
                }
                other => panic!("expected InvalidConfig for {name}, got {other:?}"),
            }
        }
        assert!(SyntheticConfig::default().validate().is_ok());
    }

    #[test]
    fn recent_items_are_the_users_earlier_clicks_most_recent_first() {
        let df = generate(&SyntheticConfig { users: 200, items: 300, ..cfg(30_000) }).unwrap();
        let users = strs(&df, "user_id");
        let items = strs(&df, "item_id");
        let recent = strs(&df, "recent_items");
        let click = i64s(&df, "click");
        let mut clicked: std::collections::HashMap<&str, Vec<&str>> = Default::default();
        let mut non_empty = 0;
        for r in 0..df.height() {
            let history = clicked.entry(users[r].as_str()).or_default();
            let want: Vec<&str> = history.iter().rev().take(5).copied().collect();
            let got: Vec<&str> = if recent[r].is_empty() { Vec::new() } else { recent[r].split('|').collect() };
            assert_eq!(got, want, "row {r}");
            non_empty += usize::from(!got.is_empty());
            if click[r] == 1 {
                history.push(items[r].as_str());
            }
        }
        assert!(non_empty > df.height() / 2, "recent_items is mostly empty");
    }

    #[test]
    fn write_parquet_round_trips_and_leaves_no_temp_file() {
        let mut df = generate(&cfg(1_000)).unwrap();
        let dir = std::env::temp_dir().join(format!("mtrec-synth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.parquet");
        write_parquet(&mut df, &path).unwrap();
        let back = ParquetReader::new(File::open(&path).unwrap()).finish().unwrap();
        assert!(df.equals_missing(&back));
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1, "temp file left behind");
        let err = write_parquet(&mut df, &dir.join("missing").join("x.parquet")).unwrap_err();
        assert!(matches!(err, SynthError::Io { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
