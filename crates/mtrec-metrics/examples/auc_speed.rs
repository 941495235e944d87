//! Times `auc` and `gauc_by_user` on 10^7 random scores and writes the arrays for
//! `auc_reference.py` (scikit-learn's `roc_auc_score` on the same data).
//!
//! Usage: `cargo run --release --example auc_speed -- [DATA_DIR] [ROWS]`
//! (default `/tmp/auc_speed`, 10_000_000). Writes `scores.f32`, `labels.f32`, `users.u64`
//! (raw little-endian) into DATA_DIR.

use std::time::Instant;

use rand::{Rng, SeedableRng};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/auc_speed".into()));
    let rows: usize = args.next().map_or(10_000_000, |n| n.parse().expect("ROWS must be a number"));
    std::fs::create_dir_all(&dir)?;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let users: Vec<u64> = (0..rows).map(|_| rng.gen_range(0..100_000u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    let labels: Vec<f32> = (0..rows).map(|_| f32::from(u8::from(rng.gen::<f32>() < 0.2))).collect();
    // Informative scores, rounded to 1e-4 so ties occur as they do with real model outputs.
    let scores: Vec<f32> = labels.iter().map(|&y| ((rng.gen::<f32>() * 0.8 + 0.2 * y) * 1e4).round() / 1e4).collect();
    std::fs::write(dir.join("scores.f32"), scores.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
    std::fs::write(dir.join("labels.f32"), labels.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
    std::fs::write(dir.join("users.u64"), users.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;

    let best_of = |f: &dyn Fn() -> f64| {
        (0..3)
            .map(|_| {
                let start = Instant::now();
                let value = f();
                (start.elapsed().as_secs_f64(), value)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .expect("three runs")
    };
    let (auc_seconds, auc) = best_of(&|| mtrec_metrics::auc(&scores, &labels, None).expect("both classes"));
    let (gauc_seconds, gauc) =
        best_of(&|| mtrec_metrics::gauc_by_user(&scores, &labels, &users).gauc.expect("some user has both classes"));
    println!("rows={rows} threads={}", rayon::current_num_threads());
    println!("auc  = {auc:.10}  best of 3: {auc_seconds:.3} s");
    println!("gauc = {gauc:.10}  best of 3: {gauc_seconds:.3} s (grouping 10^5 users included)");
    Ok(())
}
