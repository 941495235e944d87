//! The constants of the synthetic world. They were tuned so that with the default config the
//! click base rate is about 15% and the Bayes-optimal AUC of `p_click` about 0.77: learnable,
//! but far from trivial.

/// 2026-01-01T00:00:00Z: a midnight, so `timestamp % 86400 / 3600` is the hour.
pub(crate) const START_EPOCH: i64 = 1_767_225_600;
pub(crate) const DAYS: i64 = 30;
pub(crate) const SECONDS_PER_DAY: i64 = 86_400;
/// Relative event volume per hour: quiet nights, busy evenings.
pub(crate) const HOUR_WEIGHTS: [f64; 24] = [
    0.6, 0.4, 0.3, 0.25, 0.25, 0.3, 0.5, 0.8, 1.0, 1.0, 1.0, 1.1, 1.2, 1.1, 1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 1.8,
    1.5, 1.0,
];

pub(crate) const AGE_BUCKETS: [&str; 6] = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
/// Standard-normal quantiles splitting users 12/25/22/18/13/10% across the age buckets.
pub(crate) const AGE_CUTS: [f64; 5] = [-1.175, -0.332, 0.228, 0.739, 1.2816];
pub(crate) const REGIONS: [&str; 8] = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"];
pub(crate) const ACTIVITIES: [&str; 3] = ["low", "medium", "high"];
/// Standard-normal quantiles giving 50% low, 35% medium and 15% high activity users.
pub(crate) const ACTIVITY_CUTS: [f64; 2] = [0.0, 1.036];
/// How often a user of each activity level appears.
pub(crate) const ACTIVITY_WEIGHTS: [u32; 3] = [1, 3, 9];
pub(crate) const ACCOUNT_AGE_NULL_RATE: f64 = 0.02;

pub(crate) const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
pub(crate) const DEVICE_WEIGHTS: [f64; 3] = [0.6, 0.3, 0.1];
/// Users mostly stick to their own device; the rest of the time any device is drawn.
pub(crate) const DEVICE_LOYALTY: f64 = 0.8;

pub(crate) const CATEGORIES: usize = 20;
pub(crate) const CATEGORY_NAMES: [&str; CATEGORIES] = [
    "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10", "c11", "c12", "c13", "c14", "c15", "c16", "c17",
    "c18", "c19",
];
/// Share of an item latent's variance explained by its category centroid.
pub(crate) const CENTROID_SHARE: f64 = 0.6;
pub(crate) const LOG_PRICE_MEAN: f64 = 3.0;
pub(crate) const LOG_PRICE_CATEGORY_SD: f64 = 0.6;
pub(crate) const LOG_PRICE_ITEM_SD: f64 = 0.5;
/// Roughly the overall standard deviation of log price, to standardise it.
pub(crate) const LOG_PRICE_SD: f64 = 0.8;
pub(crate) const ZIPF_S: f64 = 1.0;

pub(crate) const POSITIONS: i64 = 10;
pub(crate) const RECENT_LEN: usize = 5;

pub(crate) const CLICK_AFFINITY: f64 = 1.0;
pub(crate) const CLICK_BIAS: f64 = -1.5;
pub(crate) const CLICK_POSITION: f64 = -0.15;
pub(crate) const CLICK_DEVICE: [f64; 3] = [0.0, 0.15, -0.1];
pub(crate) const CLICK_HOUR: f64 = 0.15;
/// Hour at which the click propensity peaks (evening browsing).
pub(crate) const CLICK_PEAK_HOUR: f64 = 21.0;

pub(crate) const CONVERT_AFFINITY: f64 = 1.0;
pub(crate) const CONVERT_PRICE: f64 = -0.5;
pub(crate) const CONVERT_BIAS: f64 = -1.8;

pub(crate) const DWELL_LOG_MEAN: f64 = 3.0;
pub(crate) const DWELL_AFFINITY: f64 = 0.5;
pub(crate) const DWELL_LOG_SD: f64 = 0.6;

pub(crate) const HIGH_VALUE_LATENT: f64 = 1.0;
pub(crate) const HIGH_VALUE_AGE: [f64; 6] = [-0.6, -0.2, 0.1, 0.3, 0.4, 0.2];
pub(crate) const HIGH_VALUE_ACTIVITY: [f64; 3] = [-0.3, 0.1, 0.5];
pub(crate) const HIGH_VALUE_BIAS: f64 = -1.0;

pub(crate) const QUALITY_LABELS: [&str; 3] = ["low", "mid", "high"];
pub(crate) const QUALITY_LATENT: f64 = 1.0;
/// Expensive items lean towards high quality.
pub(crate) const QUALITY_PRICE: [f64; 3] = [-0.6, 0.0, 0.6];
pub(crate) const QUALITY_BIAS: [f64; 3] = [0.0, 0.3, -0.3];
