//! Target attention over behaviour sequences (DIN, Zhou et al., KDD 2018).
//!
//! A sequence slot ([`crate::layout::SlotSource::Sequence`]) holds a row's first `L` ids as `L`
//! embeddings `h_j` and `L` mask columns. In a group that sees the candidate's embedding `t`,
//! each position gets the weight `a_j = u([h_j, t, h_j − t, h_j ⊙ t])` of the activation unit
//! `u` (a ReLU MLP, then one linear output), zero past the row's end, and the slot is replaced
//! by `Σ_j a_j h_j`: the weights are not normalized, so how much of the history is relevant
//! to this candidate stays in the pooled vector's scale. A group that does not see the
//! candidate (user tasks) takes the mean of the row's embeddings instead. Either way the
//! sequence's `L x (d + 1)` columns become `d`, appended after the group's other columns, and
//! with the `user_item_dot` interactions the pooled vector's dot product with each item-side
//! embedding of its dimension follows it (as a mean-pooled history gets from
//! [`crate::layout::InputLayout::user_item_pairs`]).
//!
//! The pooling reads the assembled input, so the embeddings' gradients arrive in the sequence
//! slot's columns, one position per id, and the scatter adds them to the ids' rows.

use std::ops::Range;

use dfdx::prelude::*;
use rand::Rng;

use crate::arch::{fan_out, slice_columns, Mlp};
use crate::params::{Linear, Mat, ParamStore, TapeKind};

/// One sequence slot of a group's input, and how it is pooled there.
#[derive(Debug, Clone, PartialEq)]
pub struct SequencePooling {
    /// The slot's columns in the group's input: `length` embeddings of `dim`, then the mask.
    pub columns: Range<usize>,
    pub length: usize,
    pub dim: usize,
    /// The candidate's columns and the activation unit; `None` pools by the mean.
    pub(crate) attention: Option<(Range<usize>, Mlp, Linear)>,
    /// Columns of the item-side embeddings the pooled vector is dotted with.
    pub(crate) dots: Vec<Range<usize>>,
}

impl SequencePooling {
    /// Mean pooling of the sequence of `length` embeddings of `dim` at `columns`.
    pub fn mean(columns: Range<usize>, length: usize, dim: usize) -> Self {
        assert_eq!(columns.len(), length * (dim + 1), "a sequence slot holds length x (dim + 1) columns");
        Self { columns, length, dim, attention: None, dots: Vec::new() }
    }

    /// Appends the pooled vector's dot product with each embedding at `dots` (columns of the
    /// same input, of `dim` each).
    pub fn dotted_with(self, dots: Vec<Range<usize>>) -> Self {
        assert!(dots.iter().all(|r| r.len() == self.dim), "dot operands of another dimension");
        Self { dots, ..self }
    }

    /// The columns this sequence adds to its group's input in place of its slot.
    pub fn pooled_width(&self) -> usize {
        self.dim + self.dots.len()
    }

    /// Attention against the candidate at `target` (columns of the same input) instead, with
    /// an activation unit of `units` hidden layers named `{prefix}.*`.
    pub fn attending(
        self,
        store: &mut ParamStore,
        prefix: &str,
        target: Range<usize>,
        units: &[usize],
        rng: &mut impl Rng,
    ) -> Self {
        let d = self.dim;
        let mlp = Mlp::new(store, &format!("{prefix}.unit"), 4 * d, units, rng);
        let fan_in = units.last().copied().unwrap_or(4 * d);
        let out = store.add_linear(&format!("{prefix}.weight"), fan_in, 1, rng);
        Self { attention: Some((target, mlp, out)), ..self }
    }

    /// The pooled vector of every row, `B x dim`, from the group's input `x`.
    fn pool<T: TapeKind>(&self, store: &ParamStore, x: Mat<T>, mask: &[f32]) -> Mat<T> {
        let (n, l, d) = (x.shape().0, self.length, self.dim);
        let dev = x.device().clone();
        let start = self.columns.start;
        let Some((target, unit, out)) = &self.attention else {
            let h = slice_columns(x, start..start + l * d).reshape_like(&(n, l, d));
            // The mean over the row's positions: 1/count where the mask is set.
            let weights: Vec<f32> = mask
                .chunks_exact(l)
                .flat_map(|m| {
                    let count = m.iter().sum::<f32>().max(1.0);
                    m.iter().map(move |v| v / count)
                })
                .collect();
            let w: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(weights, (n, l));
            return (h * w.broadcast_like::<_, Axis<2>>(&(n, l, d))).sum::<(usize, usize), Axis<1>>();
        };
        let mut uses = fan_out(x, 2);
        let h = slice_columns(uses.remove(0), start..start + l * d).reshape_like(&(n, l, d));
        let t = slice_columns(uses.remove(0), target.clone()).broadcast_like::<_, Axis<1>>(&(n, l, d));
        let mut h = fan_out(h, 4);
        let mut t = fan_out(t, 3);
        let features = (
            (h.remove(0), t.remove(0)).concat_along(Axis::<2>),
            (h.remove(0) - t.remove(0), h.remove(0) * t.remove(0)).concat_along(Axis::<2>),
        )
            .concat_along(Axis::<2>)
            .reshape_like(&(n * l, 4 * d));
        let hidden = unit.forward(store, features, None);
        let scores = out.forward(store, hidden).reshape_like(&(n, l));
        let m: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(mask.to_vec(), (n, l));
        let weights = (scores * m).broadcast_like::<_, Axis<2>>(&(n, l, d));
        (h.remove(0) * weights).sum::<(usize, usize), Axis<1>>()
    }
}

/// `x` with every sequence slot's columns replaced by its pooled vector, the pooled vectors
/// (each followed by its dot products) appended after the remaining columns, in `sequences`
/// order (which is column order).
pub(crate) fn pool_sequences<T: TapeKind>(store: &ParamStore, x: Mat<T>, sequences: &[SequencePooling]) -> Mat<T> {
    if sequences.is_empty() {
        return x;
    }
    let (n, width) = *x.shape();
    // The masks are data, not learned: read once, off the tape.
    let values = x.as_vec();
    let masks: Vec<Vec<f32>> = sequences
        .iter()
        .map(|s| {
            let mask_columns = s.columns.start + s.length * s.dim..s.columns.end;
            (0..n).flat_map(|r| values[r * width + mask_columns.start..r * width + mask_columns.end].to_vec()).collect()
        })
        .collect();
    let mut kept = Vec::new();
    let mut at = 0;
    for s in sequences {
        if s.columns.start > at {
            kept.push(at..s.columns.start);
        }
        at = s.columns.end;
    }
    if at < width {
        kept.push(at..width);
    }
    let dots: usize = sequences.iter().map(|s| s.dots.len()).sum();
    let mut uses = fan_out(x, kept.len() + sequences.len() + dots);
    let mut parts: Vec<Mat<T>> = kept.into_iter().map(|r| slice_columns(uses.remove(0), r)).collect();
    for (s, mask) in sequences.iter().zip(&masks) {
        let pooled = s.pool(store, uses.remove(0), mask);
        let mut pooled = fan_out(pooled, 1 + s.dots.len());
        parts.push(pooled.remove(0));
        for (range, p) in s.dots.iter().zip(pooled) {
            let item = slice_columns(uses.remove(0), range.clone());
            parts.push((p * item).sum::<(usize,), Axis<1>>().reshape_like(&(n, 1usize)));
        }
    }
    let mut parts = parts.into_iter();
    let mut out = parts.next().expect("at least the pooled vector");
    for p in parts {
        out = (out, p).concat_along(Axis::<1>);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Dev;
    use rand::SeedableRng;

    /// Finite differences of a weighted sum of the pooled input, with respect to the input (the
    /// embeddings and the candidate) and every parameter of the activation unit; rows with a
    /// full, a partial and an empty history, pooled by attention (and dotted with the candidate)
    /// and by the mean.
    #[test]
    fn pooling_matches_finite_differences() {
        let (n, l, d) = (3usize, 2usize, 2usize);
        // Columns: [other (1) | sequence (l*d + l) | candidate (d)].
        let width = 1 + l * (d + 1) + d;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for attention in [true, false] {
            let mut store = ParamStore::new(Dev::default());
            let seq = SequencePooling::mean(1..1 + l * (d + 1), l, d);
            // With attention, the pooled vector is also dotted with the candidate.
            let seq = match attention {
                true => seq
                    .attending(&mut store, "a", 1 + l * (d + 1)..width, &[3], &mut rng)
                    .dotted_with(std::iter::once(1 + l * (d + 1)..width).collect()),
                false => seq,
            };
            for id in store.ids().collect::<Vec<_>>() {
                let values: Vec<f32> = store.values(id).iter().map(|v| v + rng.gen_range(-0.3..0.3)).collect();
                store.set_values(id, &values);
            }
            let dev = store.device().clone();
            let mut input: Vec<f32> = (0..n * width).map(|_| rng.gen_range(-1.0..1.0)).collect();
            // Masks: row 0 full, row 1 one position, row 2 empty (its embeddings zero).
            for (r, len) in [(0usize, 2usize), (1, 1), (2, 0)] {
                for j in 0..l {
                    input[r * width + 1 + l * d + j] = f32::from(u8::from(j < len));
                    if j >= len {
                        input[r * width + 1 + j * d..r * width + 1 + (j + 1) * d].fill(0.0);
                    }
                }
            }
            let out_width = width - l * (d + 1) + seq.pooled_width();
            let weights: Vec<f32> = (0..n * out_width).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let objective = |store: &ParamStore, input: &[f32]| -> f64 {
                let x: Mat = dev.tensor_from_vec(input.to_vec(), (n, width));
                let out = pool_sequences(store, x, std::slice::from_ref(&seq)).as_vec();
                out.iter().zip(&weights).map(|(o, w)| f64::from(*o) * f64::from(*w)).sum()
            };
            let leaf: Mat = dev.tensor_from_vec(input.clone(), (n, width));
            let out = pool_sequences(&store, leaf.trace(Gradients::leaky()), std::slice::from_ref(&seq));
            let loss = (out * dev.tensor_from_vec(weights.clone(), (n, out_width))).sum();
            let mut grads = loss.backward();
            let input_grad = crate::params::take_grad(&mut grads, &leaf).unwrap();
            // The mask columns are data.
            let mask_columns = 1 + l * d..1 + l * (d + 1);
            crate::params::assert_gradients_match_central_differences(
                &store,
                &mut grads,
                &input,
                &input_grad,
                &|i| mask_columns.contains(&(i % width)),
                &objective,
                &format!("attention {attention}"),
            );
        }
    }
}
