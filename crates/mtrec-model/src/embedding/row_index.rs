//! Positions of a batch's ids in a table's touched rows.

/// Where each touched row's gradient sits in a [`SparseGrad`]. A table no larger than a few
/// times the batch's lookups gets a direct array (no hashing); a larger one a hash map, so a
/// step's cost stays O(batch) whatever the vocabulary size.
pub(super) enum RowIndex {
    Direct(Vec<u32>),
    Hashed(IdMap),
}

impl RowIndex {
    const ABSENT: u32 = u32::MAX;

    pub(super) fn new(table_rows: usize, lookups: usize) -> Self {
        if table_rows <= 4 * lookups.max(256) {
            RowIndex::Direct(vec![Self::ABSENT; table_rows])
        } else {
            RowIndex::Hashed(IdMap::with_capacity(lookups))
        }
    }

    /// The position of `id`, inserting it with `insert()` on first sight.
    pub(super) fn slot(&mut self, id: u32, insert: impl FnOnce() -> usize) -> usize {
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
pub(super) struct IdMap {
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

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

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
}
