//! Copying a batch's embedding rows (pooled for lists) and numeric values into the input.

use mtrec_schema::Pooling;
use rayon::prelude::*;

use super::batch_ids::{BatchIds, SlotLookups};
use super::{EmbeddingTables, FeatureData};
use crate::cpu::clean_upper_state;
use crate::layout::{InputLayout, SlotSource};

impl EmbeddingTables {
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
                    (SlotSource::Sequence { table, length, .. }, Some(SlotLookups::Lists { offsets, ids }), _) => {
                        let table = &self.tables[*table];
                        let dim = table.dim;
                        for (b, dst) in (first..).zip(dsts) {
                            dst.fill(0.0);
                            let ids = &ids[offsets[b]..offsets[b + 1]];
                            let (rows_part, mask) = dst.split_at_mut(length * dim);
                            for (j, &id) in ids.iter().enumerate() {
                                copy_row(&mut rows_part[j * dim..(j + 1) * dim], table.row(id));
                                mask[j] = 1.0;
                            }
                        }
                    }
                    (source, _, _) => panic!("feature {} does not match its slot {source:?}", slot.feature),
                }
            }
        });
    }
}

/// Reads the first and last value of each row `ids` (rows of `dim` values, numbered from
/// `first_row`) and nothing else: a tight loop of independent loads that brings the rows' cache
/// lines in together, so that the copy which follows finds them cached instead of missing one
/// row at a time. Skipped for arrays under [`TOUCH_MIN_VALUES`]. (Prefetch instructions, through
/// pulp's safe wrapper, did no better: benches/README.md, "Sparse embedding step: history".)
#[inline]
pub(super) fn touch_rows(values: &[f32], dim: usize, first_row: usize, ids: &[u32]) {
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

/// Arrays of fewer values (1 MiB of `f32`, about twice a core's L2 cache on the machines the
/// benchmarks ran on) are not touched first: they stay cached, and the extra loads would only
/// cost.
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

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::embedding::test_support::{layout_two_slots, tables};
    use crate::embedding::EmbeddingTable;
    use crate::layout::Slot;

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
}
