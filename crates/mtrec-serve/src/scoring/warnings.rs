//! The warnings of a scoring answer: what the encoding had to assume, aggregated by field and
//! kind.

use std::collections::{BTreeMap, HashSet};

use crate::api::{ApiWarning, WarningKind};

/// Most item (row) indices listed in one warning.
const WARNING_INDICES: usize = 10;

/// Warnings aggregated by field and kind.
#[derive(Default)]
pub(super) struct Warnings {
    by_field: BTreeMap<(String, WarningKind), (usize, Vec<usize>)>,
    /// Features reading the same field (e.g. `price` and its bucketized twin) warn once.
    seen: HashSet<(String, WarningKind, Option<usize>)>,
}

impl Warnings {
    pub(super) fn add(&mut self, field: String, kind: WarningKind, index: Option<usize>) {
        if !self.seen.insert((field.clone(), kind, index)) {
            return;
        }
        let (count, indices) = self.by_field.entry((field, kind)).or_default();
        if let Some(i) = index.filter(|_| indices.len() < WARNING_INDICES) {
            indices.push(i);
        }
        *count += 1;
    }

    /// Adds `count` occurrences of a warning whose rows are not known one by one.
    pub(super) fn add_count(&mut self, field: String, kind: WarningKind, count: usize) {
        if count > 0 {
            self.by_field.entry((field, kind)).or_default().0 += count;
        }
    }

    pub(super) fn finish(self) -> Vec<ApiWarning> {
        self.by_field
            .into_iter()
            .map(|((field, kind), (count, indices))| ApiWarning { field, kind, count, indices })
            .collect()
    }
}
