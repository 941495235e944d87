//! Per-request reuse of what does not depend on the candidate.
//!
//! A `/v1/score` request is one user and context with many candidate items, so the user and
//! context columns of a group's input are the same on every row. A first layer's product
//! splits by input columns, `x W = x_shared W_shared + x_rest W_rest`: the shared part (with
//! the bias) is computed once per distinct value of the shared columns and added to each of its
//! rows, the rest per row. A group whose whole input is shared (user tasks) is computed once
//! per distinct input row and its outputs copied to the others. Rows are grouped by value, not
//! by position, so a batch of rows from a few users gains as well. The sums are the same up to
//! rounding; the parity tests hold it to the training forward.

use super::dense::{give, take, Dense, Rows};

/// The columns of a group's input that do not depend on the candidate (`shared`), and the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ColumnSplit {
    pub(crate) shared: Vec<usize>,
    pub(crate) rest: Vec<usize>,
}

impl ColumnSplit {
    /// From one flag per column of the group's input: whether it is candidate-free.
    pub(crate) fn new(flags: &[bool]) -> Self {
        let (shared, rest) = (0..flags.len()).partition(|&c| flags[c]);
        Self { shared, rest }
    }

    /// Splitting pays where both parts have columns.
    pub(crate) fn is_useful(&self) -> bool {
        !self.shared.is_empty() && !self.rest.is_empty()
    }

    /// Gives `layer`, a first layer of the group, its parts for these columns: its rows for the
    /// shared columns with the bias, then its rows for the others without.
    pub(crate) fn split(&self, layer: &mut Dense) {
        layer.parts = Some(Box::new([layer.rows_of(&self.shared, true), layer.rows_of(&self.rest, false)]));
    }
}

/// Which rows hold the same values in `columns` of `x` (`n x width`): the first row of each
/// distinct value (in row order), and each row's index among them.
pub(crate) fn distinct_rows(x: &[f32], width: usize, n: usize, columns: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let key = |r: usize| columns.iter().map(move |&c| x[r * width + c].to_bits());
    // The usual request: every row the same.
    if (1..n).all(|r| key(r).eq(key(0))) {
        return (vec![0; n.min(1)], vec![0; n]);
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| key(a).cmp(key(b)).then(a.cmp(&b)));
    let mut first_of = vec![0; n];
    for (i, &r) in order.iter().enumerate() {
        first_of[r] = if i > 0 && key(order[i - 1]).eq(key(r)) { first_of[order[i - 1]] } else { r };
    }
    let mut unique = Vec::new();
    let mut index = vec![usize::MAX; n];
    let mut of_row = vec![0; n];
    for r in 0..n {
        let f = first_of[r];
        if index[f] == usize::MAX {
            index[f] = unique.len();
            unique.push(f);
        }
        of_row[r] = index[f];
    }
    (unique, of_row)
}

/// The rows `picked` of `x` (`width` values each), in that order.
pub(crate) fn pick_rows(x: &[f32], width: usize, picked: &[usize]) -> Vec<f32> {
    let mut out = take(picked.len() * width);
    for (dst, &r) in out.chunks_exact_mut(width.max(1)).zip(picked) {
        dst.copy_from_slice(&x[r * width..(r + 1) * width]);
    }
    out
}

/// A group's input as its first layers read it: whole, or split by [`ColumnSplit`] with the
/// shared columns' distinct values.
pub(crate) struct FirstInput<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) n: usize,
    split: Option<Split>,
}

struct Split {
    distinct: usize,
    of_row: Vec<usize>,
    /// The distinct rows' shared columns, and every row's other columns.
    shared: Vec<f32>,
    rest: Vec<f32>,
}

impl<'a> FirstInput<'a> {
    pub(crate) fn whole(x: &'a [f32], n: usize) -> Self {
        Self { x, n, split: None }
    }

    /// Split by `columns`, also where every row is distinct: a row's outputs then do not depend
    /// on the other rows of its call.
    pub(crate) fn split(x: &'a [f32], width: usize, n: usize, columns: &ColumnSplit) -> Self {
        let (unique, of_row) = distinct_rows(x, width, n, &columns.shared);
        let gather = |rows: &mut dyn Iterator<Item = usize>, cols: &[usize]| -> Vec<f32> {
            let mut out = take(0);
            for r in rows {
                out.extend(cols.iter().map(|&c| x[r * width + c]));
            }
            out
        };
        let shared = gather(&mut unique.iter().copied(), &columns.shared);
        let rest = gather(&mut (0..n), &columns.rest);
        Self { x, n, split: Some(Split { distinct: unique.len(), of_row, shared, rest }) }
    }

    /// `act(x W + b)` of a first layer, through its split parts where both exist.
    pub(crate) fn apply(&self, layer: &Dense, relu: bool) -> Vec<f32> {
        let (Some(split), Some([shared, rest])) = (&self.split, layer.parts.as_deref()) else {
            return layer.apply(self.x, self.n, relu);
        };
        let m = layer.m;
        let once = shared.apply(&split.shared, split.distinct, false);
        let mut out = take(self.n * m);
        rest.apply_into(Rows::whole(&split.rest, self.n, rest.k), &mut out, m, 0, false);
        for (row, &u) in out.chunks_exact_mut(m).zip(&split.of_row) {
            let add = &once[u * m..(u + 1) * m];
            for (o, a) in row.iter_mut().zip(add) {
                let v = *o + a;
                *o = if relu && v <= 0.0 { 0.0 } else { v };
            }
        }
        give(once);
        out
    }
}

impl Drop for FirstInput<'_> {
    fn drop(&mut self) {
        if let Some(split) = self.split.take() {
            give(split.shared);
            give(split.rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_grouped_by_the_values_of_the_columns() {
        // Columns 0 and 2 decide; column 1 differs everywhere.
        let x = [1.0, 0.0, 2.0, 3.0, 1.0, 2.0, 1.0, 2.0, 2.0, 3.0, 3.0, 2.0, 1.0, 4.0, 2.0];
        let (unique, of_row) = distinct_rows(&x, 3, 5, &[0, 2]);
        assert_eq!(unique, vec![0, 1]);
        assert_eq!(of_row, vec![0, 1, 0, 1, 0]);
        assert_eq!(distinct_rows(&x, 3, 1, &[0]), (vec![0], vec![0]));
        assert_eq!(distinct_rows(&x, 3, 0, &[0]), (vec![], vec![]));
        assert_eq!(pick_rows(&x, 3, &[4, 0]), vec![1.0, 4.0, 2.0, 1.0, 0.0, 2.0]);
    }
}
