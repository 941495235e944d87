//! The world: shared latent directions, then the users and items drawn from them.

use rand::distributions::{Distribution, WeightedIndex};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::config::SyntheticConfig;
use crate::constants::*;
use crate::random::*;

/// Directions shared by users, items and labels.
pub(crate) struct World {
    pub(crate) dim: usize,
    /// Click (and dwell) direction.
    pub(crate) w1: Vec<f64>,
    /// Conversion direction, `cos(w1, w2) = task_correlation`.
    pub(crate) w2: Vec<f64>,
    /// High-value direction in user space.
    pub(crate) w3: Vec<f64>,
    /// User-space directions that drive age, activity and account age.
    pub(crate) age_dir: Vec<f64>,
    pub(crate) activity_dir: Vec<f64>,
    pub(crate) account_dir: Vec<f64>,
    pub(crate) region_dirs: Vec<Vec<f64>>,
    /// Item-space directions of the three quality classes.
    pub(crate) quality_dirs: Vec<Vec<f64>>,
    pub(crate) centroids: Vec<Vec<f64>>,
    pub(crate) category_log_price: Vec<f64>,
}

impl World {
    pub(crate) fn new(cfg: &SyntheticConfig) -> Self {
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

pub(crate) struct Users {
    pub(crate) ids: Vec<String>,
    /// Row-major `users × dim`.
    pub(crate) latent: Vec<f64>,
    pub(crate) age: Vec<u8>,
    pub(crate) region: Vec<u8>,
    pub(crate) activity: Vec<u8>,
    pub(crate) account_age_days: Vec<Option<f64>>,
    pub(crate) device: Vec<u8>,
    pub(crate) p_high_value: Vec<f64>,
}

impl Users {
    pub(crate) fn new(cfg: &SyntheticConfig, world: &World) -> Self {
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

pub(crate) struct Items {
    pub(crate) ids: Vec<String>,
    /// Row-major `items × dim`.
    pub(crate) latent: Vec<f64>,
    pub(crate) category: Vec<u8>,
    pub(crate) price: Vec<f64>,
    /// Standardised log price, used by the conversion and quality labels.
    pub(crate) price_z: Vec<f64>,
    pub(crate) popularity: Vec<f64>,
    pub(crate) p_quality: Vec<[f64; 3]>,
}

impl Items {
    pub(crate) fn new(cfg: &SyntheticConfig, world: &World) -> Self {
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
