//! Row-wise sparse optimizers of the embedding tables: each step updates only the rows a batch
//! touched (lazy Adam, Adagrad, row-wise Adagrad).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::gather::touch_rows;
use super::scatter::SparseGrad;
use super::{EmbeddingTable, EmbeddingTables};
use crate::cpu::clean_upper_state;

/// Row-wise optimizers for embedding tables.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SparseOptimizerConfig {
    /// Adam whose moments are updated only for the rows a batch touched (TensorFlow's
    /// LazyAdam); bias correction uses the global step.
    LazyAdam { lr: f64, beta1: f64, beta2: f64, eps: f64 },
    /// Adagrad: per-weight sum of squared gradients.
    Adagrad { lr: f64, initial_accumulator: f64, eps: f64 },
    /// Row-wise Adagrad (FBGEMM's and TorchRec's `EXACT_ROWWISE_ADAGRAD`): one accumulator per
    /// row, the sum over steps of the row's mean squared gradient, so the optimizer state is
    /// 1/dim of a table instead of twice its size (Adam), and a step fetches a row's weights and
    /// one value.
    RowwiseAdagrad { lr: f64, initial_accumulator: f64, eps: f64 },
}

impl SparseOptimizerConfig {
    /// Values of the first state array per table row (the second is the same or empty).
    fn state_width(&self, dim: usize) -> usize {
        match self {
            SparseOptimizerConfig::RowwiseAdagrad { .. } => 1,
            _ => dim,
        }
    }
}

impl Default for SparseOptimizerConfig {
    fn default() -> Self {
        SparseOptimizerConfig::LazyAdam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Optimizer state of every table: two buffers the size of each table (Adam's moments), or
/// Adagrad's accumulator and nothing, or row-wise Adagrad's one value per row and nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseOptimizer {
    pub config: SparseOptimizerConfig,
    /// L2 penalty on the rows a batch touched (lazy, like the update): `l2 * w` is added to
    /// their gradient. Keeps rarely seen ids from fitting the noise of their few rows.
    pub l2: f32,
    pub step: u64,
    pub first: Vec<Vec<f32>>,
    pub second: Vec<Vec<f32>>,
}

impl SparseOptimizer {
    pub fn new(config: SparseOptimizerConfig, tables: &EmbeddingTables) -> Self {
        // `dim` values per row, or one for row-wise Adagrad.
        let size = |t: &EmbeddingTable| t.rows * config.state_width(t.dim);
        let (first, second) = match config {
            SparseOptimizerConfig::LazyAdam { .. } => (
                tables.tables.iter().map(|t| vec![0.0; size(t)]).collect(),
                tables.tables.iter().map(|t| vec![0.0; size(t)]).collect(),
            ),
            SparseOptimizerConfig::Adagrad { initial_accumulator, .. }
            | SparseOptimizerConfig::RowwiseAdagrad { initial_accumulator, .. } => (
                tables.tables.iter().map(|t| vec![initial_accumulator as f32; size(t)]).collect(),
                tables.tables.iter().map(|_| Vec::new()).collect(),
            ),
        };
        Self { config, l2: 0.0, step: 0, first, second }
    }

    pub fn with_l2(mut self, l2: f32) -> Self {
        self.l2 = l2;
        self
    }

    /// Applies one step to the touched rows of every table (tables in parallel).
    pub fn apply(&mut self, tables: &mut EmbeddingTables, grads: &[SparseGrad]) {
        self.step += 1;
        let l2 = self.l2;
        // The per-row rule for this step; Adam's bias correction depends only on the step.
        let rule = match self.config {
            SparseOptimizerConfig::LazyAdam { lr, beta1, beta2, eps } => {
                let step = self.step as i32;
                let c1 = 1.0 - beta1.powi(step);
                let c2 = 1.0 - beta2.powi(step);
                RowRule::Adam {
                    step_size: (lr * c2.sqrt() / c1) as f32,
                    eps: (eps * c2.sqrt()) as f32,
                    beta1: beta1 as f32,
                    beta2: beta2 as f32,
                }
            }
            SparseOptimizerConfig::Adagrad { lr, eps, .. } => RowRule::Adagrad { lr: lr as f32, eps: eps as f32 },
            SparseOptimizerConfig::RowwiseAdagrad { lr, eps, .. } => {
                RowRule::RowwiseAdagrad { lr: lr as f32, eps: eps as f32 }
            }
        };
        let config = self.config;
        let threads = rayon::current_num_threads().max(1);
        tables
            .tables
            .par_iter_mut()
            .zip(self.first.par_iter_mut())
            .zip(self.second.par_iter_mut())
            .zip(grads.par_iter())
            .for_each(|(((table, first), second), grad)| {
                // A table with many touched rows is split into contiguous row ranges updated in
                // parallel, so that one large table does not update on one core. The ranges hold
                // about as many touched rows each (their bounds are quantiles of a sample of the
                // ids: with frequency-ordered vocabularies the hot ids are the small ones). Every
                // row's update is the same whatever the split, so results do not depend on it.
                let parts = (grad.ids.len() / SPLIT_MIN_ROWS).clamp(1, threads);
                let dim = table.dim;
                let state = config.state_width(dim);
                if parts == 1 {
                    let whole = RowState { first_row: 0, dim, state, weights: &mut table.weights, first, second };
                    whole.update(rule, l2, grad, None);
                    return;
                }
                let mut sample: Vec<u32> =
                    grad.ids.iter().step_by((grad.ids.len() / (16 * parts)).max(1)).copied().collect();
                sample.sort_unstable();
                let bounds: Vec<usize> = (1..parts).map(|p| sample[p * sample.len() / parts] as usize).collect();
                let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); parts];
                for (k, &id) in grad.ids.iter().enumerate() {
                    buckets[bounds.partition_point(|&b| b <= id as usize)].push(k as u32);
                }
                let starts: Vec<usize> = std::iter::once(0).chain(bounds).chain([table.rows]).collect();
                let jobs: Vec<_> = split_rows(&mut table.weights, &starts, dim)
                    .into_iter()
                    .zip(split_rows(first, &starts, state))
                    .zip(split_rows(second, &starts, state))
                    .zip(starts.iter().zip(buckets))
                    .map(|(((weights, first), second), (&first_row, touched))| {
                        (RowState { first_row, dim, state, weights, first, second }, touched)
                    })
                    .collect();
                jobs.into_par_iter().for_each(|(state, touched)| state.update(rule, l2, grad, Some(&touched)));
            });
    }
}

/// `values` (rows of `dim`) cut into the row ranges `starts[p]..starts[p + 1]`; an empty
/// `values` (Adagrad's unused second moment) into empty ranges.
fn split_rows<'a>(mut values: &'a mut [f32], starts: &[usize], dim: usize) -> Vec<&'a mut [f32]> {
    starts
        .windows(2)
        .map(|range| {
            if values.is_empty() {
                return Default::default();
            }
            let (part, rest) = std::mem::take(&mut values).split_at_mut((range[1] - range[0]) * dim);
            values = rest;
            part
        })
        .collect()
}

/// A contiguous range of one table's rows with their optimizer state (`state` values per row;
/// `second` is empty for both Adagrads).
struct RowState<'a> {
    first_row: usize,
    dim: usize,
    state: usize,
    weights: &'a mut [f32],
    first: &'a mut [f32],
    second: &'a mut [f32],
}

impl RowState<'_> {
    /// Updates the rows `grad.ids[k]` for `k` in `touched`, or every row of `grad` when `touched`
    /// is `None`; all of them within this range.
    fn update(self, rule: RowRule, l2: f32, grad: &SparseGrad, touched: Option<&[u32]>) {
        let Self { first_row, dim, state, weights, first, second } = self;
        clean_upper_state();
        // Chunk by chunk, copy the touched rows out, update them, copy them back. Each copy out
        // is a tight loop of independent row loads, so the CPU keeps many cache (and TLB) misses
        // in flight on a large table instead of stalling on one row's three arrays at a time;
        // writing a chunk back right away finds its rows, and their pages' translations, still
        // cached.
        // Rows of `width` values: `dim` for the weights, `state` for the optimizer's arrays.
        let copy_out = |src: &[f32], width: usize, ids: &[u32], out: &mut Vec<f32>| {
            out.clear();
            for &id in ids {
                let at = (id as usize - first_row) * width;
                out.extend_from_slice(&src[at..at + width]);
            }
        };
        let put_back = |dst: &mut [f32], width: usize, ids: &[u32], local: &[f32]| {
            for (&id, row) in ids.iter().zip(local.chunks_exact(width)) {
                let at = (id as usize - first_row) * width;
                dst[at..at + width].copy_from_slice(row);
            }
        };
        let adam = matches!(rule, RowRule::Adam { .. });
        let capacity = UPDATE_CHUNK_ROWS * dim;
        let (mut chunk_ids, mut chunk_grad) = (Vec::with_capacity(UPDATE_CHUNK_ROWS), Vec::with_capacity(capacity));
        let mut buffers = [(); 3].map(|_| Vec::with_capacity(capacity));
        let [w, a, b] = &mut buffers;
        let n = touched.map_or(grad.ids.len(), <[u32]>::len);
        for start in (0..n).step_by(UPDATE_CHUNK_ROWS) {
            let end = (start + UPDATE_CHUNK_ROWS).min(n);
            // The chunk's ids and gradient rows: slices of `grad` when it is all this range's.
            let (ids, g): (&[u32], &[f32]) = match touched {
                None => (&grad.ids[start..end], &grad.values[start * dim..end * dim]),
                Some(touched) => {
                    chunk_ids.clear();
                    chunk_grad.clear();
                    for &k in &touched[start..end] {
                        chunk_ids.push(grad.ids[k as usize]);
                        chunk_grad.extend_from_slice(&grad.values[k as usize * dim..(k as usize + 1) * dim]);
                    }
                    (&chunk_ids, &chunk_grad)
                }
            };
            touch_rows(weights, dim, first_row, ids);
            touch_rows(first, state, first_row, ids);
            if adam {
                touch_rows(second, state, first_row, ids);
            }
            copy_out(weights, dim, ids, w);
            copy_out(first, state, ids, a);
            if adam {
                copy_out(second, state, ids, b);
            }
            match rule {
                RowRule::Adam { step_size, eps, beta1, beta2 } => {
                    for i in 0..w.len() {
                        let g = g[i] + l2 * w[i];
                        a[i] = beta1 * a[i] + (1.0 - beta1) * g;
                        b[i] = beta2 * b[i] + (1.0 - beta2) * g * g;
                        w[i] -= step_size * a[i] / (b[i].sqrt() + eps);
                    }
                }
                RowRule::Adagrad { lr, eps } => {
                    for i in 0..w.len() {
                        let g = g[i] + l2 * w[i];
                        a[i] += g * g;
                        w[i] -= lr * g / (a[i].sqrt() + eps);
                    }
                }
                RowRule::RowwiseAdagrad { lr, eps } => {
                    for ((w, g), a) in w.chunks_exact_mut(dim).zip(g.chunks_exact(dim)).zip(a.iter_mut()) {
                        let squares: f32 = w.iter().zip(g).map(|(w, g)| (g + l2 * w) * (g + l2 * w)).sum();
                        *a += squares / dim as f32;
                        let step = lr / (a.sqrt() + eps);
                        w.iter_mut().zip(g).for_each(|(w, g)| *w -= step * (g + l2 * *w));
                    }
                }
            }
            put_back(weights, dim, ids, w);
            put_back(first, state, ids, a);
            if adam {
                put_back(second, state, ids, b);
            }
        }
    }
}

/// Touched rows a sparse update copies out at a time: enough independent row loads to keep the
/// CPU's misses in flight, few enough that the rows and their pages' translations are still
/// cached when the chunk is written back.
const UPDATE_CHUNK_ROWS: usize = 64;
/// Touched rows per parallel part of one table's update: below this, waking another thread
/// costs more than it saves.
const SPLIT_MIN_ROWS: usize = 1024;

/// One step's update of a touched weight, in `f32`.
#[derive(Clone, Copy)]
enum RowRule {
    Adam { step_size: f32, eps: f32, beta1: f32, beta2: f32 },
    Adagrad { lr: f32, eps: f32 },
    RowwiseAdagrad { lr: f32, eps: f32 },
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::embedding::test_support::tables;

    #[test]
    fn lazy_adam_touches_only_the_batch_rows() {
        let mut t = tables();
        let mut opt =
            SparseOptimizer::new(SparseOptimizerConfig::LazyAdam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8 }, &t);
        opt.apply(&mut t, &[SparseGrad { ids: vec![2], values: vec![1.0, -1.0] }]);
        assert_eq!(&t.tables[0].weights[..4], &[0., 0., 1., 2.]);
        assert!((t.tables[0].weights[4] - 2.9).abs() < 1e-6 && (t.tables[0].weights[5] - 4.1).abs() < 1e-6);
        assert_eq!(&t.tables[0].weights[6..], &[5., 6.]);
        assert!(opt.first[0][..4].iter().all(|&m| m == 0.0));
    }

    #[test]
    fn l2_pulls_touched_rows_toward_zero_only() {
        let mut t = tables();
        let mut opt =
            SparseOptimizer::new(SparseOptimizerConfig::Adagrad { lr: 0.5, initial_accumulator: 0.0, eps: 0.0 }, &t)
                .with_l2(1.0);
        // A zero gradient on row 3: the penalty alone moves it toward zero; row 2 stays.
        opt.apply(&mut t, &[SparseGrad { ids: vec![3], values: vec![0.0, 0.0] }]);
        assert_eq!(&t.tables[0].weights[4..6], &[3., 4.]);
        assert_eq!(&t.tables[0].weights[6..], &[4.5, 5.5]);
    }

    #[test]
    fn a_large_table_updates_the_same_split_across_threads_or_not() {
        use rand::{seq::SliceRandom, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Large enough (300,000 values) that the rows are touched before they are copied.
        let (rows, dim) = (100_000, 3);
        let table = EmbeddingTable {
            name: "t".into(),
            rows,
            dim,
            weights: (0..rows * dim).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        };
        // 5,000 distinct touched rows in random order (four parts on four threads), the first
        // and last rows of the table among them.
        let mut ids: Vec<u32> = (0..rows as u32).collect();
        ids.shuffle(&mut rng);
        ids.truncate(4_998);
        let ends: Vec<u32> = [0, rows as u32 - 1].into_iter().filter(|r| !ids.contains(r)).collect();
        ids.extend(ends);
        let values: Vec<f32> = (0..ids.len() * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let grad = SparseGrad { ids, values };
        let configs = [
            SparseOptimizerConfig::LazyAdam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            SparseOptimizerConfig::Adagrad { lr: 0.1, initial_accumulator: 0.1, eps: 1e-10 },
            SparseOptimizerConfig::RowwiseAdagrad { lr: 0.1, initial_accumulator: 0.1, eps: 1e-10 },
        ];
        for config in configs {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
                let mut t = EmbeddingTables { tables: vec![table.clone()] };
                let mut opt = SparseOptimizer::new(config, &t).with_l2(1e-3);
                pool.install(|| {
                    for _ in 0..3 {
                        opt.apply(&mut t, std::slice::from_ref(&grad));
                    }
                });
                (t, opt.first, opt.second)
            };
            let (one, four) = (run(1), run(4));
            assert_eq!(one, four, "{config:?}: split and unsplit updates differ");
            let touched: std::collections::HashSet<u32> = grad.ids.iter().copied().collect();
            for r in 0..rows {
                let (before, after) = (table.row(r as u32), four.0.tables[0].row(r as u32));
                assert_eq!(before == after, !touched.contains(&(r as u32)), "row {r}");
            }
        }
    }

    #[test]
    fn adagrad_step() {
        let mut t = tables();
        let mut opt =
            SparseOptimizer::new(SparseOptimizerConfig::Adagrad { lr: 0.5, initial_accumulator: 0.0, eps: 0.0 }, &t);
        opt.apply(&mut t, &[SparseGrad { ids: vec![1], values: vec![2.0, 0.5] }]);
        // w -= lr * g / sqrt(g^2) = lr * sign(g).
        assert_eq!(&t.tables[0].weights[2..4], &[0.5, 1.5]);
    }

    #[test]
    fn rowwise_adagrad_keeps_one_accumulator_per_row() {
        let mut t = tables();
        let config = SparseOptimizerConfig::RowwiseAdagrad { lr: 0.5, initial_accumulator: 0.0, eps: 0.0 };
        let mut opt = SparseOptimizer::new(config, &t);
        assert_eq!((opt.first[0].len(), opt.second[0].len()), (4, 0));
        let grad = SparseGrad { ids: vec![1], values: vec![2.0, 0.5] };
        opt.apply(&mut t, std::slice::from_ref(&grad));
        // The row's mean squared gradient (4 + 0.25) / 2 = 2.125 is its accumulator; each weight
        // moves by lr / sqrt(2.125) times its own gradient.
        assert_eq!(opt.first[0], [0.0, 2.125, 0.0, 0.0]);
        let step = 0.5 / 2.125f32.sqrt();
        assert_eq!(&t.tables[0].weights[2..4], &[1.0 - step * 2.0, 2.0 - step * 0.5]);
        opt.apply(&mut t, std::slice::from_ref(&grad));
        let second = 0.5 / 4.25f32.sqrt();
        assert_eq!(&t.tables[0].weights[2..4], &[1.0 - step * 2.0 - second * 2.0, 2.0 - step * 0.5 - second * 0.5]);
        // Untouched rows and their accumulators do not move.
        assert_eq!(&t.tables[0].weights[..2], &[0.0, 0.0]);
        assert_eq!(opt.first[0][0], 0.0);
    }
}
