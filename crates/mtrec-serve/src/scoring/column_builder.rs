//! Encoded feature columns built row by row, from request values, feature-table rows and null
//! encodings alike.

use mtrec_schema::{EncodedKind, EncodedValue, FeatureColumn};

/// One feature's encoded values, built row by row.
pub(super) enum ColumnBuilder {
    Ids(Vec<u32>),
    Lists { offsets: Vec<usize>, values: Vec<u32> },
    Values(Vec<f32>),
}

impl ColumnBuilder {
    pub(super) fn new(kind: EncodedKind, rows: usize) -> Self {
        match kind {
            EncodedKind::Id => ColumnBuilder::Ids(Vec::with_capacity(rows)),
            EncodedKind::IdList => {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                ColumnBuilder::Lists { offsets, values: Vec::new() }
            }
            EncodedKind::Value => ColumnBuilder::Values(Vec::with_capacity(rows)),
        }
    }

    pub(super) fn push(&mut self, value: &EncodedValue) {
        match (self, value) {
            (ColumnBuilder::Ids(ids), EncodedValue::Id(id)) => ids.push(*id),
            (ColumnBuilder::Lists { offsets, values }, EncodedValue::Ids(ids)) => {
                values.extend_from_slice(ids);
                offsets.push(values.len());
            }
            (ColumnBuilder::Values(v), EncodedValue::Value(x)) => v.push(*x),
            _ => unreachable!("a feature's encoder returns the feature's encoded kind"),
        }
    }

    pub(super) fn push_from(&mut self, column: &FeatureColumn, row: usize) {
        match (self, column) {
            (ColumnBuilder::Ids(ids), FeatureColumn::Ids(from)) => ids.push(from[row]),
            (ColumnBuilder::Lists { offsets, values }, FeatureColumn::Lists { offsets: o, values: v }) => {
                values.extend_from_slice(&v[o[row]..o[row + 1]]);
                offsets.push(values.len());
            }
            (ColumnBuilder::Values(v), FeatureColumn::Values(from)) => v.push(from[row]),
            _ => unreachable!("columns of one feature share its encoded kind"),
        }
    }

    pub(super) fn finish(self) -> FeatureColumn {
        match self {
            ColumnBuilder::Ids(ids) => FeatureColumn::Ids(ids),
            ColumnBuilder::Lists { offsets, values } => FeatureColumn::Lists { offsets, values },
            ColumnBuilder::Values(v) => FeatureColumn::Values(v),
        }
    }
}
