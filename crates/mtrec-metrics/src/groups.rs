//! Grouping rows by an id (user, item): dense group numbers and, per group, its rows in
//! ascending row order. Built once and shared by GAUC, ranking and the cluster bootstrap.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Rows grouped by id. Groups are numbered in order of first appearance; within a group rows
/// keep ascending row order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    ids: Vec<u64>,
    offsets: Vec<usize>,
    rows: Vec<u32>,
    group_of_row: Vec<u32>,
}

/// A multiplicative hasher for `u64` keys: ids are often already hashes, and SipHash would
/// dominate grouping time at 10^7 rows.
#[derive(Debug, Default, Clone, Copy)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        // splitmix64 finaliser: good avalanche so dense ids spread over the table.
        let mut z = self.0 ^ x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.0 = z ^ (z >> 31);
    }
}

impl Groups {
    /// Groups rows by arbitrary `u64` ids (hashed or dense).
    ///
    /// # Panics
    /// When there are more than `u32::MAX` rows.
    pub fn from_ids(ids: &[u64]) -> Self {
        assert!(ids.len() <= u32::MAX as usize, "Groups: at most u32::MAX rows");
        let mut dense: HashMap<u64, u32, BuildHasherDefault<MixHasher>> = HashMap::default();
        let mut group_ids = Vec::new();
        let group_of_row: Vec<u32> = ids
            .iter()
            .map(|&id| {
                *dense.entry(id).or_insert_with(|| {
                    group_ids.push(id);
                    (group_ids.len() - 1) as u32
                })
            })
            .collect();
        Self::from_dense_parts(group_ids, group_of_row)
    }

    /// Groups rows by dense ids `0..groups` (no hashing); group `g` has id `g`, and groups
    /// without rows are kept (empty).
    ///
    /// # Panics
    /// When an id is `>= groups` or there are more than `u32::MAX` rows.
    pub fn from_dense(ids: &[u32], groups: usize) -> Self {
        assert!(ids.len() <= u32::MAX as usize, "Groups: at most u32::MAX rows");
        assert!(ids.iter().all(|&g| (g as usize) < groups), "Groups::from_dense: id out of range");
        Self::from_dense_parts((0..groups as u64).collect(), ids.to_vec())
    }

    fn from_dense_parts(ids: Vec<u64>, group_of_row: Vec<u32>) -> Self {
        // Counting sort of rows by group: one pass to count, one to scatter (stable).
        let mut offsets = vec![0usize; ids.len() + 1];
        for &g in &group_of_row {
            offsets[g as usize + 1] += 1;
        }
        for g in 0..ids.len() {
            offsets[g + 1] += offsets[g];
        }
        let mut next = offsets.clone();
        let mut rows = vec![0u32; group_of_row.len()];
        for (row, &g) in group_of_row.iter().enumerate() {
            rows[next[g as usize]] = row as u32;
            next[g as usize] += 1;
        }
        Groups { ids, offsets, rows, group_of_row }
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no groups.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of rows grouped.
    pub fn rows_total(&self) -> usize {
        self.rows.len()
    }

    /// The original id of group `g`.
    pub fn id(&self, g: usize) -> u64 {
        self.ids[g]
    }

    /// Rows of group `g`, ascending.
    pub fn rows(&self, g: usize) -> &[u32] {
        &self.rows[self.offsets[g]..self.offsets[g + 1]]
    }

    /// Number of rows in group `g`.
    pub fn size(&self, g: usize) -> usize {
        self.offsets[g + 1] - self.offsets[g]
    }

    /// The group of `row`.
    pub fn group_of(&self, row: usize) -> usize {
        self.group_of_row[row] as usize
    }

    /// All rows, grouped: group 0's rows, then group 1's, and so on.
    pub fn grouped_rows(&self) -> &[u32] {
        &self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_first_appearance_with_rows_ascending() {
        let g = Groups::from_ids(&[42, 7, 42, 9, 7, 42]);
        assert_eq!(g.len(), 3);
        assert_eq!((g.id(0), g.id(1), g.id(2)), (42, 7, 9));
        assert_eq!(g.rows(0), &[0, 2, 5]);
        assert_eq!(g.rows(1), &[1, 4]);
        assert_eq!(g.rows(2), &[3]);
        assert_eq!(g.group_of(4), 1);
        assert_eq!(g.grouped_rows(), &[0, 2, 5, 1, 4, 3]);
    }

    #[test]
    fn dense_ids_keep_empty_groups() {
        let g = Groups::from_dense(&[2, 0, 2], 4);
        assert_eq!(g.len(), 4);
        assert_eq!(g.rows(1), &[] as &[u32]);
        assert_eq!(g.rows(2), &[0, 2]);
        assert_eq!(g.size(3), 0);
    }
}
