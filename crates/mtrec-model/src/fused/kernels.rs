//! The passes the fused ops share: faer's matrix product (with the vector registers' upper
//! halves cleared after it), row-parallel element-wise passes in fixed blocks, column sums and
//! ReLU masks. Sums over blocks are added in block order, so no result depends on the thread
//! count.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::cpu::clean_upper_state;

/// Rows per block: blocks run in parallel, and sums over blocks are added in block order, so
/// results never depend on the thread count.
const BLOCK_ROWS: usize = 64;
/// Below this many values an element-wise pass runs on the calling thread: waking rayon's
/// workers costs more.
pub(super) const PARALLEL_MIN: usize = 1 << 16;
/// Below this many multiply-adds a matrix product runs on the calling thread: handing a
/// smaller one to the pool costs more than the second core saves (the threshold was measured
/// on the Census models: benches/README.md, "Training speed against PyTorch: history").
pub(super) const PARALLEL_GEMM_MIN: usize = 1 << 24;

/// faer's `matmul`, then the vector registers' upper halves cleared on this thread
/// ([`crate::cpu`]; the pool's threads clear theirs when their next job starts).
pub(super) fn gemm(
    dst: MatMut<'_, f32>,
    accum: Accum,
    lhs: MatRef<'_, f32>,
    rhs: MatRef<'_, f32>,
    alpha: f32,
    par: Par,
) {
    matmul(dst, accum, lhs, rhs, alpha, par);
    clean_upper_state();
}

pub(super) fn gemm_par(rows: usize, inner: usize, cols: usize) -> Par {
    if rows * inner * cols < PARALLEL_GEMM_MIN {
        Par::Seq
    } else {
        Par::rayon(rayon::current_num_threads())
    }
}

/// Where `values` is positive: where a ReLU passed its input through.
pub(super) fn positive(values: &[f32]) -> Vec<bool> {
    let mut flags = vec![false; values.len()];
    let pass = |(flags, values): (&mut [bool], &[f32])| {
        clean_upper_state();
        flags.iter_mut().zip(values).for_each(|(f, &v)| *f = v > 0.0);
    };
    if values.len() < PARALLEL_MIN {
        pass((&mut flags, values));
    } else {
        flags.par_chunks_mut(PARALLEL_MIN).zip(values.par_chunks(PARALLEL_MIN)).for_each(pass);
    }
    flags
}

/// Zeroes the gradient where the ReLU blocked its input: where `passed` is false for the
/// matching entry of `by` (the layer's output, or its kept flags). A select, not a branch, so
/// that the pass vectorizes.
pub(super) fn mask_rows<A: Copy + Sync>(g: &mut [f32], by: &[A], passed: impl Fn(A) -> bool + Sync, width: usize) {
    par_rows(g, width, |r, row| {
        for (g, &a) in row.iter_mut().zip(&by[r * width..(r + 1) * width]) {
            *g = if passed(a) { *g } else { 0.0 };
        }
    });
}

/// Runs `f(row_index, row)` over the rows (`width` values each) of `buf`, in parallel blocks.
pub(super) fn par_rows(buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    let block = |k: usize, rows: &mut [f32]| {
        clean_upper_state();
        for (i, row) in rows.chunks_mut(width).enumerate() {
            f(k * BLOCK_ROWS + i, row);
        }
    };
    if buf.len() < PARALLEL_MIN {
        buf.chunks_mut(BLOCK_ROWS * width).enumerate().for_each(|(k, rows)| block(k, rows));
    } else {
        buf.par_chunks_mut(BLOCK_ROWS * width).enumerate().for_each(|(k, rows)| block(k, rows));
    }
}

pub(super) fn add_into(acc: &mut [f32], g: &[f32]) {
    if acc.len() < PARALLEL_MIN {
        acc.iter_mut().zip(g).for_each(|(a, g)| *a += g);
    } else {
        acc.par_chunks_mut(PARALLEL_MIN).zip(g.par_chunks(PARALLEL_MIN)).for_each(|(acc, g)| {
            clean_upper_state();
            acc.iter_mut().zip(g).for_each(|(a, g)| *a += g);
        });
    }
}

/// Per-column sums of a row-major `rows x width` buffer: partial sums per block in parallel,
/// then added in block order.
pub(super) fn column_sums(g: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; width];
    if width == 0 {
        return sums;
    }
    let partial = |block: &[f32]| {
        clean_upper_state();
        let mut s = vec![0.0f32; width];
        for row in block.chunks(width) {
            s.iter_mut().zip(row).for_each(|(s, x)| *s += x);
        }
        s
    };
    let partials: Vec<Vec<f32>> = if g.len() < PARALLEL_MIN {
        g.chunks(BLOCK_ROWS * width).map(partial).collect()
    } else {
        g.par_chunks(BLOCK_ROWS * width).map(partial).collect()
    };
    for p in partials {
        sums.iter_mut().zip(&p).for_each(|(s, x)| *s += x);
    }
    sums
}

/// The shapes of one layer of a chain: groups, in and out width per group.
#[derive(Clone, Copy)]
pub(super) struct LayerShape {
    pub(super) groups: usize,
    pub(super) k: usize,
    pub(super) m: usize,
    pub(super) relu: bool,
}

impl LayerShape {
    pub(super) fn width_in(&self) -> usize {
        self.groups * self.k
    }
    pub(super) fn width_out(&self) -> usize {
        self.groups * self.m
    }
}
