//! Helpers of the embedding tests: a two-slot layout over one small table.

use mtrec_schema::Pooling;

use super::{EmbeddingTable, EmbeddingTables};
use crate::layout::{InputLayout, Slot, SlotSource};

pub(super) fn layout_two_slots() -> InputLayout {
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

pub(super) fn tables() -> EmbeddingTables {
    EmbeddingTables {
        tables: vec![EmbeddingTable {
            name: "t".into(),
            rows: 4,
            dim: 2,
            weights: vec![0., 0., 1., 2., 3., 4., 5., 6.],
        }],
    }
}
