//! Sparse embedding step time against vocabulary size: gather, scatter of the gradient (duplicate
//! ids summed) and a lazy Adam step on the touched rows, for tables of 10^3 rows and of 10^7
//! rows, alternated in one run; beside it, the fetch floor (only reading the touched rows).
//!
//! Two comparisons. *Own ids*: each table's ids are log-uniform over its own rows, so the 10^7
//! batches also hold more distinct ids (about 785 of 1,024 lookups per table, against 355): more
//! rows to update. *Same batches*: the 10^3 batches' ids, each mapped to a fixed random row of
//! the 10^7 tables, so both sizes do exactly the same work and only the tables' size differs.
//! `sparse_step shared` gives the 8 features one table instead of one each; a second argument,
//! `rowwise_adagrad`, replaces lazy Adam (two moments per weight) with row-wise Adagrad (one value
//! per row); a third sets the large vocabulary (10^7 by default), to find where the step starts
//! to slow down. Last, on one thread, each update is run a second time on the same rows, whose
//! lines are then cached: what that second update still loses at the large size comes not from
//! fetching rows from memory but from their spread (more pages to translate, lines held further
//! from the core). Figures and command: benches/README.md.

use std::time::Instant;

use mtrec_model::embedding::{BatchIds, EmbeddingTables, FeatureData, SparseOptimizer, SparseOptimizerConfig};
use mtrec_model::layout::InputLayout;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1024;
const DIM: usize = 16;
const FEATURES: usize = 8;

struct Setup {
    tables: EmbeddingTables,
    layout: InputLayout,
    optimizer: SparseOptimizer,
    /// Per feature, 50 batches of ids over the feature's own table.
    ids: Vec<Vec<u32>>,
}

/// Per feature, 50 batches of ids: a run cycles through them.
type Batches = [Vec<u32>];

/// `shared`: the features look up one table of `vocab` rows (a vocabulary shared between them);
/// otherwise each has its own table of `vocab` rows.
fn setup(vocab: u32, shared: bool, optimizer: SparseOptimizerConfig) -> Setup {
    // FEATURES hashed categorical features, each over `vocab` buckets.
    let features: Vec<serde_json::Value> = (0..FEATURES)
        .map(|f| serde_json::json!({"name": format!("f{f}"), "column": format!("f{f}"), "side": "user",
            "transform": {"type": "categorical", "ids": {"kind": "hashing", "buckets": vocab, "seed": 0}, "embedding_dim": DIM}}))
        .collect();
    let pipeline: mtrec_schema::FeaturePipeline = serde_json::from_value(serde_json::json!({
        "format_version": 1, "dataset": "bench", "schema_hash": "", "ids": {},
        "text": {"trim_whitespace": false, "null_values": []}, "features": features, "vocabularies": {},
        "tasks": []
    }))
    .expect("valid pipeline");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let tables = if shared {
        let mut one = pipeline.clone();
        one.features.truncate(1);
        EmbeddingTables::from_pipeline(&one, &mut rng)
    } else {
        EmbeddingTables::from_pipeline(&pipeline, &mut rng)
    };
    let layout = InputLayout::new(&pipeline, |f| if shared { Some(0) } else { tables.index(&format!("f{f}")) });
    let optimizer = SparseOptimizer::new(optimizer, &tables);
    // Zipf-like ids, as real traffic: a few hot rows and a long tail.
    let ids = (0..FEATURES)
        .map(|_| {
            (0..BATCH * 50).map(|_| 2 + ((vocab as f64).powf(rng.gen::<f64>()) as u32 - 1).min(vocab - 1)).collect()
        })
        .collect();
    Setup { tables, layout, optimizer, ids }
}

/// `ids` (ids of a `from`-row table) moved to rows of a `to`-row table: each id to its own fixed
/// random row, so duplicates stay duplicates and distinct ids stay distinct.
fn spread_ids(ids: &[Vec<u32>], from: u32, to: u32) -> Vec<Vec<u32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let rows = rand::seq::index::sample(&mut rng, to as usize, from as usize);
    ids.iter().map(|feature| feature.iter().map(|&id| rows.index(id as usize) as u32).collect()).collect()
}

/// Batch `k` of the 50 a run cycles through, as the model reads it.
fn batch_data(batches: &Batches, k: usize) -> Vec<FeatureData<'_>> {
    batches.iter().map(|c| FeatureData::Ids(&c[k * BATCH..(k + 1) * BATCH])).collect()
}

/// A fixed gradient of a batch's gathered input, as the dense network would hand back.
fn input_gradient(layout: &InputLayout) -> Vec<f32> {
    (0..BATCH * layout.width).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect()
}

/// Mean seconds per step over `steps` steps, and the share of gather, scatter and update.
fn time_steps(s: &mut Setup, batches: &Batches, steps: usize) -> (f64, [f64; 3]) {
    let mut input = vec![0.0f32; BATCH * s.layout.width];
    let grad = input_gradient(&s.layout);
    let mut phases = [0.0f64; 3];
    let started = Instant::now();
    for step in 0..steps {
        let data = batch_data(batches, step % 50);
        let rows: Vec<usize> = (0..BATCH).collect();
        let t = Instant::now();
        let ids = BatchIds::new(&s.layout, &data, &rows);
        s.tables.gather(&s.layout, &data, &rows, &ids, &mut input);
        phases[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let g = s.tables.sparse_grads(&s.layout, &ids, &grad);
        phases[1] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        s.optimizer.apply(&mut s.tables, &g);
        phases[2] += t.elapsed().as_secs_f64();
    }
    let total = started.elapsed().as_secs_f64();
    (total / steps as f64, phases.map(|p| p / total))
}

/// Mean seconds of an update, and of the same update run again at once on the same rows (their
/// lines now cached), over `steps` steps.
fn time_cached_update(s: &mut Setup, batches: &Batches, steps: usize) -> (f64, f64) {
    let mut input = vec![0.0f32; BATCH * s.layout.width];
    let grad = input_gradient(&s.layout);
    let rows: Vec<usize> = (0..BATCH).collect();
    let (mut first, mut again) = (0.0, 0.0);
    for step in 0..steps {
        let data = batch_data(batches, step % 50);
        let ids = BatchIds::new(&s.layout, &data, &rows);
        s.tables.gather(&s.layout, &data, &rows, &ids, &mut input);
        let g = s.tables.sparse_grads(&s.layout, &ids, &grad);
        let t = Instant::now();
        s.optimizer.apply(&mut s.tables, &g);
        first += t.elapsed().as_secs_f64();
        let t = Instant::now();
        s.optimizer.apply(&mut s.tables, &g);
        again += t.elapsed().as_secs_f64();
    }
    (first / steps as f64, again / steps as f64)
}

/// Each table's distinct touched ids, for each of the 50 batches a run cycles through.
fn touched_ids(s: &Setup, batches: &Batches) -> Vec<Vec<Vec<u32>>> {
    let grad = vec![0.0f32; BATCH * s.layout.width];
    let rows: Vec<usize> = (0..BATCH).collect();
    (0..50)
        .map(|k| {
            let data = batch_data(batches, k);
            let ids = BatchIds::new(&s.layout, &data, &rows);
            s.tables.sparse_grads(&s.layout, &ids, &grad).into_iter().map(|g| g.ids).collect()
        })
        .collect()
}

/// Mean seconds per step to do nothing but read one value of each touched row's weights and
/// two moments, tables in parallel as in the update: the least any step must spend fetching
/// its rows, whatever it computes.
fn time_fetch_floor(s: &Setup, touched: &[Vec<Vec<u32>>], steps: usize) -> f64 {
    let started = Instant::now();
    for step in 0..steps {
        let sum: f32 = touched[step % 50]
            .par_iter()
            .zip(&s.tables.tables)
            .zip(&s.optimizer.first)
            .zip(&s.optimizer.second)
            .map(|(((ids, table), first), second)| {
                // The optimizer state has `dim` values per row, or one (row-wise Adagrad); the
                // second array may be empty.
                let state = first.len() / table.rows;
                ids.iter()
                    .map(|&id| id as usize)
                    .map(|r| table.weights[r * table.dim] + first[r * state] + second.get(r * state).unwrap_or(&0.0))
                    .sum::<f32>()
            })
            .sum();
        std::hint::black_box(sum);
    }
    started.elapsed().as_secs_f64() / steps as f64
}

fn main() {
    let usage = |got: &str| -> ! {
        eprintln!("usage: sparse_step [separate|shared] [lazy_adam|rowwise_adagrad] [LARGE_VOCAB] (got {got:?})");
        std::process::exit(2);
    };
    let shared = match std::env::args().nth(1).as_deref() {
        None | Some("separate") => false,
        Some("shared") => true,
        Some(other) => usage(other),
    };
    let optimizer = match std::env::args().nth(2).as_deref() {
        None | Some("lazy_adam") => SparseOptimizerConfig::default(),
        Some("rowwise_adagrad") => {
            SparseOptimizerConfig::RowwiseAdagrad { lr: 0.05, initial_accumulator: 0.1, eps: 1e-10 }
        }
        Some(other) => usage(other),
    };
    let steps = 300;
    let mut small = setup(1_000, shared, optimizer);
    let large_vocab = match std::env::args().nth(3) {
        None => 10_000_000,
        Some(v) => v.parse::<u32>().ok().filter(|&v| v >= 10_000).unwrap_or_else(|| usage(&v)),
    };
    let big = format!("{large_vocab:.0e}");
    let mut large = setup(large_vocab, shared, optimizer);
    let (small_ids, large_ids) = (small.ids.clone(), large.ids.clone());
    let rows = |s: &Setup| s.tables.tables[0].rows as u32;
    let same_ids = spread_ids(&small_ids, rows(&small), rows(&large));
    let touched = [touched_ids(&small, &small_ids), touched_ids(&large, &large_ids), touched_ids(&large, &same_ids)];
    let distinct: Vec<f64> = touched
        .iter()
        .map(|t| t.iter().map(|batch| batch.iter().map(Vec::len).sum::<usize>()).sum::<usize>() as f64 / 50.0)
        .collect();
    println!(
        "distinct rows updated per step: vocab 1e3 {:.0}, vocab {big} own ids {:.0}, vocab {big} same batches {:.0}",
        distinct[0], distinct[1], distinct[2]
    );
    let shares =
        |p: [f64; 3]| format!("gather {:.0}% scatter {:.0}% update {:.0}%", p[0] * 100.0, p[1] * 100.0, p[2] * 100.0);
    let (mut own_ratios, mut same_ratios, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..5 {
        let (a, pa) = time_steps(&mut small, &small_ids, steps);
        let (b, pb) = time_steps(&mut large, &large_ids, steps);
        let (c, pc) = time_steps(&mut large, &same_ids, steps);
        let fa = time_fetch_floor(&small, &touched[0], steps);
        let fb = time_fetch_floor(&large, &touched[1], steps);
        let fc = time_fetch_floor(&large, &touched[2], steps);
        println!("round {round}: vocab 1e3 {:.1} us/step ({})", a * 1e6, shares(pa));
        println!("         vocab {big}, own ids {:.1} us/step ({}), ratio {:.3}", b * 1e6, shares(pb), b / a);
        println!("         vocab {big}, same batches {:.1} us/step ({}), ratio {:.3}", c * 1e6, shares(pc), c / a);
        println!(
            "         fetch floor: vocab 1e3 {:.1} us/step, {big} own ids {:.1} us/step = {:.3} of a 1e3 step, \
             {big} same batches {:.1} us/step = {:.3}",
            fa * 1e6,
            fb * 1e6,
            fb / a,
            fc * 1e6,
            fc / a
        );
        own_ratios.push(b / a);
        same_ratios.push(c / a);
        floors.push(fc / a);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!("{:.3} (min {:.3}, max {:.3})", v[2], v[0], v[4])
    };
    println!("step time {big} / 1e3, same batches, median of 5 rounds: {}", median(&mut same_ratios));
    println!("step time {big} / 1e3, own ids, median of 5 rounds: {}", median(&mut own_ratios));
    println!("fetch floor at {big} (same batches) / step time at 1e3, median of 5 rounds: {}", median(&mut floors));
    // On one thread, so that the second update runs on the core whose caches hold the rows.
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let (small_first, small_again) = one.install(|| time_cached_update(&mut small, &small_ids, steps));
    let (large_first, large_again) = one.install(|| time_cached_update(&mut large, &same_ids, steps));
    println!(
        "one thread: update, then the same update again on its cached rows: vocab 1e3 {:.1} then {:.1} us, \
         vocab {big} same batches {:.1} then {:.1} us",
        small_first * 1e6,
        small_again * 1e6,
        large_first * 1e6,
        large_again * 1e6
    );
}
