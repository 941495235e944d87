//! A group's input from the assembled rows: its columns, the dot-product interactions, and
//! the behaviour sequences pooled (the same functions as `MultiTaskModel::forward_coded`'s
//! first steps and [`crate::attention`]).

use std::ops::Range;

use super::dense::{take, Chain, Dense};
use crate::attention::SequencePooling;
use crate::params::ParamStore;

/// How a group reads the assembled input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupInput {
    /// The group's columns of the assembled input.
    pub(crate) columns: Range<usize>,
    /// Dot products appended after them (column ranges of the group's input).
    pub(crate) dots: Vec<(Range<usize>, Range<usize>)>,
    pub(crate) sequences: Vec<Sequence>,
}

/// A behaviour sequence and its pooling ([`SequencePooling`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sequence {
    pub(crate) columns: Range<usize>,
    length: usize,
    dim: usize,
    /// The candidate's columns, the activation unit's hidden layers and its output.
    attention: Option<(Range<usize>, Chain, Dense)>,
    dots: Vec<Range<usize>>,
}

impl Sequence {
    pub(crate) fn new(store: &ParamStore, s: &SequencePooling) -> Self {
        let attention = s
            .attention
            .as_ref()
            .map(|(t, unit, out)| (t.clone(), Chain::new(store, &unit.layers), Dense::new(store, out)));
        Self { columns: s.columns.clone(), length: s.length, dim: s.dim, attention, dots: s.dots.clone() }
    }

    fn pooled_width(&self) -> usize {
        self.dim + self.dots.len()
    }

    /// Each position's weight: the activation unit's score (attention) or 1/count (mean),
    /// zero past the row's end. `x` holds the `n` rows of the group's input.
    fn weights(&self, x: &[f32], width: usize, n: usize) -> Vec<f32> {
        let (l, d, start) = (self.length, self.dim, self.columns.start);
        let mask = |r: usize| &x[r * width + start + l * d..r * width + self.columns.end];
        let Some((target, unit, out)) = &self.attention else {
            return (0..n)
                .flat_map(|r| {
                    let m = mask(r);
                    let count = m.iter().sum::<f32>().max(1.0);
                    m.iter().map(move |v| v / count)
                })
                .collect();
        };
        // [h_j, t, h_j − t, h_j ⊙ t] for every row and position.
        let mut features = take(n * l * 4 * d);
        for (i, f) in features.chunks_exact_mut(4 * d).enumerate() {
            let (r, j) = (i / l, i % l);
            let h = &x[r * width + start + j * d..r * width + start + (j + 1) * d];
            let t = &x[r * width + target.start..r * width + target.end];
            f[..d].copy_from_slice(h);
            f[d..2 * d].copy_from_slice(t);
            for c in 0..d {
                f[2 * d + c] = h[c] - t[c];
                f[3 * d + c] = h[c] * t[c];
            }
        }
        let hidden = unit.apply(features, n * l);
        let mut scores = out.apply(&hidden, n * l, false);
        super::dense::give(hidden);
        for r in 0..n {
            scores[r * l..(r + 1) * l].iter_mut().zip(mask(r)).for_each(|(s, m)| *s *= m);
        }
        scores
    }
}

impl GroupInput {
    /// The width of the group's input before pooling: its columns and the dot products.
    fn raw_width(&self) -> usize {
        self.columns.len() + self.dots.len()
    }

    /// The width of what [`Self::read`] returns.
    pub(crate) fn width(&self) -> usize {
        let pooled: usize = self.sequences.iter().map(|s| s.pooled_width() - s.columns.len()).sum();
        self.raw_width() + pooled
    }

    /// Per column of what [`Self::read`] returns, whether it is free of the candidate: read
    /// from outside the assembled input's `item` columns, and no dot product or attention with
    /// the candidate.
    pub(crate) fn candidate_free(&self, item: &Range<usize>) -> Vec<bool> {
        let raw: Vec<bool> =
            self.columns.clone().map(|c| !item.contains(&c)).chain(self.dots.iter().map(|_| false)).collect();
        let mut flags = Vec::with_capacity(self.width());
        let mut at = 0;
        for s in &self.sequences {
            flags.extend_from_slice(&raw[at..s.columns.start]);
            at = s.columns.end;
        }
        flags.extend_from_slice(&raw[at..]);
        for s in &self.sequences {
            flags.extend(std::iter::repeat_n(s.attention.is_none(), s.dim));
            flags.extend(std::iter::repeat_n(false, s.dots.len()));
        }
        flags
    }

    /// The group's input of the `n` assembled rows of `x` (`n x width`).
    pub(crate) fn read(&self, x: &[f32], width: usize, n: usize) -> Vec<f32> {
        let raw = self.raw_width();
        let mut out = take(n * raw);
        for (r, row) in out.chunks_exact_mut(raw).enumerate() {
            let src = &x[r * width + self.columns.start..r * width + self.columns.end];
            let (cols, dots) = row.split_at_mut(self.columns.len());
            cols.copy_from_slice(src);
            for (dot, (a, b)) in dots.iter_mut().zip(&self.dots) {
                *dot = src[a.clone()].iter().zip(&src[b.clone()]).map(|(a, b)| a * b).sum();
            }
        }
        if self.sequences.is_empty() {
            return out;
        }
        let pooled = self.pool(&out, raw, n);
        super::dense::give(out);
        pooled
    }

    /// Every sequence slot replaced by its pooled vector (then its dot products), appended
    /// after the remaining columns.
    fn pool(&self, x: &[f32], width: usize, n: usize) -> Vec<f32> {
        let out_width = self.width();
        let weights: Vec<Vec<f32>> = self.sequences.iter().map(|s| s.weights(x, width, n)).collect();
        let mut out = take(n * out_width);
        for (r, row) in out.chunks_exact_mut(out_width).enumerate() {
            let src = &x[r * width..(r + 1) * width];
            let mut at = 0;
            let mut w = 0;
            for s in &self.sequences {
                let kept = &src[at..s.columns.start];
                row[w..w + kept.len()].copy_from_slice(kept);
                w += kept.len();
                at = s.columns.end;
            }
            row[w..w + width - at].copy_from_slice(&src[at..]);
            w += width - at;
            for (s, weights) in self.sequences.iter().zip(&weights) {
                let (l, d) = (s.length, s.dim);
                let pooled = &mut row[w..w + d];
                pooled.fill(0.0);
                for (j, &a) in weights[r * l..(r + 1) * l].iter().enumerate() {
                    let h = &src[s.columns.start + j * d..s.columns.start + (j + 1) * d];
                    pooled.iter_mut().zip(h).for_each(|(p, h)| *p += a * h);
                }
                for (k, range) in s.dots.iter().enumerate() {
                    let dot = row[w..w + d].iter().zip(&src[range.clone()]).map(|(p, t)| p * t).sum();
                    row[w + d + k] = dot;
                }
                w += s.pooled_width();
            }
        }
        out
    }
}
