//! Dense layers with their weights copied out of the parameter store once, the passes the
//! packed networks share (softmax, mixtures of experts), and per-thread scratch buffers.

use std::cell::RefCell;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::panels::Panels;
use super::reuse::FirstInput;
use crate::cpu::clean_upper_state;
use crate::fused::gates::{mix_row, softmax_row};
use crate::params::{Linear, ParamStore};

/// `act(x W + b)` with `W` (`k x m`, row-major) and `b` held as plain values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dense {
    pub(crate) k: usize,
    pub(crate) m: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    /// `W` packed for a SIMD kernel, where the CPU and the layer's width take it.
    panels: Option<Panels>,
    /// For a layer reading a group's input, the layer split by its input columns
    /// ([`super::reuse::ColumnSplit::split`]).
    pub(crate) parts: Option<Box<[Dense; 2]>>,
}

/// `n` rows of a row-major buffer, `stride` values each, of which a layer reads its `k`
/// inputs from column `at` on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub(crate) values: &'a [f32],
    pub(crate) n: usize,
    pub(crate) stride: usize,
    pub(crate) at: usize,
}

impl<'a> Rows<'a> {
    /// The `n` rows of `values`, every value of them.
    pub(crate) fn whole(values: &'a [f32], n: usize, width: usize) -> Self {
        Self { values, n, stride: width, at: 0 }
    }
}

impl Dense {
    pub(crate) fn new(store: &ParamStore, layer: &Linear) -> Self {
        let shape = store.shape(layer.w);
        Self::from_values(shape[0], shape[1], store.values(layer.w), store.values(layer.b))
    }

    fn from_values(k: usize, m: usize, w: Vec<f32>, b: Vec<f32>) -> Self {
        let panels = Panels::new(&w, k, m);
        Self { k, m, w, b, panels, parts: None }
    }

    /// The layer restricted to the input columns `columns` (in that order): the rows of `W`
    /// that multiply them, with the bias when `bias` (else zeros).
    pub(crate) fn rows_of(&self, columns: &[usize], bias: bool) -> Self {
        let mut w = Vec::with_capacity(columns.len() * self.m);
        for &c in columns {
            w.extend_from_slice(&self.w[c * self.m..(c + 1) * self.m]);
        }
        let b = if bias { self.b.clone() } else { vec![0.0; self.m] };
        Self::from_values(columns.len(), self.m, w, b)
    }

    fn weights(&self) -> MatRef<'_, f32> {
        MatRef::from_row_major_slice(&self.w, self.k, self.m)
    }

    /// `act(x W + b)` into columns `at..at + m` of `out`, row-major with `stride` values per row.
    pub(crate) fn apply_into(&self, x: Rows<'_>, out: &mut [f32], stride: usize, at: usize, relu: bool) {
        let n = x.n;
        debug_assert!(x.at + self.k <= x.stride && x.values.len() >= n * x.stride);
        debug_assert!(at + self.m <= stride && out.len() >= n * stride);
        if let Some(panels) = &self.panels {
            panels.apply(&x.values[x.at..], x.stride, n, &self.b, out, stride, at, relu);
            return;
        }
        let row = |r: usize| r * stride + at..r * stride + at + self.m;
        for r in 0..n {
            out[row(r)].copy_from_slice(&self.b);
        }
        let x = MatRef::from_row_major_slice(&x.values[..n * x.stride], n, x.stride).subcols(x.at, self.k);
        if self.k > 0 && n == 1 {
            // faer takes another path for a single row, whose sums round differently: the row
            // goes through the path of two, so that a row's outputs never depend on how many rows
            // share its product.
            let mut two = take(2 * self.k);
            for (c, v) in x.row(0).iter().enumerate() {
                (two[c], two[self.k + c]) = (*v, *v);
            }
            let mut pair = take(2 * self.m);
            pair[..self.m].copy_from_slice(&self.b);
            pair[self.m..].copy_from_slice(&self.b);
            let dst = MatMut::from_row_major_slice_mut(&mut pair, 2, self.m);
            matmul(dst, Accum::Add, MatRef::from_row_major_slice(&two, 2, self.k), self.weights(), 1.0, Par::Seq);
            clean_upper_state();
            out[row(0)].copy_from_slice(&pair[..self.m]);
            give(two);
            give(pair);
        } else if self.k > 0 && n > 0 {
            // (faer 0.23's `from_row_major_slice_with_stride_mut` swaps the two strides: a view of
            // the whole rows, then of the columns, is the safe way to the block.)
            let dst = MatMut::from_row_major_slice_mut(&mut out[..n * stride], n, stride).subcols_mut(at, self.m);
            matmul(dst, Accum::Add, x, self.weights(), 1.0, Par::Seq);
            clean_upper_state();
        }
        if relu {
            for r in 0..n {
                out[row(r)].iter_mut().for_each(|v| *v = if *v > 0.0 { *v } else { 0.0 });
            }
        }
    }

    /// `act(x W + b)` for the `n` rows of `x` (row-major `n x k`), in a scratch buffer.
    pub(crate) fn apply(&self, x: &[f32], n: usize, relu: bool) -> Vec<f32> {
        let mut out = take(n * self.m);
        self.apply_into(Rows::whole(x, n, self.k), &mut out, self.m, 0, relu);
        out
    }
}

/// Layers in sequence, each followed by a ReLU (an MLP, a tower).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chain {
    pub(crate) layers: Vec<Dense>,
}

impl Chain {
    pub(crate) fn new(store: &ParamStore, layers: &[Linear]) -> Self {
        Self { layers: layers.iter().map(|l| Dense::new(store, l)).collect() }
    }

    /// The output of a group's input, whose first layer may reuse a request's shared part.
    pub(crate) fn apply_first(&self, input: &FirstInput<'_>) -> Vec<f32> {
        match self.layers.split_first() {
            None => {
                let mut x = take(input.x.len());
                x.copy_from_slice(input.x);
                x
            }
            Some((first, rest)) => relu_layers(rest, input.apply(first, true), input.n),
        }
    }

    /// The output of the `n` rows of `x` (`x` itself when there is no layer).
    pub(crate) fn apply(&self, x: Vec<f32>, n: usize) -> Vec<f32> {
        relu_layers(&self.layers, x, n)
    }
}

/// `layers` in sequence over the `n` rows of `x`, each followed by a ReLU.
fn relu_layers(layers: &[Dense], x: Vec<f32>, n: usize) -> Vec<f32> {
    layers.iter().fold(x, |x, layer| {
        let out = layer.apply(&x, n, true);
        give(x);
        out
    })
}

/// Each of `layers` (`k x m` each) over its own column block of `x` (`n x G*k`), side by side
/// with ReLU: one layer of every expert of a bank.
pub(crate) fn grouped(layers: &[Dense], x: &[f32], n: usize) -> Vec<f32> {
    let (k, m) = (layers[0].k, layers[0].m);
    let (width_in, width_out) = (layers.len() * k, layers.len() * m);
    let mut out = take(n * width_out);
    for (g, layer) in layers.iter().enumerate() {
        layer.apply_into(Rows { values: x, n, stride: width_in, at: g * k }, &mut out, width_out, g * m, true);
    }
    out
}

/// Row-wise softmax of `z` (`rows x count`) in place.
pub(crate) fn softmax_rows(z: &mut [f32], count: usize) {
    z.chunks_exact_mut(count).for_each(softmax_row);
}

/// `out[b] = Σ_e p[b, e] h[b, e*width..(e+1)*width]`: the gate weights `p` (`n x count`)
/// mixing `count` experts' outputs side by side in `h`.
pub(crate) fn mixture(h: &[f32], p: &[f32], n: usize, count: usize, width: usize) -> Vec<f32> {
    let mut out = take(n * width);
    out.fill(0.0);
    for (b, o) in out.chunks_exact_mut(width).enumerate() {
        mix_row(o, &h[b * count * width..(b + 1) * count * width], &p[b * count..(b + 1) * count]);
    }
    out
}

/// `[a | b]` row by row (`n` rows of `wa` and `wb` values).
pub(crate) fn side_by_side(a: &[f32], wa: usize, b: &[f32], wb: usize, n: usize) -> Vec<f32> {
    let mut out = take(n * (wa + wb));
    for (r, row) in out.chunks_exact_mut(wa + wb).enumerate() {
        row[..wa].copy_from_slice(&a[r * wa..(r + 1) * wa]);
        row[wa..].copy_from_slice(&b[r * wb..(r + 1) * wb]);
    }
    out
}

thread_local! {
    /// Buffers handed back on this thread, for the next pass: serving scores many small
    /// batches, and fresh large allocations would be faulted in (zeroed) every time.
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers kept per thread.
const SCRATCH_BUFFERS: usize = 32;

/// A buffer of `len` values with unspecified contents (every caller overwrites them).
pub(crate) fn take(len: usize) -> Vec<f32> {
    let found = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let best = s.iter().enumerate().filter(|(_, b)| b.capacity() >= len).min_by_key(|(_, b)| b.capacity());
        best.map(|(i, _)| i).map(|i| s.swap_remove(i))
    });
    let mut buf = found.unwrap_or_default();
    buf.resize(len, 0.0);
    buf.truncate(len);
    buf
}

/// Hands a buffer back for [`take`] on this thread.
pub(crate) fn give(buf: Vec<f32>) {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SCRATCH_BUFFERS {
            s.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(k: usize, m: usize, seed: f32) -> Dense {
        let w = (0..k * m).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
        let b = (0..m).map(|i| ((i as f32 - seed) * 0.11).cos()).collect();
        Dense::from_values(k, m, w, b)
    }

    fn reference(layer: &Dense, x: &[f32], n: usize, relu: bool) -> Vec<f32> {
        let mut out = vec![0.0; n * layer.m];
        for r in 0..n {
            for c in 0..layer.m {
                let v: f32 =
                    layer.b[c] + (0..layer.k).map(|i| x[r * layer.k + i] * layer.w[i * layer.m + c]).sum::<f32>();
                out[r * layer.m + c] = if relu { v.max(0.0) } else { v };
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn dense_layers_and_groups_match_the_definition() {
        let (n, k, m) = (7, 5, 4);
        let x: Vec<f32> = (0..n * 2 * k).map(|i| (i as f32 * 0.13).cos()).collect();
        let first = dense(2 * k, m, 1.0);
        close(&first.apply(&x, n, false), &reference(&first, &x, n, false));
        close(&first.apply(&x, n, true), &reference(&first, &x, n, true));
        // Two groups, each over its own half of the columns.
        let layers = [dense(k, m, 2.0), dense(k, m, 3.0)];
        let out = grouped(&layers, &x, n);
        for (g, layer) in layers.iter().enumerate() {
            let block: Vec<f32> = (0..n).flat_map(|r| x[r * 2 * k + g * k..r * 2 * k + (g + 1) * k].to_vec()).collect();
            let want = reference(layer, &block, n, true);
            let got: Vec<f32> = (0..n).flat_map(|r| out[r * 2 * m + g * m..r * 2 * m + (g + 1) * m].to_vec()).collect();
            close(&got, &want);
        }
    }

    #[test]
    fn restricted_rows_add_up_to_the_whole_layer() {
        let (n, k, m) = (3, 6, 5);
        let x: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.7).sin()).collect();
        let layer = dense(k, m, 4.0);
        let (left, right) = ([0usize, 2, 5], [1usize, 3, 4]);
        let x = &x;
        let pick =
            |cols: &[usize]| -> Vec<f32> { (0..n).flat_map(|r| cols.iter().map(move |&c| x[r * k + c])).collect() };
        let a = layer.rows_of(&left, true).apply(&pick(&left), n, false);
        let b = layer.rows_of(&right, false).apply(&pick(&right), n, false);
        let sum: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
        close(&sum, &layer.apply(x, n, false));
    }

    #[test]
    fn softmax_mixtures_weigh_each_expert() {
        let mut p = vec![0.0, (2.0f32).ln(), 5.0, 5.0];
        softmax_rows(&mut p, 2);
        close(&p, &[1.0 / 3.0, 2.0 / 3.0, 0.5, 0.5]);
        // Two rows, two experts of width 2.
        let h = [1.0, 2.0, 4.0, 8.0, 1.0, 1.0, 3.0, 5.0];
        close(&mixture(&h, &p, 2, 2, 2), &[3.0, 6.0, 2.0, 3.0]);
        assert_eq!(side_by_side(&[1.0, 2.0], 1, &[3.0, 4.0, 5.0, 6.0], 2, 2), vec![1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    }
}
