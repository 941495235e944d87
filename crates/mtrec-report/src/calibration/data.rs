//! Clustered synthetic A/B data: users with random effects, several rows each, and two models
//! whose scores are drawn from the same distribution (A/A) unless A is given extra noise on
//! `click`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::Scenario;
use crate::input::{EvalRows, ModelScores, ReportTask, TaskKind};
use mtrec_schema::Scope;

/// The simulated tasks: two binary pair tasks, a regression and a per-user binary task, so
/// that every verdict test (clustered DeLong, DeLong, bootstrap) and the seesaw are exercised.
pub(super) fn tasks() -> Vec<ReportTask> {
    let task = |name: &str, kind: TaskKind, scope: Scope| ReportTask { name: name.to_owned(), kind, scope };
    vec![
        task("click", TaskKind::Binary, Scope::Pair),
        task("like", TaskKind::Binary, Scope::Pair),
        task("spend", TaskKind::Regression { label_log1p: false }, Scope::Pair),
        task("segment", TaskKind::Binary, Scope::User),
    ]
}

/// The task whose models differ when `click_extra_noise` is above 0.
const CLICK: usize = 0;

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

fn sigmoid(x: f64) -> f32 {
    (1.0 / (1.0 + (-x).exp())) as f32
}

fn bernoulli(rng: &mut ChaCha8Rng, p: f32) -> f32 {
    f32::from(u8::from(rng.gen::<f32>() < p))
}

/// One experiment's rows and both models' scores.
///
/// Per user `u` (with `s = scenario.user_effect`): rows `~ U{min..=max}`; per binary pair task a
/// label intercept `η_u ~ N(0, s²)` and per model an offset `δ_{k,u} ~ N(0, s²)`. Per row a
/// signal `x ~ N(0, 1)`, label `~ Bernoulli(σ(x + η_u - 1))` and model `k`'s score
/// `σ(x + η_u + δ_{k,u} + ε)`, `ε ~ N(0, σ_k²)`: `σ_k = 1`, except A's on `click`, whose
/// `σ² = 1 + click_extra_noise²`. The offsets make a model's errors on one user move together,
/// the way a user embedding does, so rows of one user are correlated in the models' difference.
/// `spend`: label `μ_u + N(0, 1)`, `μ_u ~ N(0, 1 + s²)`, prediction `μ_u + δ_{k,u} + N(0, ½²)`.
/// `segment`: one label per user from `z_u ~ N(0, 1)`, scores `σ(z_u + δ_{k,u} + N(0, 1))` per
/// row, averaged per user by the report.
pub(super) fn experiment(scenario: &Scenario, rng: &mut ChaCha8Rng) -> (EvalRows, ModelScores, ModelScores) {
    let s = scenario.user_effect;
    let tasks = tasks().len();
    let mut rows = EvalRows { labels: vec![Vec::new(); tasks], masks: vec![Vec::new(); tasks], ..EvalRows::default() };
    let mut models = ["A", "B"].map(|name| ModelScores {
        name: name.to_owned(),
        outputs: vec![Vec::new(); tasks],
        ..ModelScores::default()
    });
    let extra_noise = [(1.0 + scenario.click_extra_noise.powi(2)).sqrt(), 1.0];
    for user in 0..scenario.users as u64 {
        let count = rng.gen_range(scenario.min_rows_per_user..=scenario.max_rows_per_user);
        let intercepts = [s * normal(rng), s * normal(rng)];
        let spend_mean = (1.0 + s * s).sqrt() * normal(rng);
        let segment_latent = normal(rng);
        let segment_label = bernoulli(rng, sigmoid(2.0 * segment_latent));
        // Per model (A, B), per task: the model's offset on this user.
        let offsets: Vec<[f64; 4]> = (0..2).map(|_| [0; 4].map(|_| s * normal(rng))).collect();
        for _ in 0..count {
            rows.user.push(user);
            rows.item.push(rows.item.len() as u64);
            for (t, &intercept) in intercepts.iter().enumerate() {
                let x = normal(rng);
                rows.labels[t].push(bernoulli(rng, sigmoid(x + intercept - 1.0)));
                for (k, model) in models.iter_mut().enumerate() {
                    let noise = if t == CLICK { extra_noise[k] } else { 1.0 };
                    model.outputs[t].push(sigmoid(x + intercept + offsets[k][t] + noise * normal(rng)));
                }
            }
            let spend = spend_mean + normal(rng);
            rows.labels[2].push(spend as f32);
            rows.labels[3].push(segment_label);
            for (k, model) in models.iter_mut().enumerate() {
                model.outputs[2].push((spend_mean + offsets[k][2] + 0.5 * normal(rng)) as f32);
                model.outputs[3].push(sigmoid(segment_latent + offsets[k][3] + normal(rng)));
            }
            for mask in &mut rows.masks {
                mask.push(1);
            }
        }
    }
    let [a, b] = models;
    (rows, a, b)
}
