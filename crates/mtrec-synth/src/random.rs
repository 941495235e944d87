//! Seeded random streams and the small numeric helpers the world is drawn with.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Independent random streams; changing one population never shifts another's draws.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    World = 1,
    Users = 2,
    Items = 3,
    Times = 4,
    Events = 5,
    /// The conversions of impressions that were not clicked (`would_convert`).
    Counterfactual = 6,
}

pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn stream_rng(seed: u64, stream: Stream) -> StdRng {
    StdRng::seed_from_u64(splitmix64(seed ^ splitmix64(stream as u64)))
}

pub(crate) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(crate) fn std_normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

/// Returns `v / |v|`, or `None` when `v` is too short to have a reliable direction.
pub(crate) fn normalized(mut v: Vec<f64>) -> Option<Vec<f64>> {
    let norm = dot(&v, &v).sqrt();
    if norm < 1e-6 {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

pub(crate) fn random_unit(rng: &mut StdRng, dim: usize) -> Vec<f64> {
    loop {
        let v: Vec<f64> = (0..dim).map(|_| std_normal(rng)).collect();
        if let Some(u) = normalized(v) {
            return u;
        }
    }
}

/// Index of the bucket of `z` given ascending cut points.
pub(crate) fn bucket(z: f64, cuts: &[f64]) -> usize {
    cuts.iter().take_while(|&&c| z >= c).count()
}

/// Draws an index with probability `softmax(logits)`.
pub(crate) fn sample_softmax(rng: &mut StdRng, logits: &[f64]) -> usize {
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

pub(crate) fn softmax3(logits: [f64; 3]) -> [f64; 3] {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e = logits.map(|l| (l - max).exp());
    let total: f64 = e.iter().sum();
    e.map(|x| x / total)
}
