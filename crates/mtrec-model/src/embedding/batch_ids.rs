//! A batch's embedding ids, read once from the encoded columns in batch order, and the codes
//! of its single-id slots for the coded first layer.

use rayon::prelude::*;

use super::row_index::RowIndex;
use super::FeatureData;
use crate::cpu::clean_upper_state;
use crate::fused::{CodedBlock, InputCodes};
use crate::layout::{InputLayout, SlotSource};

/// A batch's embedding ids, read once from the dataset's columns into batch order. The
/// columns are read at shuffled rows; the gather and the gradient scatter then both walk these
/// ids in order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchIds {
    pub(super) rows: usize,
    /// Per layout slot; `None` for numeric slots.
    pub(super) slots: Vec<Option<SlotLookups>>,
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
                    (
                        source @ (SlotSource::Embedding { .. } | SlotSource::Sequence { .. }),
                        FeatureData::Lists { offsets, values },
                    ) => {
                        // A sequence reads only its first `length` ids.
                        let most = match source {
                            SlotSource::Sequence { length, .. } => *length,
                            _ => usize::MAX,
                        };
                        let mut starts = Vec::with_capacity(rows.len() + 1);
                        let mut ids = Vec::new();
                        starts.push(0);
                        for &r in rows {
                            let end = offsets[r + 1].min(offsets[r].saturating_add(most));
                            ids.extend_from_slice(&values[offsets[r]..end]);
                            starts.push(ids.len());
                        }
                        Some(SlotLookups::Lists { offsets: starts, ids })
                    }
                    (SlotSource::Sequence { .. }, _) => {
                        panic!("feature {} is no list, its slot a sequence", slot.feature)
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
pub(super) enum SlotLookups {
    Ids(Vec<u32>),
    /// Row `b`'s ids are `ids[offsets[b]..offsets[b + 1]]`.
    Lists {
        offsets: Vec<usize>,
        ids: Vec<u32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedding::test_support::layout_two_slots;

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
}
