//! A first layer computed per distinct value of its input's coded blocks (see the module
//! docs above): the forward product, its backward pass, and the register-blocked adds between
//! the distinct values' products and the rows.

use faer::prelude::ReborrowMut;
use faer::{Accum, MatMut, MatRef};
use rayon::prelude::*;

use super::kernels::{gemm, gemm_par, par_rows, LayerShape, PARALLEL_MIN};
use super::pool::{give_buffer, take_buffer};

/// The narrowest first layer that runs coded. Narrower ones multiply fast enough that the coded
/// passes' fixed costs (a few small products and a pass over the rows per block) lose: measured
/// on the small and wide Census models (benches/README.md, "Training speed against PyTorch:
/// history").
pub const CODED_MIN_WIDTH: usize = 256;

/// Column blocks of a layer's input whose rows take few distinct values, and which: block `j`
/// of row `r` equals block `j` of row `blocks[j].first_rows[blocks[j].codes[r]]`. Built from a
/// batch's embedding ids (`BatchIds::codes`); blocks never overlap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputCodes {
    pub rows: usize,
    pub blocks: Vec<CodedBlock>,
}

/// One coded column block (an embedding slot).
#[derive(Debug, Clone, PartialEq)]
pub struct CodedBlock {
    pub offset: usize,
    pub width: usize,
    /// Per row, the index of its value among the block's distinct values.
    pub codes: Vec<u32>,
    /// Per distinct value, the first row that holds it.
    pub first_rows: Vec<u32>,
}

impl InputCodes {
    /// The blocks that lie inside `columns`, renumbered from its start: the codes of a slice of
    /// the input (a scope's columns).
    pub fn within(&self, columns: std::ops::Range<usize>) -> InputCodes {
        let blocks = self
            .blocks
            .iter()
            .filter(|b| b.offset >= columns.start && b.offset + b.width <= columns.end)
            .map(|b| CodedBlock { offset: b.offset - columns.start, ..b.clone() })
            .collect();
        InputCodes { rows: self.rows, blocks }
    }

    pub(super) fn distinct(&self) -> usize {
        self.blocks.iter().map(|b| b.first_rows.len()).sum()
    }

    /// Where each block's distinct values start in a buffer holding all blocks' in order.
    pub(super) fn starts(&self) -> Vec<usize> {
        self.blocks
            .iter()
            .scan(0, |at, b| {
                let start = *at;
                *at += b.first_rows.len();
                Some(start)
            })
            .collect()
    }

    /// The columns of a `width`-wide input outside every block.
    pub(super) fn dense_columns(&self, width: usize) -> Vec<usize> {
        let mut coded = vec![false; width];
        for b in &self.blocks {
            assert!(b.offset + b.width <= width, "input codes: block beyond the input");
            assert!(b.codes.len() == self.rows, "input codes: rows");
            for c in &mut coded[b.offset..b.offset + b.width] {
                assert!(!*c, "input codes: overlapping blocks");
                *c = true;
            }
        }
        (0..width).filter(|&c| !coded[c]).collect()
    }
}

/// Columns per tile of the coded passes: a tile of every block's distinct rows (`distinct x
/// tile` values) stays within about `bytes` of cache while the rows stream past it.
fn code_tile(distinct: usize, m: usize, bytes: usize) -> usize {
    let values = bytes / std::mem::size_of::<f32>();
    (values / distinct.max(1) / 16 * 16).clamp(16, m.max(16))
}

/// Rows per parallel task of the coded forward pass.
const CODED_ROWS: usize = 256;

/// The input columns `columns` of every row, packed (`n x columns.len()`).
fn pack_columns(input: &[f32], k: usize, columns: &[usize], n: usize) -> Vec<f32> {
    let mut out = take_buffer(n * columns.len());
    for (dst, row) in out.chunks_exact_mut(columns.len().max(1)).zip(input.chunks_exact(k)) {
        for (d, &c) in dst.iter_mut().zip(columns) {
            *d = row[c];
        }
    }
    out
}

/// The rows `rows` of a `k x m` row-major matrix, packed.
fn pack_rows(w: &[f32], m: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = take_buffer(rows.len() * m);
    for (dst, &r) in out.chunks_exact_mut(m.max(1)).zip(rows) {
        dst.copy_from_slice(&w[r * m..(r + 1) * m]);
    }
    out
}

/// Block `block`'s distinct values (`distinct x width`), read from their first rows.
fn distinct_values(input: &[f32], k: usize, block: &CodedBlock) -> Vec<f32> {
    let mut out = take_buffer(block.first_rows.len() * block.width);
    for (dst, &r) in out.chunks_exact_mut(block.width).zip(&block.first_rows) {
        let at = r as usize * k + block.offset;
        dst.copy_from_slice(&input[at..at + block.width]);
    }
    out
}

/// `out = x W` for a one-group layer whose input has coded blocks: the dense columns as one
/// product, each block's distinct values times its rows of `W`, then per row the product of
/// its value added in.
#[allow(clippy::too_many_arguments)]
pub(super) fn coded_product(
    input: &[f32],
    w: &[f32],
    codes: &InputCodes,
    dense: &[usize],
    shape: LayerShape,
    n: usize,
    out: &mut [f32],
) {
    let (k, m) = (shape.k, shape.m);
    if dense.is_empty() {
        par_rows(out, m, |_, row| row.fill(0.0));
    } else {
        let (xd, wd) = (pack_columns(input, k, dense, n), pack_rows(w, m, dense));
        gemm(
            MatMut::from_row_major_slice_mut(out, n, m),
            Accum::Replace,
            MatRef::from_row_major_slice(&xd, n, dense.len()),
            MatRef::from_row_major_slice(&wd, dense.len(), m),
            1.0,
            gemm_par(n, dense.len(), m),
        );
        give_buffer(xd);
        give_buffer(wd);
    }
    // proj[starts[j] + c] = (distinct value c of block j) W_j
    let (distinct, starts) = (codes.distinct(), codes.starts());
    let mut proj = take_buffer(distinct * m);
    for (block, &start) in codes.blocks.iter().zip(&starts) {
        let (u, d) = (block.first_rows.len(), block.width);
        let values = distinct_values(input, k, block);
        gemm(
            MatMut::from_row_major_slice_mut(&mut proj[start * m..(start + u) * m], u, m),
            Accum::Replace,
            MatRef::from_row_major_slice(&values, u, d),
            MatRef::from_row_major_slice(&w[block.offset * m..(block.offset + d) * m], d, m),
            1.0,
            gemm_par(u, d, m),
        );
        give_buffer(values);
    }
    let tile = code_tile(distinct, m, 256 << 10);
    let plan = CodedRows { codes, starts: &starts, m, tile };
    if out.len() < PARALLEL_MIN {
        simd(AddTo { plan: &plan, first: 0, rows: out, proj: &proj });
    } else {
        out.par_chunks_mut(CODED_ROWS * m)
            .enumerate()
            .for_each(|(i, rows)| simd(AddTo { plan: &plan, first: i * CODED_ROWS, rows, proj: &proj }));
    }
    give_buffer(proj);
}

/// Where each row's coded values sit, for the coded passes over rows.
struct CodedRows<'a> {
    codes: &'a InputCodes,
    starts: &'a [usize],
    m: usize,
    tile: usize,
}

impl CodedRows<'_> {
    /// Adds to `rows` (rows `first..` of the output, `m` wide) every block's product of the
    /// row's value, `proj` holding them (`distinct x m`), column tile by column tile.
    #[inline(always)]
    fn add_to(&self, first: usize, rows: &mut [f32], proj: &[f32]) {
        let m = self.m;
        let mut at = vec![0usize; self.codes.blocks.len()];
        for t0 in (0..m).step_by(self.tile) {
            let t1 = (t0 + self.tile).min(m);
            for (r, row) in (first..).zip(rows.chunks_exact_mut(m)) {
                for ((at, block), &start) in at.iter_mut().zip(&self.codes.blocks).zip(self.starts) {
                    *at = (start + block.codes[r] as usize) * m;
                }
                add_gathered(&mut row[t0..t1], proj, &at, t0);
            }
        }
    }

    /// Columns `t0..t1` of `go` (`n x m`) summed per block and value: `distinct x (t1 - t0)`.
    #[inline(always)]
    fn sum_columns(&self, go: &[f32], t0: usize, t1: usize, distinct: usize) -> Vec<f32> {
        let width = t1 - t0;
        let mut acc = vec![0.0f32; distinct * width];
        let mut at = vec![0usize; self.codes.blocks.len()];
        for (r, g) in go.chunks_exact(self.m).enumerate() {
            for ((at, block), &start) in at.iter_mut().zip(&self.codes.blocks).zip(self.starts) {
                *at = (start + block.codes[r] as usize) * width;
            }
            add_scattered(&mut acc, &at, &g[t0..t1]);
        }
        acc
    }
}

/// Columns per register block of the coded adds: 64 values, eight AVX2 registers.
const REGISTER_COLUMNS: usize = 64;

/// `dst += Σ_i src[at[i] + first..][..dst.len()]`: the sum over the rows of `src` starting at
/// `at`, of the columns from `first`, built up in registers block by block of columns and added
/// to `dst` once.
#[inline(always)]
fn add_gathered(dst: &mut [f32], src: &[f32], at: &[usize], first: usize) {
    let mut blocks = dst.chunks_exact_mut(REGISTER_COLUMNS);
    let mut c0 = first;
    for out in &mut blocks {
        let mut acc = [0.0f32; REGISTER_COLUMNS];
        for &a in at {
            let row: &[f32; REGISTER_COLUMNS] = src[a + c0..a + c0 + REGISTER_COLUMNS].try_into().expect("a block");
            acc.iter_mut().zip(row).for_each(|(s, x)| *s += x);
        }
        out.iter_mut().zip(&acc).for_each(|(o, s)| *o += s);
        c0 += REGISTER_COLUMNS;
    }
    let tail = blocks.into_remainder();
    let len = tail.len();
    for &a in at {
        tail.iter_mut().zip(&src[a + c0..a + c0 + len]).for_each(|(o, x)| *o += x);
    }
}

/// `dst[at[i]..][..g.len()] += g` for every `i`, `g` held in registers block by block.
#[inline(always)]
fn add_scattered(dst: &mut [f32], at: &[usize], g: &[f32]) {
    let mut blocks = g.chunks_exact(REGISTER_COLUMNS);
    let mut c0 = 0;
    for block in &mut blocks {
        let block: &[f32; REGISTER_COLUMNS] = block.try_into().expect("a block");
        for &a in at {
            let row: &mut [f32; REGISTER_COLUMNS] =
                (&mut dst[a + c0..a + c0 + REGISTER_COLUMNS]).try_into().expect("a block");
            row.iter_mut().zip(block).for_each(|(d, x)| *d += x);
        }
        c0 += REGISTER_COLUMNS;
    }
    let tail = blocks.remainder();
    for &a in at {
        dst[a + c0..a + c0 + tail.len()].iter_mut().zip(tail).for_each(|(d, x)| *d += x);
    }
}

/// Runs `op` compiled for the widest vector unit this CPU has (AVX2 where present), chosen at
/// run time by pulp's safe dispatch. Strict IEEE arithmetic either way (no fused multiply-adds
/// are formed), so results do not depend on it. `op` is a struct with an `#[inline(always)]`
/// body rather than a closure: a closure's body is compiled as a function of its own, outside
/// the dispatched AVX2 context, unless the inliner takes it, and it does not for large ones.
#[inline(always)]
fn simd<Op: pulp::WithSimd>(op: Op) -> Op::Output {
    pulp::Arch::new().dispatch(op)
}

/// [`CodedRows::add_to`] as a dispatched op.
struct AddTo<'a> {
    plan: &'a CodedRows<'a>,
    first: usize,
    rows: &'a mut [f32],
    proj: &'a [f32],
}

impl pulp::WithSimd for AddTo<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.plan.add_to(self.first, self.rows, self.proj)
    }
}

/// [`CodedRows::sum_columns`] as a dispatched op.
struct SumColumns<'a> {
    plan: &'a CodedRows<'a>,
    go: &'a [f32],
    t0: usize,
    t1: usize,
    distinct: usize,
}

impl pulp::WithSimd for SumColumns<'_> {
    type Output = Vec<f32>;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<f32> {
        self.plan.sum_columns(self.go, self.t0, self.t1, self.distinct)
    }
}

/// The backward pass of [`coded_product`] for `dOut = go` (`n x m`): adds `dW` into `dw` and
/// the input's gradient into `dx`, coded blocks' into the first row of each distinct value.
#[allow(clippy::too_many_arguments)]
pub(super) fn coded_backward(
    input: &[f32],
    w: &[f32],
    codes: &InputCodes,
    dense: &[usize],
    go: &[f32],
    n: usize,
    shape: LayerShape,
    dw: &mut [f32],
    dx: &mut [f32],
) {
    let (k, m) = (shape.k, shape.m);
    let d_out = MatRef::from_row_major_slice(go, n, m);
    if !dense.is_empty() {
        let kd = dense.len();
        let (xd, wd) = (pack_columns(input, k, dense, n), pack_rows(w, m, dense));
        let mut part = take_buffer(kd * m);
        gemm(
            MatMut::from_row_major_slice_mut(&mut part, kd, m),
            Accum::Replace,
            MatRef::from_row_major_slice(&xd, n, kd).transpose(),
            d_out,
            1.0,
            gemm_par(kd, n, m),
        );
        for (&c, g) in dense.iter().zip(part.chunks_exact(m)) {
            dw[c * m..(c + 1) * m].iter_mut().zip(g).for_each(|(a, g)| *a += g);
        }
        let mut dxd = take_buffer(n * kd);
        gemm(
            MatMut::from_row_major_slice_mut(&mut dxd, n, kd),
            Accum::Replace,
            d_out,
            MatRef::from_row_major_slice(&wd, kd, m).transpose(),
            1.0,
            gemm_par(n, m, kd),
        );
        for (row, g) in dx.chunks_exact_mut(k).zip(dxd.chunks_exact(kd)) {
            for (&c, g) in dense.iter().zip(g) {
                row[c] += g;
            }
        }
        [xd, wd, part, dxd].into_iter().for_each(give_buffer);
    }
    // sums[starts[j] + c] = Σ of dOut over the rows whose block j holds value c; column tiles
    // in parallel, each summing its rows in order (the result does not depend on threads).
    let (distinct, starts) = (codes.distinct(), codes.starts());
    let tile = code_tile(distinct, m, 128 << 10);
    let tiles: Vec<(usize, usize)> = (0..m).step_by(tile).map(|t0| (t0, (t0 + tile).min(m))).collect();
    let plan = CodedRows { codes, starts: &starts, m, tile };
    let sum_tile = |&(t0, t1): &(usize, usize)| simd(SumColumns { plan: &plan, go, t0, t1, distinct });
    let parts: Vec<Vec<f32>> = if n * m < PARALLEL_MIN {
        tiles.iter().map(sum_tile).collect()
    } else {
        tiles.par_iter().map(sum_tile).collect()
    };
    let mut sums = take_buffer(distinct * m);
    for (&(t0, t1), part) in tiles.iter().zip(&parts) {
        for (dst, src) in sums.chunks_exact_mut(m).zip(part.chunks_exact(t1 - t0)) {
            dst[t0..t1].copy_from_slice(src);
        }
    }
    let mut dw_all = MatMut::from_row_major_slice_mut(dw, k, m);
    for (block, &start) in codes.blocks.iter().zip(&starts) {
        let (u, d) = (block.first_rows.len(), block.width);
        let sums_j = MatRef::from_row_major_slice(&sums[start * m..(start + u) * m], u, m);
        let values = distinct_values(input, k, block);
        // dW_j += U_j^T sums_j
        gemm(
            dw_all.rb_mut().subrows_mut(block.offset, d),
            Accum::Add,
            MatRef::from_row_major_slice(&values, u, d).transpose(),
            sums_j,
            1.0,
            gemm_par(d, u, m),
        );
        // each distinct value's gradient, sums_j W_j^T, into its first row
        let mut du = take_buffer(u * d);
        gemm(
            MatMut::from_row_major_slice_mut(&mut du, u, d),
            Accum::Replace,
            sums_j,
            MatRef::from_row_major_slice(&w[block.offset * m..(block.offset + d) * m], d, m).transpose(),
            1.0,
            gemm_par(u, m, d),
        );
        for (&r, g) in block.first_rows.iter().zip(du.chunks_exact(d)) {
            let at = r as usize * k + block.offset;
            dx[at..at + d].iter_mut().zip(g).for_each(|(a, g)| *a += g);
        }
        give_buffer(values);
        give_buffer(du);
    }
    give_buffer(sums);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::test_support::*;
    use dfdx::prelude::*;

    use crate::fused::mlp;
    use crate::params::{Dev, Mat};

    /// A coded first layer (two coded blocks, three dense columns) under a plain second layer,
    /// against the same chain without codes: equal outputs and parameter gradients, and the
    /// input's gradient equal per row in the dense columns and per distinct value, summed, in
    /// the coded blocks. Sequential and parallel sizes (the larger one with several column
    /// tiles per pass).
    #[test]
    fn coded_first_layer_matches_the_plain_one() {
        let dev = Dev::default();
        for n in [37, 2000] {
            let k = 8;
            // offset, width, distinct values; 150 values of a 256-wide layer are over one
            // column tile of the backward pass.
            let blocks = [(0, 3, if n > 1000 { 150 } else { 5 }), (5, 2, 3)];
            let dense = [3, 4, 7];
            let code = |r: usize, j: usize| (r * 7 + j * 3) % blocks[j].2;
            let mut values = vec![0.0f32; n * k];
            for r in 0..n {
                for (j, &(offset, width, _)) in blocks.iter().enumerate() {
                    for i in 0..width {
                        values[r * k + offset + i] = (code(r, j) * width + i) as f32 * 0.13 - 0.4;
                    }
                }
                for &c in &dense {
                    values[r * k + c] = (((r + 1) * (c + 3) * 31) % 17) as f32 * 0.1 - 0.8;
                }
            }
            let codes = InputCodes {
                rows: n,
                blocks: blocks
                    .iter()
                    .enumerate()
                    .map(|(j, &(offset, width, distinct))| CodedBlock {
                        offset,
                        width,
                        codes: (0..n).map(|r| code(r, j) as u32).collect(),
                        first_rows: (0..distinct).map(|c| (0..n).find(|&r| code(r, j) == c).unwrap() as u32).collect(),
                    })
                    .collect(),
            };
            let x: Mat = dev.tensor_from_vec(values, (n, k));
            // Biases off the grid of the inputs, so that no unit sits exactly on its ReLU's kink
            // (where rounding would decide whether its gradient passes).
            // Not a multiple of the 64-column register blocks: their tails run too.
            let m = CODED_MIN_WIDTH + 40;
            let bias = (0..m).map(|i| (i % 40) as f32 * 0.01 - 0.2037).collect();
            let first = vec![(filled(&dev, k, m, 3), dev.tensor_from_vec(bias, (m,)))];
            let second = vec![(filled(&dev, m, 6, 4), dev.tensor_from_vec(vec![0.1; 6], (6,)))];
            let u = filled(&dev, n, 6, 9);
            let coded = mlp(x.clone().trace(Gradients::leaky()), &[refs(&first), refs(&second)], Some(&codes));
            let plain = mlp(x.clone().trace(Gradients::leaky()), &[refs(&first), refs(&second)], None);
            close(&coded.retaped::<NoneTape>().as_vec(), &plain.retaped::<NoneTape>().as_vec());
            let gc = (coded * u.clone()).sum::<(), _>().backward();
            let gp = (plain * u.clone()).sum::<(), _>().backward();
            for (w, b) in first.iter().chain(&second) {
                close(&gc.get(w).as_vec(), &gp.get(w).as_vec());
                close(&gc.get(b).as_vec(), &gp.get(b).as_vec());
            }
            let (dxc, dxp) = (gc.get(&x).as_vec(), gp.get(&x).as_vec());
            let column = |g: &[f32], c: usize| (0..n).map(|r| g[r * k + c]).collect::<Vec<f32>>();
            for &c in &dense {
                close(&column(&dxc, c), &column(&dxp, c));
            }
            for (j, &(offset, width, distinct)) in blocks.iter().enumerate() {
                let per_value = |g: &[f32]| {
                    let mut sums = vec![0.0f32; distinct * width];
                    for r in 0..n {
                        for i in 0..width {
                            sums[code(r, j) * width + i] += g[r * k + offset + i];
                        }
                    }
                    sums
                };
                close(&per_value(&dxc), &per_value(&dxp));
                // The coded path ran: only each value's first row holds its gradient.
                let firsts = &codes.blocks[j].first_rows;
                let zero = (0..n as u32)
                    .filter(|r| !firsts.contains(r))
                    .all(|r| (0..width).all(|i| dxc[r as usize * k + offset + i] == 0.0));
                assert!(zero, "rows after a value's first hold gradient");
            }
        }
    }
}
