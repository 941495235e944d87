//! Embedding tables outside the tape, with row-wise sparse optimizers.
//!
//! dfdx's `gather` backward allocates a gradient the size of the whole table, and a dense
//! optimizer would then touch every row each step (`../shared/notes/DFDX.md` §3). Instead the
//! rows of a batch are copied into a fresh leaf tensor (`gather`), the dense network runs on the
//! tape, and the leaf's gradient is scattered back to the rows it came from, duplicate ids
//! summed (`sparse_grads`), for a lazy Adam or Adagrad step on those rows only. The cost of a
//! step is O(batch x features x dim), whatever the vocabulary size.

use mtrec_schema::{FeaturePipeline, Pooling};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cpu::clean_upper_state;
use crate::fused::{CodedBlock, InputCodes};
use crate::layout::{InputLayout, SlotSource};

/// One feature's encoded values for a set of rows, as the model reads them.
#[derive(Debug, Clone, Copy)]
pub enum FeatureData<'a> {
    Ids(&'a [u32]),
    /// Ids of row `r` are `values[offsets[r]..offsets[r + 1]]`.
    Lists {
        offsets: &'a [usize],
        values: &'a [u32],
    },
    Values(&'a [f32]),
}

/// A table of `rows x dim` weights, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingTable {
    pub name: String,
    pub rows: usize,
    pub dim: usize,
    pub weights: Vec<f32>,
}

impl EmbeddingTable {
    pub fn row(&self, id: u32) -> &[f32] {
        let start = id as usize * self.dim;
        &self.weights[start..start + self.dim]
    }
}

/// Every embedding table of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingTables {
    pub tables: Vec<EmbeddingTable>,
}

impl EmbeddingTables {
    /// One table per distinct table name of the pipeline (shared vocabularies share one),
    /// initialized uniformly in ±0.05.
    pub fn from_pipeline(pipeline: &FeaturePipeline, rng: &mut impl Rng) -> Self {
        let tables = pipeline
            .table_sizes()
            .into_iter()
            .map(|(name, (rows, dim))| {
                let weights = (0..rows * dim).map(|_| rng.gen_range(-0.05f32..0.05)).collect();
                EmbeddingTable { name, rows, dim, weights }
            })
            .collect();
        Self { tables }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.name == name)
    }

    /// Writes the input rows of `rows` into `out` (`rows.len() x layout.width`, row-major):
    /// embedding rows (pooled for lists) of `ids`, the batch's ids read by [`BatchIds::new`],
    /// and numeric values, in layout order.
    pub fn gather(
        &self,
        layout: &InputLayout,
        data: &[FeatureData<'_>],
        rows: &[usize],
        ids: &BatchIds,
        out: &mut [f32],
    ) {
        assert_eq!(out.len(), rows.len() * layout.width, "gather: output buffer has the wrong size");
        assert!(ids.rows == rows.len() && ids.slots.len() == layout.slots.len(), "gather: ids of another batch");
        if layout.width == 0 {
            return;
        }
        // Blocks of rows in parallel; within a block, slot by slot, so each inner loop is a tight
        // copy from one table with no per-element dispatch.
        let width = layout.width;
        let block = rows.len().div_ceil(rayon::current_num_threads().max(1)).max(GATHER_BLOCK_MIN);
        out.par_chunks_mut(block * width).enumerate().for_each(|(k, out)| {
            clean_upper_state();
            let first = k * block;
            let rows = &rows[first..first + out.len() / width];
            for (slot, lookups) in layout.slots.iter().zip(&ids.slots) {
                let (offset, end) = (slot.offset, slot.offset + slot.width);
                let dsts = out.chunks_exact_mut(width).map(|row| &mut row[offset..end]);
                match (&slot.source, lookups, data[slot.feature]) {
                    (SlotSource::Value, None, FeatureData::Values(v)) => {
                        dsts.zip(rows).for_each(|(dst, &r)| dst[0] = v[r]);
                    }
                    (SlotSource::Embedding { table, .. }, Some(SlotLookups::Ids(ids)), _) => {
                        let table = &self.tables[*table];
                        touch_rows(&table.weights, table.dim, 0, &ids[first..first + rows.len()]);
                        dsts.zip(&ids[first..]).for_each(|(dst, &id)| copy_row(dst, table.row(id)));
                    }
                    (SlotSource::Embedding { table, pooling }, Some(SlotLookups::Lists { offsets, ids }), _) => {
                        let table = &self.tables[*table];
                        for (b, dst) in (first..).zip(dsts) {
                            dst.fill(0.0);
                            let ids = &ids[offsets[b]..offsets[b + 1]];
                            for &id in ids {
                                dst.iter_mut().zip(table.row(id)).for_each(|(d, w)| *d += w);
                            }
                            if *pooling == Some(Pooling::Mean) && ids.len() > 1 {
                                let inv = 1.0 / ids.len() as f32;
                                dst.iter_mut().for_each(|d| *d *= inv);
                            }
                        }
                    }
                    (source, _, _) => panic!("feature {} does not match its slot {source:?}", slot.feature),
                }
            }
        });
    }

    /// Scatters the gradient of the gathered input (`rows x layout.width` for the batch of
    /// `ids`) back to the table rows, summing duplicate ids; one sparse gradient per table, its
    /// rows in order of first appearance in the batch.
    pub fn sparse_grads(&self, layout: &InputLayout, ids: &BatchIds, grad: &[f32]) -> Vec<SparseGrad> {
        assert!(
            grad.len() == ids.rows * layout.width && ids.slots.len() == layout.slots.len(),
            "sparse_grads: gradient or ids of another batch"
        );
        let rows = ids.rows;
        let slot_count = |t: usize| {
            layout
                .slots
                .iter()
                .filter(|s| matches!(s.source, SlotSource::Embedding { table, .. } if table == t))
                .count()
        };
        let lookups: Vec<usize> = (0..self.tables.len()).map(|t| rows * slot_count(t)).collect();
        // A table looked up many times (one vocabulary shared by several features) is scattered
        // in parts of the batch's rows, in parallel, then the parts are merged in row order: the
        // part count depends only on the lookups, so results do not depend on the thread count.
        // The other tables go in one contiguous group per thread, each group making one
        // row-major pass over the gradient (reading every row once, not once per table).
        let parts_of = |t: usize| (lookups[t] / SCATTER_PART_LOOKUPS).max(1).min(rows.max(1));
        let small: Vec<usize> = (0..self.tables.len()).filter(|&t| parts_of(t) == 1).collect();
        let per_group = small.len().div_ceil(rayon::current_num_threads().max(1)).max(1);
        let mut jobs: Vec<(Vec<usize>, std::ops::Range<usize>)> =
            small.chunks(per_group).map(|group| (group.to_vec(), 0..rows)).collect();
        for t in (0..self.tables.len()).filter(|&t| parts_of(t) > 1) {
            let parts = parts_of(t);
            jobs.extend((0..parts).map(|p| (vec![t], p * rows / parts..(p + 1) * rows / parts)));
        }
        let scattered: Vec<Vec<(usize, SparseGrad)>> = jobs
            .into_par_iter()
            .map(|(tables, rows)| self.scatter_rows(layout, ids, grad, &tables, rows, &lookups))
            .collect();
        let mut parts: Vec<Vec<SparseGrad>> = vec![Vec::new(); self.tables.len()];
        for (t, g) in scattered.into_iter().flatten() {
            parts[t].push(g);
        }
        parts.into_iter().zip(&self.tables).zip(&lookups).map(|((p, table), &n)| merge_parts(p, table, n)).collect()
    }

    /// The sparse gradients of `tables` from the batch rows `rows` only.
    fn scatter_rows(
        &self,
        layout: &InputLayout,
        ids: &BatchIds,
        grad: &[f32],
        tables: &[usize],
        rows: std::ops::Range<usize>,
        lookups: &[usize],
    ) -> Vec<(usize, SparseGrad)> {
        clean_upper_state();
        let slots: Vec<_> = layout
            .slots
            .iter()
            .zip(&ids.slots)
            .filter_map(|(s, l)| match (&s.source, l) {
                (SlotSource::Embedding { table, pooling }, Some(l)) => {
                    tables.iter().position(|t| t == table).map(|k| (s, *pooling, l, k))
                }
                _ => None,
            })
            .collect();
        let share = rows.len().max(1) as f64 / ids.rows.max(1) as f64;
        let mut acc: Vec<TableGrad> = tables
            .iter()
            .map(|&t| {
                let expected = (lookups[t] as f64 * share).ceil() as usize;
                TableGrad::new(self.tables[t].dim, RowIndex::new(self.tables[t].rows, expected))
            })
            .collect();
        for b in rows {
            let row_grad = &grad[b * layout.width..(b + 1) * layout.width];
            for &(slot, pooling, lookups, k) in &slots {
                let g = &row_grad[slot.offset..slot.offset + slot.width];
                match lookups {
                    SlotLookups::Ids(ids) => acc[k].add(ids[b], g, 1.0),
                    SlotLookups::Lists { offsets, ids } => {
                        let ids = &ids[offsets[b]..offsets[b + 1]];
                        let scale =
                            if pooling == Some(Pooling::Mean) && ids.len() > 1 { 1.0 / ids.len() as f32 } else { 1.0 };
                        for &id in ids {
                            acc[k].add(id, g, scale);
                        }
                    }
                }
            }
        }
        tables.iter().copied().zip(acc.into_iter().map(|a| a.out)).collect()
    }
}

/// Lookups per part when a table's scatter is split (`EmbeddingTables::sparse_grads`).
const SCATTER_PART_LOOKUPS: usize = 4096;

/// One table's sparse gradient from its parts (in row order): ids in order of first appearance,
/// the rows of an id in several parts added in part order.
fn merge_parts(parts: Vec<SparseGrad>, table: &EmbeddingTable, lookups: usize) -> SparseGrad {
    let mut parts = parts.into_iter();
    let mut out = parts.next().unwrap_or_default();
    let Some(second) = parts.next() else { return out };
    let dim = table.dim;
    let mut index = RowIndex::new(table.rows, lookups);
    for (k, &id) in out.ids.iter().enumerate() {
        index.slot(id, || k);
    }
    for part in std::iter::once(second).chain(parts) {
        for (id, row) in part.ids.iter().zip(part.values.chunks_exact(dim)) {
            let k = index.slot(*id, || {
                out.ids.push(*id);
                out.values.extend(std::iter::repeat_n(0.0, dim));
                out.ids.len() - 1
            });
            out.values[k * dim..(k + 1) * dim].iter_mut().zip(row).for_each(|(a, x)| *a += x);
        }
    }
    out
}

/// One table's sparse gradient being summed.
struct TableGrad {
    dim: usize,
    index: RowIndex,
    out: SparseGrad,
}

impl TableGrad {
    fn new(dim: usize, index: RowIndex) -> Self {
        Self { dim, index, out: SparseGrad::default() }
    }

    /// Adds `scale * g` to row `id`'s gradient.
    fn add(&mut self, id: u32, g: &[f32], scale: f32) {
        let (dim, out) = (self.dim, &mut self.out);
        let k = self.index.slot(id, || {
            out.ids.push(id);
            out.values.extend(std::iter::repeat_n(0.0, dim));
            out.ids.len() - 1
        });
        for (acc, x) in self.out.values[k * dim..(k + 1) * dim].iter_mut().zip(g) {
            *acc += scale * x;
        }
    }
}

/// Reads the first and last value of each row `ids` (rows of `dim` values, numbered from
/// `first_row`) and nothing else: a tight loop of independent loads that brings the rows' cache
/// lines in together, so that the copy which follows finds them cached instead of missing one
/// row at a time. Skipped for arrays under [`TOUCH_MIN_VALUES`]. (Prefetch instructions, through
/// pulp's safe wrapper, did no better: benches/README.md, sparse embedding step.)
#[inline]
fn touch_rows(values: &[f32], dim: usize, first_row: usize, ids: &[u32]) {
    if values.len() < TOUCH_MIN_VALUES {
        return;
    }
    let sum: f32 = ids
        .iter()
        .map(|&id| {
            let start = (id as usize - first_row) * dim;
            values[start] + values[start + dim - 1]
        })
        .sum();
    std::hint::black_box(sum);
}

/// Arrays of fewer values (1 MiB of `f32`, twice a core's L2 here) are not touched first: they
/// stay cached, and the extra loads would only cost.
const TOUCH_MIN_VALUES: usize = 1 << 18;

/// Fewest rows a thread gathers: below this, waking another thread costs more than it saves.
const GATHER_BLOCK_MIN: usize = 256;

/// Copies a short row; the common widths become plain moves instead of a `memcpy` call, which
/// matters when a batch copies tens of thousands of 4-wide rows.
#[inline]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    match dst.len() {
        4 => dst[..4].copy_from_slice(&src[..4]),
        8 => dst[..8].copy_from_slice(&src[..8]),
        16 => dst[..16].copy_from_slice(&src[..16]),
        _ => dst.copy_from_slice(src),
    }
}

/// A batch's embedding ids, read once from the dataset's columns into batch order. The
/// columns are read at shuffled rows; the gather and the gradient scatter then both walk these
/// ids in order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchIds {
    rows: usize,
    /// Per layout slot; `None` for numeric slots.
    slots: Vec<Option<SlotLookups>>,
}

impl BatchIds {
    pub fn new(layout: &InputLayout, data: &[FeatureData<'_>], rows: &[usize]) -> Self {
        let slots = layout
            .slots
            .par_iter()
            .map(|slot| {
                clean_upper_state();
                match (&slot.source, data[slot.feature]) {
                    (SlotSource::Embedding { .. }, FeatureData::Ids(ids)) => {
                        Some(SlotLookups::Ids(rows.iter().map(|&r| ids[r]).collect()))
                    }
                    (SlotSource::Embedding { .. }, FeatureData::Lists { offsets, values }) => {
                        let mut starts = Vec::with_capacity(rows.len() + 1);
                        let mut ids = Vec::new();
                        starts.push(0);
                        for &r in rows {
                            ids.extend_from_slice(&values[offsets[r]..offsets[r + 1]]);
                            starts.push(ids.len());
                        }
                        Some(SlotLookups::Lists { offsets: starts, ids })
                    }
                    (SlotSource::Embedding { .. }, FeatureData::Values(_)) => {
                        panic!("feature {} has values, its slot an embedding", slot.feature)
                    }
                    (SlotSource::Value, _) => None,
                }
            })
            .collect();
        Self { rows: rows.len(), slots }
    }

    /// The batch's row count.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The ids of consecutive parts of a batch (read by [`BatchIds::new`] with the same layout
    /// and data) as the ids of the whole batch, rows in part order.
    pub fn concat(parts: &[BatchIds]) -> BatchIds {
        let slot_count = parts.first().map_or(0, |p| p.slots.len());
        assert!(parts.iter().all(|p| p.slots.len() == slot_count), "BatchIds::concat: parts of other layouts");
        let slots = (0..slot_count)
            .map(|s| {
                let mut merged = parts[0].slots[s].clone()?;
                for part in &parts[1..] {
                    match (&mut merged, &part.slots[s]) {
                        (SlotLookups::Ids(ids), Some(SlotLookups::Ids(more))) => ids.extend_from_slice(more),
                        (
                            SlotLookups::Lists { offsets, ids },
                            Some(SlotLookups::Lists { offsets: more_offsets, ids: more }),
                        ) => {
                            let base = ids.len();
                            offsets.extend(more_offsets[1..].iter().map(|o| o + base));
                            ids.extend_from_slice(more);
                        }
                        _ => panic!("BatchIds::concat: slot {s} differs between parts"),
                    }
                }
                Some(merged)
            })
            .collect();
        BatchIds { rows: parts.iter().map(|p| p.rows).sum(), slots }
    }

    /// Each single-id embedding slot's rows coded by distinct id (`fused::InputCodes`), for the
    /// slots where at most `max_share` of the rows hold distinct ids; list slots (pooled) and
    /// numeric ones are left out.
    pub fn codes(&self, layout: &InputLayout, max_share: f64) -> InputCodes {
        let most = (self.rows as f64 * max_share).floor() as usize;
        let blocks = layout
            .slots
            .par_iter()
            .zip(&self.slots)
            .filter_map(|(slot, lookups)| {
                clean_upper_state();
                let Some(SlotLookups::Ids(ids)) = lookups else { return None };
                let mut first_rows: Vec<u32> = Vec::new();
                let mut codes = Vec::with_capacity(ids.len());
                // Ids of small vocabularies index a direct array; others a hash map.
                let top = ids.iter().copied().max().unwrap_or(0) as usize;
                let mut index = RowIndex::new(top + 1, ids.len());
                for (r, &id) in ids.iter().enumerate() {
                    let code = index.slot(id, || {
                        first_rows.push(r as u32);
                        first_rows.len() - 1
                    });
                    if first_rows.len() > most {
                        return None;
                    }
                    codes.push(code as u32);
                }
                Some(CodedBlock { offset: slot.offset, width: slot.width, codes, first_rows })
            })
            .collect();
        InputCodes { rows: self.rows, blocks }
    }
}

/// One embedding slot's ids for a batch, in batch order.
#[derive(Debug, Clone, PartialEq)]
enum SlotLookups {
    Ids(Vec<u32>),
    /// Row `b`'s ids are `ids[offsets[b]..offsets[b + 1]]`.
    Lists {
        offsets: Vec<usize>,
        ids: Vec<u32>,
    },
}

/// Where each touched row's gradient sits in a [`SparseGrad`]. A table no larger than a few
/// times the batch's lookups gets a direct array (no hashing); a larger one a hash map, so a
/// step's cost stays O(batch) whatever the vocabulary size.
enum RowIndex {
    Direct(Vec<u32>),
    Hashed(IdMap),
}

impl RowIndex {
    const ABSENT: u32 = u32::MAX;

    fn new(table_rows: usize, lookups: usize) -> Self {
        if table_rows <= 4 * lookups.max(256) {
            RowIndex::Direct(vec![Self::ABSENT; table_rows])
        } else {
            RowIndex::Hashed(IdMap::with_capacity(lookups))
        }
    }

    /// The position of `id`, inserting it with `insert()` on first sight.
    fn slot(&mut self, id: u32, insert: impl FnOnce() -> usize) -> usize {
        match self {
            RowIndex::Direct(at) => {
                let cell = &mut at[id as usize];
                if *cell == Self::ABSENT {
                    *cell = insert() as u32;
                }
                *cell as usize
            }
            RowIndex::Hashed(map) => map.slot(id, insert),
        }
    }
}

/// Id → position for a batch's ids of a large table: open addressing with linear probing over
/// a power-of-two array kept at most half full, ids spread by a multiplication (Fibonacci
/// hashing), each entry `(id, position)` in one 8-byte cell so that a probe reads one line.
/// A general-purpose map spends more per lookup on hashing and metadata; a batch does a few
/// thousand lookups per table.
struct IdMap {
    cells: Vec<(u32, u32)>,
    /// 64 minus log2 of the cell count: the multiplied id's top bits pick the home cell.
    shift: u32,
    len: usize,
}

impl IdMap {
    const EMPTY: u32 = u32::MAX;

    fn with_capacity(ids: usize) -> Self {
        let cells = (2 * ids.max(8)).next_power_of_two();
        IdMap { cells: vec![(0, Self::EMPTY); cells], shift: 64 - cells.trailing_zeros(), len: 0 }
    }

    fn home(&self, id: u32) -> usize {
        (u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The position of `id`, inserting it with `insert()` on first sight.
    fn slot(&mut self, id: u32, insert: impl FnOnce() -> usize) -> usize {
        if 2 * (self.len + 1) > self.cells.len() {
            self.grow();
        }
        let mask = self.cells.len() - 1;
        let mut at = self.home(id);
        loop {
            let (key, position) = self.cells[at];
            if position == Self::EMPTY {
                let position = insert();
                self.cells[at] = (id, u32::try_from(position).expect("fewer than 2^32 touched rows"));
                self.len += 1;
                return position;
            }
            if key == id {
                return position as usize;
            }
            at = (at + 1) & mask;
        }
    }

    /// Doubles the cells and reinserts every entry.
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.cells);
        *self = IdMap { cells: vec![(0, Self::EMPTY); 2 * old.len()], shift: self.shift - 1, len: 0 };
        for (id, position) in old.into_iter().filter(|c| c.1 != Self::EMPTY) {
            self.slot(id, || position as usize);
        }
    }
}

/// The gradient of one table's touched rows: `values[k*dim..(k+1)*dim]` belongs to `ids[k]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseGrad {
    pub ids: Vec<u32>,
    pub values: Vec<f32>,
}

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
    use super::*;
    use crate::layout::Slot;

    fn layout_two_slots() -> InputLayout {
        // A categorical feature (table 0, dim 2) then a mean-pooled list (table 0, dim 2).
        InputLayout::from_slots(
            vec![
                Slot { feature: 0, offset: 0, width: 2, source: SlotSource::Embedding { table: 0, pooling: None } },
                Slot {
                    feature: 1,
                    offset: 2,
                    width: 2,
                    source: SlotSource::Embedding { table: 0, pooling: Some(Pooling::Mean) },
                },
            ],
            4,
        )
    }

    fn tables() -> EmbeddingTables {
        EmbeddingTables {
            tables: vec![EmbeddingTable {
                name: "t".into(),
                rows: 4,
                dim: 2,
                weights: vec![0., 0., 1., 2., 3., 4., 5., 6.],
            }],
        }
    }

    #[test]
    fn gather_copies_rows_and_pools_lists() {
        let ids = [1u32, 3];
        let (offsets, values) = ([0usize, 2, 2], [2u32, 3]);
        let data = [FeatureData::Ids(&ids), FeatureData::Lists { offsets: &offsets, values: &values }];
        let mut out = vec![f32::NAN; 8];
        let ids = BatchIds::new(&layout_two_slots(), &data, &[0, 1]);
        tables().gather(&layout_two_slots(), &data, &[0, 1], &ids, &mut out);
        // row 0: table row 1 = (1, 2); mean of rows 2 and 3 = (4, 5). row 1: row 3, empty list = 0.
        assert_eq!(out, vec![1., 2., 4., 5., 5., 6., 0., 0.]);
    }

    #[test]
    fn gather_from_a_large_table_copies_its_rows() {
        use rand::SeedableRng;
        // 300,000 values: the gather touches the rows before it copies them.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (rows, dim) = (100_000u32, 3);
        let weights = (0..rows as usize * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let tables =
            EmbeddingTables { tables: vec![EmbeddingTable { name: "t".into(), rows: rows as usize, dim, weights }] };
        let layout = InputLayout::from_slots(
            vec![Slot { feature: 0, offset: 0, width: dim, source: SlotSource::Embedding { table: 0, pooling: None } }],
            dim,
        );
        let ids: Vec<u32> = (0..600).map(|_| rng.gen_range(0..rows)).chain([0, rows - 1]).collect();
        let data = [FeatureData::Ids(&ids)];
        let batch: Vec<usize> = (0..ids.len()).rev().collect();
        let mut out = vec![f32::NAN; batch.len() * dim];
        let batch_ids = BatchIds::new(&layout, &data, &batch);
        tables.gather(&layout, &data, &batch, &batch_ids, &mut out);
        for (row, &b) in out.chunks_exact(dim).zip(&batch) {
            assert_eq!(row, tables.tables[0].row(ids[b]));
        }
    }

    /// Positions in order of first sight, as a general map gives them, through growth from a
    /// capacity far too small, with ids that collide in the low bits.
    #[test]
    fn id_map_numbers_ids_in_order_of_first_sight() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let ids: Vec<u32> = (0..20_000)
            .map(|k| if k % 3 == 0 { rng.gen_range(0..50) << 20 } else { rng.gen_range(0..u32::MAX - 1) })
            .collect();
        let (mut map, mut reference) = (IdMap::with_capacity(4), std::collections::HashMap::new());
        for &id in &ids {
            let expected = reference.len();
            let want = *reference.entry(id).or_insert(expected);
            assert_eq!(map.slot(id, || expected), want, "id {id}");
        }
        assert_eq!(map.len, reference.len());
        assert!(2 * map.len <= map.cells.len());
    }

    #[test]
    fn batch_ids_of_parts_concatenate_to_the_whole_batch() {
        let ids = [1u32, 3, 0, 2];
        let (offsets, values) = ([0usize, 2, 2, 3, 6], [2u32, 3, 1, 0, 1, 2]);
        let data = [FeatureData::Ids(&ids), FeatureData::Lists { offsets: &offsets, values: &values }];
        let layout = layout_two_slots();
        let batch = [3, 0, 2, 1];
        let whole = BatchIds::new(&layout, &data, &batch);
        for split in 0..=batch.len() {
            let parts =
                [BatchIds::new(&layout, &data, &batch[..split]), BatchIds::new(&layout, &data, &batch[split..])];
            assert_eq!(BatchIds::concat(&parts), whole, "split at {split}");
        }
    }

    #[test]
    fn sparse_grads_sum_duplicates_and_split_means() {
        let ids = [3u32, 3];
        let (offsets, values) = ([0usize, 2, 3], [2u32, 3, 3]);
        let data = [FeatureData::Ids(&ids), FeatureData::Lists { offsets: &offsets, values: &values }];
        let grad = [1., 1., 2., 4., 10., 10., 1., 1.];
        let batch = BatchIds::new(&layout_two_slots(), &data, &[0, 1]);
        let g = tables().sparse_grads(&layout_two_slots(), &batch, &grad);
        assert_eq!(g.len(), 1);
        let mut rows: Vec<(u32, Vec<f32>)> =
            g[0].ids.iter().enumerate().map(|(k, &id)| (id, g[0].values[2 * k..2 * k + 2].to_vec())).collect();
        rows.sort_by_key(|r| r.0);
        // id 2: half of (2, 4) from row 0's mean. id 3: (1,1) + half (2,4) + (10,10) + (1,1).
        assert_eq!(rows, vec![(2, vec![1., 2.]), (3, vec![13., 14.])]);
    }

    /// A table looked up often enough to be scattered in parts: every id's gradient is the sum
    /// over its lookups (within rounding of a plain sum), ids in order of first appearance, and
    /// the same bits on one thread or four.
    #[test]
    fn a_shared_table_scattered_in_parts_sums_every_lookup() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let rows = 5_000; // two slots: 10,000 lookups and more, over two parts
        let ids: Vec<u32> = (0..rows).map(|_| rng.gen_range(0..4)).collect();
        let mut offsets = vec![0usize];
        let mut values = Vec::new();
        for _ in 0..rows {
            for _ in 0..rng.gen_range(0..3) {
                values.push(rng.gen_range(0..4));
            }
            offsets.push(values.len());
        }
        let grad: Vec<f32> = (0..rows * 4).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let data = [FeatureData::Ids(&ids), FeatureData::Lists { offsets: &offsets, values: &values }];
        let batch_rows: Vec<usize> = (0..rows).collect();
        let layout = layout_two_slots();
        let batch = BatchIds::new(&layout, &data, &batch_rows);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
            pool.install(|| tables().sparse_grads(&layout, &batch, &grad))
        };
        let (one, four) = (run(1), run(4));
        assert_eq!(one, four, "the thread count changed the result");
        // The plain sums, in f64, and the order of first appearance.
        let (mut order, mut sums) = (Vec::new(), std::collections::HashMap::<u32, [f64; 2]>::new());
        let mut add = |id: u32, g: &[f32], scale: f64| {
            let s = sums.entry(id).or_insert_with(|| {
                order.push(id);
                [0.0; 2]
            });
            s.iter_mut().zip(g).for_each(|(s, &g)| *s += scale * f64::from(g));
        };
        for r in 0..rows {
            add(ids[r], &grad[r * 4..r * 4 + 2], 1.0);
            let list = &values[offsets[r]..offsets[r + 1]];
            for &id in list {
                add(id, &grad[r * 4 + 2..r * 4 + 4], 1.0 / list.len() as f64);
            }
        }
        assert_eq!(four[0].ids, order);
        for (k, id) in order.iter().enumerate() {
            for (got, want) in four[0].values[2 * k..2 * k + 2].iter().zip(sums[id]) {
                assert!((f64::from(*got) - want).abs() < 1e-3, "id {id}: {got} vs {want}");
            }
        }
    }

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
