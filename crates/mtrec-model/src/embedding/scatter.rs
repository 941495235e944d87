//! The gradient of the gathered input scattered back to the table rows it came from,
//! duplicate ids summed: one sparse gradient per table.

use mtrec_schema::Pooling;
use rayon::prelude::*;

use super::batch_ids::{BatchIds, SlotLookups};
use super::row_index::RowIndex;
use super::{EmbeddingTable, EmbeddingTables};
use crate::cpu::clean_upper_state;
use crate::layout::{InputLayout, SlotSource};

impl EmbeddingTables {
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

    /// Per table, the sparse gradients of several parts of one batch (`parts[p][t]`, parts in
    /// batch order) merged into one: ids in order of first appearance, the rows of an id in
    /// several parts added in part order. Data-parallel training across processes merges each
    /// process's gradients with it.
    pub fn merge_sparse_grads(&self, parts: Vec<Vec<SparseGrad>>) -> Vec<SparseGrad> {
        let mut per_table: Vec<Vec<SparseGrad>> = vec![Vec::with_capacity(parts.len()); self.tables.len()];
        for part in parts {
            assert_eq!(part.len(), self.tables.len(), "merge_sparse_grads: a part of another model");
            per_table.iter_mut().zip(part).for_each(|(acc, g)| acc.push(g));
        }
        per_table
            .into_iter()
            .zip(&self.tables)
            .map(|(p, table)| {
                let lookups = p.iter().map(|g| g.ids.len()).sum();
                merge_parts(p, table, lookups)
            })
            .collect()
    }

    /// Table `table`'s sparse gradients from several parts (in order) merged into one, as
    /// [`EmbeddingTables::merge_sparse_grads`] merges each table's.
    pub fn merge_table_grads(&self, table: usize, parts: Vec<SparseGrad>) -> SparseGrad {
        let lookups = parts.iter().map(|g| g.ids.len()).sum();
        merge_parts(parts, &self.tables[table], lookups)
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
                // Position j's columns are the gradient of the j-th id's row.
                (SlotSource::Sequence { table, .. }, Some(l)) => {
                    tables.iter().position(|t| t == table).map(|k| (s, Some(Pooling::Attention), l, k))
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
                    SlotLookups::Lists { offsets, ids } if pooling == Some(Pooling::Attention) => {
                        let dim = acc[k].dim;
                        for (j, &id) in ids[offsets[b]..offsets[b + 1]].iter().enumerate() {
                            acc[k].add(id, &g[j * dim..(j + 1) * dim], 1.0);
                        }
                    }
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

/// The gradient of one table's touched rows: `values[k*dim..(k+1)*dim]` belongs to `ids[k]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseGrad {
    pub ids: Vec<u32>,
    pub values: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use crate::embedding::test_support::{layout_two_slots, tables};
    use crate::embedding::{BatchIds, FeatureData};

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
}
