//! Fused ops with hand-written backward passes, recorded on dfdx's tape.
//!
//! dfdx 0.13 runs every element-wise op through a generic strided index, single-threaded, and
//! allocates a fresh buffer per op; its matrix products use gemm 0.15, about 1.6x slower on
//! this machine's CPU than current GEMMs (`../shared/notes/DFDX.md` §4, benches/README.md).
//! The ops here are the model's hot path:
//!
//! - [`mlp`]: a whole ReLU MLP, or an expert bank (the experts' first layers as one product,
//!   each deeper layer of all experts as one grouped product over their column blocks), as one
//!   op; products through faer, bias and ReLU in the same pass over each output, activations
//!   kept inside the op;
//! - [`linear`]: one layer without activation (gates, output heads);
//! - [`mix`]: a gate's softmax and its mixture of the experts; [`mix_gates`]: several gates
//!   over the same experts (MMoE's one per task), reading them once.
//!
//! In training, the first layer over the assembled input can take [`InputCodes`]: for the
//! embedding slots of single-id features, which id each row holds. A batch of 2,048 rows holds
//! a few dozen distinct ids of a small vocabulary, so that slot's part of `x W` is computed once
//! per distinct id (`U_s W_s`, then added to each row), and so are its parts of the backward
//! pass: the rows' output gradients are summed per id first, then multiplied. The three
//! products of that layer (`x W`, `x^T dOut`, `dOut W^T`) shrink by about the ratio of rows to
//! distinct ids; what remains is one add of a `width_out` row per row and slot each way.
//! The input's gradient then holds, in a coded slot, each id's summed gradient in the first
//! row holding it and zero in the others: exactly what the scatter to the embedding rows sums
//! (`EmbeddingTables::sparse_grads`), but not a per-row gradient.
//!
//! Each records one backward closure through the public `Tape` API; without a tape (inference)
//! nothing is recorded and the same code serves both. Element-wise passes and sums run on rayon
//! over fixed-size row blocks (their results do not depend on the thread count); a run is
//! deterministic for a given thread count, as the trainer promises. Inputs are read with one copy each (dfdx gives no borrowed view of a
//! tensor's data); scratch buffers come from a small bounded pool.

use dfdx::prelude::*;
use faer::linalg::matmul::matmul;
use faer::prelude::ReborrowMut;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::cpu::clean_upper_state;
use crate::params::{take_grad, Dev, Mat, TapeKind, Vector};

/// Rows per block: blocks run in parallel, and sums over blocks are added in block order, so
/// results never depend on the thread count.
const BLOCK_ROWS: usize = 64;
/// Below this many values an element-wise pass runs on the calling thread: waking rayon's
/// workers costs more.
const PARALLEL_MIN: usize = 1 << 16;
/// Below this many multiply-adds a matrix product runs on the calling thread: handing a
/// smaller one to the pool costs more than the second core saves (2^24 against 2^18: small
/// Census model +7-15%, wide +0.3-5%, alternated on a 2-core Xeon; benches/README.md).
const PARALLEL_GEMM_MIN: usize = 1 << 24;

/// Freed scratch buffers kept for the next step, so that large buffers are not handed back to
/// the OS and faulted in again (zeroed by the kernel) on every step. Bounded by
/// [`POOL_BYTES`]; its contents never reach a result (every taken buffer is overwritten).
static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
const POOL_BYTES: usize = 256 << 20;

/// A buffer of `len` values with unspecified contents: the smallest pooled buffer that fits
/// (and is not over twice the size), or a new one.
fn take_buffer(len: usize) -> Vec<f32> {
    let found = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len && b.capacity() <= 2 * len.max(1024))
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        best.map(|i| pool.swap_remove(i))
    };
    match found {
        Some(mut b) => {
            b.resize(len, 0.0);
            b.truncate(len);
            b
        }
        None => vec![0.0; len],
    }
}

/// Returns a buffer to the pool (or frees it when the pool is full).
fn give_buffer(buf: Vec<f32>) {
    let bytes = |b: &Vec<f32>| b.capacity() * std::mem::size_of::<f32>();
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.iter().map(bytes).sum::<usize>() + bytes(&buf) <= POOL_BYTES {
        pool.push(buf);
    }
}

/// A contiguous tensor's values (a plain copy; `as_vec` walks a strided index per value).
/// Every input here is the fresh output of another op or a parameter, hence contiguous.
fn values<S: Shape, T>(t: &Tensor<S, f32, Dev, T>) -> Vec<f32> {
    let mut buf = take_buffer(t.shape().num_elements());
    t.copy_into(&mut buf);
    buf
}

/// faer's `matmul`, then the vector registers' upper halves cleared on this thread
/// ([`crate::cpu`]; the pool's threads clear theirs when their next job starts).
fn gemm(dst: MatMut<'_, f32>, accum: Accum, lhs: MatRef<'_, f32>, rhs: MatRef<'_, f32>, alpha: f32, par: Par) {
    matmul(dst, accum, lhs, rhs, alpha, par);
    clean_upper_state();
}

fn gemm_par(rows: usize, inner: usize, cols: usize) -> Par {
    if rows * inner * cols < PARALLEL_GEMM_MIN {
        Par::Seq
    } else {
        Par::rayon(rayon::current_num_threads())
    }
}

/// `act(x W + b)`; `relu` picks ReLU, otherwise the identity.
pub fn linear<T: TapeKind>(x: Mat<T>, w: &Mat, b: &Vector, relu: bool) -> Mat<T> {
    chain(x, &[Layer { groups: vec![(w, b)], relu }], None)
}

/// A ReLU MLP as one op: `layers[l]` holds layer `l`'s groups (one group for a plain layer;
/// one per expert for the deeper layers of an expert bank, each reading its own column block
/// of the layer below). The activations between layers stay inside the op: no copies in and
/// out of dfdx tensors, no gradient buffers for them. With `codes`, a one-group first layer
/// runs coded (see the module docs).
pub fn mlp<T: TapeKind>(x: Mat<T>, layers: &[Vec<(&Mat, &Vector)>], codes: Option<&InputCodes>) -> Mat<T> {
    if layers.is_empty() {
        return x;
    }
    let layers: Vec<Layer<'_>> = layers.iter().map(|groups| Layer { groups: groups.clone(), relu: true }).collect();
    chain(x, &layers, codes)
}

/// The narrowest first layer that runs coded. Narrower ones multiply fast enough that the
/// coded passes' fixed costs (a few small products and a pass over the rows per block) lose:
/// the small Census model (8 x 16 outputs) trained about 10% slower coded, the wide one
/// (8 x 256) about 1.5x faster (benches/README.md).
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

    fn distinct(&self) -> usize {
        self.blocks.iter().map(|b| b.first_rows.len()).sum()
    }

    /// Where each block's distinct values start in a buffer holding all blocks' in order.
    fn starts(&self) -> Vec<usize> {
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
    fn dense_columns(&self, width: usize) -> Vec<usize> {
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

/// One layer of a [`chain`]: `G` groups of `k x m` weights and `m` biases over `G` column
/// blocks of its input, then ReLU or nothing.
struct Layer<'a> {
    groups: Vec<(&'a Mat, &'a Vector)>,
    relu: bool,
}

/// The shapes of one layer: groups, in and out width per group.
#[derive(Clone, Copy)]
struct LayerShape {
    groups: usize,
    k: usize,
    m: usize,
    relu: bool,
}

impl LayerShape {
    fn width_in(&self) -> usize {
        self.groups * self.k
    }
    fn width_out(&self) -> usize {
        self.groups * self.m
    }
}

/// Layers in sequence as one taped op (see [`mlp`]).
fn chain<T: TapeKind>(x: Mat<T>, layers: &[Layer<'_>], codes: Option<&InputCodes>) -> Mat<T> {
    let n = x.shape().0;
    let shapes: Vec<LayerShape> = layers
        .iter()
        .map(|l| {
            let (k, m) = *l.groups[0].0.shape();
            assert!(l.groups.iter().all(|(w, b)| *w.shape() == (k, m) && b.shape().0 == m), "fused layer shapes");
            LayerShape { groups: l.groups.len(), k, m, relu: l.relu }
        })
        .collect();
    assert_eq!(x.shape().1, shapes[0].width_in(), "fused layer input width");
    assert!(shapes.windows(2).all(|p| p[0].width_out() == p[1].width_in()), "fused layers chain");
    let coded =
        codes.filter(|c| !c.blocks.is_empty() && shapes[0].groups == 1 && shapes[0].m >= CODED_MIN_WIDTH).map(|c| {
            assert_eq!(c.rows, n, "input codes of another batch");
            (c.clone(), c.dense_columns(shapes[0].k))
        });
    let (x, mut tape) = x.split_tape();
    let weights: Vec<Vec<Vec<f32>>> =
        layers.iter().map(|l| l.groups.iter().map(|(w, _)| values(*w)).collect()).collect();
    // inputs[l]: the input of layer l. Where a ReLU passed its input is where its output is
    // positive: inputs[l + 1] tells that for every layer but the last, whose output leaves the
    // op (into a tensor), so its flags are kept.
    let mut inputs: Vec<Vec<f32>> = vec![values(&x)];
    let mut last_active: Vec<bool> = Vec::new();
    let mut out = Vec::new();
    for (l, (layer, shape)) in layers.iter().zip(&shapes).enumerate() {
        // Copied straight into place: through `values` each bias would take a buffer out of the
        // pool and then drop it, draining the pool of the small buffers it keeps for towers.
        let mut bias = vec![0.0; shape.width_out()];
        for ((_, b), dst) in layer.groups.iter().zip(bias.chunks_exact_mut(shape.m)) {
            b.copy_into(dst);
        }
        out = take_buffer(n * shape.width_out());
        match &coded {
            Some((codes, dense)) if l == 0 => {
                coded_product(&inputs[0], &weights[0][0], codes, dense, *shape, n, &mut out)
            }
            _ => product(&inputs[l], &weights[l], *shape, n, &mut out),
        }
        bias_act(&mut out, &bias, *shape);
        if T::OWNS_TAPE && shape.relu && l + 1 == layers.len() {
            last_active = positive(&out);
        }
        if l + 1 < layers.len() {
            inputs.push(std::mem::take(&mut out));
        }
    }
    let out = x.device().tensor_from_vec(out, (n, shapes[shapes.len() - 1].width_out()));
    if !T::OWNS_TAPE {
        inputs.into_iter().for_each(give_buffer);
        weights.into_iter().flatten().for_each(give_buffer);
        return out.put_tape(tape);
    }
    let params: Vec<Vec<(Mat, Vector)>> =
        layers.iter().map(|l| l.groups.iter().map(|(w, b)| ((*w).clone(), (*b).clone())).collect()).collect();
    let (x_id, out_id) = (x.clone(), out.clone());
    tape.add_backward_op(move |grads| {
        // An op's output gradient is read only by its own backward, which runs after every
        // consumer of the output has added its part: moved out, not copied (here and below).
        let mut go = take_grad(grads, &out_id)?;
        for l in (0..shapes.len()).rev() {
            let shape = shapes[l];
            if shape.relu {
                match inputs.get(l + 1) {
                    Some(output) => mask_rows(&mut go, output, |v| v > 0.0, shape.width_out()),
                    None => mask_rows(&mut go, &last_active, |a| a, shape.width_out()),
                }
            }
            let d_out = MatRef::from_row_major_slice(&go, n, shape.width_out());
            let input = MatRef::from_row_major_slice(&inputs[l], n, shape.width_in());
            let bias_grad = column_sums(&go, shape.width_out());
            let (k, m) = (shape.k, shape.m);
            if let (0, Some((codes, dense))) = (l, &coded) {
                let (w, b) = &params[0][0];
                add_into(grads.get_or_alloc_mut(b)?, &bias_grad);
                let mut dw = std::mem::take(&mut **grads.get_or_alloc_mut(w)?);
                let mut dx = std::mem::take(&mut **grads.get_or_alloc_mut(&x_id)?);
                coded_backward(&inputs[0], &weights[0][0], codes, dense, &go, n, shape, &mut dw, &mut dx);
                **grads.get_or_alloc_mut(w)? = dw;
                **grads.get_or_alloc_mut(&x_id)? = dx;
                give_buffer(std::mem::take(&mut go));
                continue;
            }
            for (g, (w, b)) in params[l].iter().enumerate() {
                // dW_g = x_g^T dOut_g, db_g = column sums of dOut_g
                let dw = grads.get_or_alloc_mut(w)?;
                gemm(
                    MatMut::from_row_major_slice_mut(&mut dw[..], k, m),
                    Accum::Add,
                    input.subcols(g * k, k).transpose(),
                    d_out.subcols(g * m, m),
                    1.0,
                    gemm_par(k, n, m),
                );
                add_into(grads.get_or_alloc_mut(b)?, &bias_grad[g * m..(g + 1) * m]);
            }
            // dx_g = dOut_g W_g^T: into x's gradient for the first layer, otherwise into a
            // buffer that becomes the layer below's dOut (every block is written: Replace).
            let d_in_of = |dx: &mut [f32], accum: Accum| {
                let mut dx = MatMut::from_row_major_slice_mut(dx, n, shape.width_in());
                for (g, w) in weights[l].iter().enumerate() {
                    gemm(
                        dx.rb_mut().subcols_mut(g * k, k),
                        accum,
                        d_out.subcols(g * m, m),
                        MatRef::from_row_major_slice(w, k, m).transpose(),
                        1.0,
                        gemm_par(n, m, k),
                    );
                }
            };
            if l == 0 {
                d_in_of(&mut grads.get_or_alloc_mut(&x_id)?[..], Accum::Add);
                give_buffer(std::mem::take(&mut go));
            } else {
                let mut below = take_buffer(n * shape.width_in());
                d_in_of(&mut below, Accum::Replace);
                give_buffer(std::mem::replace(&mut go, below));
            }
        }
        inputs.into_iter().for_each(give_buffer);
        weights.into_iter().flatten().for_each(give_buffer);
        Ok(())
    });
    out.put_tape(tape)
}

/// `out = x W_g` block by block for one layer.
fn product(input: &[f32], weights: &[Vec<f32>], shape: LayerShape, n: usize, out: &mut [f32]) {
    let (k, m) = (shape.k, shape.m);
    let mut dst = MatMut::from_row_major_slice_mut(out, n, shape.width_out());
    let lhs = MatRef::from_row_major_slice(input, n, shape.width_in());
    for (g, w) in weights.iter().enumerate() {
        gemm(
            dst.rb_mut().subcols_mut(g * m, m),
            Accum::Replace,
            lhs.subcols(g * k, k),
            MatRef::from_row_major_slice(w, k, m),
            1.0,
            gemm_par(n, k, m),
        );
    }
}

/// `out = act(out + b)`.
fn bias_act(out: &mut [f32], bias: &[f32], shape: LayerShape) {
    let relu = shape.relu;
    par_rows(out, shape.width_out(), |_, row| {
        for (o, b) in row.iter_mut().zip(bias) {
            let v = *o + b;
            *o = if relu && v <= 0.0 { 0.0 } else { v };
        }
    });
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
fn coded_product(
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
fn coded_backward(
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

/// Where `values` is positive: where a ReLU passed its input through.
fn positive(values: &[f32]) -> Vec<bool> {
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
fn mask_rows<A: Copy + Sync>(g: &mut [f32], by: &[A], passed: impl Fn(A) -> bool + Sync, width: usize) {
    par_rows(g, width, |r, row| {
        for (g, &a) in row.iter_mut().zip(&by[r * width..(r + 1) * width]) {
            *g = if passed(a) { *g } else { 0.0 };
        }
    });
}

/// A softmax gate's mixture of experts: `experts` holds `count` experts' outputs side by side
/// (`B x count*width`), `logits` the gate's logits (`B x count`). Returns the mixture
/// (`B x width`, `out[b] = Σ_e p[b, e] * experts[b, e*width..(e+1)*width]` with `p` the
/// row-wise softmax of the logits) and `p` itself, off the tape (for gate-usage reports).
pub fn mix<T: TapeKind>(experts: Mat<T>, logits: Mat<T>, count: usize, width: usize) -> (Mat<T>, Mat) {
    mix_gates(experts, vec![logits], count, width).pop().expect("one gate")
}

/// [`mix`] for several gates over the same experts (MMoE's one gate per task) as one op: the
/// experts' outputs are read once, and their gradient gets every gate's part in one pass.
/// The first mixture carries the recorded tape, the others an empty one (as [`crate::arch`]'s
/// `fan_out`); the backward pass runs once every mixture's consumers have run theirs.
pub fn mix_gates<T: TapeKind>(experts: Mat<T>, logits: Vec<Mat<T>>, count: usize, width: usize) -> Vec<(Mat<T>, Mat)> {
    let n = experts.shape().0;
    assert_eq!(*experts.shape(), (n, count * width), "mix: experts shape");
    assert!(logits.iter().all(|z| *z.shape() == (n, count)), "mix: logits shape");
    let (h, mut tape) = experts.split_tape();
    let hv = values(&h);
    let dev = h.device().clone();
    let mut gates = Vec::with_capacity(logits.len());
    let mut outs = Vec::with_capacity(logits.len());
    for z in logits {
        let (z, tape_z) = z.split_tape();
        tape = tape.merge(tape_z);
        let mut pv = values(&z);
        par_rows(&mut pv, count, |_, row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for p in row.iter_mut() {
                *p = (*p - max).exp();
                total += *p;
            }
            row.iter_mut().for_each(|p| *p /= total);
        });
        let mut out = take_buffer(n * width);
        out.fill(0.0);
        par_rows(&mut out, width, |b, o| {
            let hb = &hv[b * count * width..(b + 1) * count * width];
            for (e, &pe) in pv[b * count..(b + 1) * count].iter().enumerate() {
                for (o, x) in o.iter_mut().zip(&hb[e * width..(e + 1) * width]) {
                    *o += pe * x;
                }
            }
        });
        let out = dev.tensor_from_vec(out, (n, width));
        outs.push((out.clone(), dev.tensor_from_vec(pv.clone(), (n, count))));
        gates.push((z, out, pv));
    }
    let mut results: Vec<(Mat<T>, Mat)> = Vec::with_capacity(outs.len());
    if !T::OWNS_TAPE {
        give_buffer(hv);
        gates.into_iter().for_each(|(_, _, pv)| give_buffer(pv));
        let mut tape = Some(tape);
        for (out, p) in outs {
            results.push((out.put_tape(tape.take().unwrap_or_default()), p));
        }
        return results;
    }
    let h_id = h.clone();
    tape.add_backward_op(move |grads| {
        let mut gos = Vec::with_capacity(gates.len());
        for (_, out_id, _) in &gates {
            gos.push(take_grad(grads, out_id)?);
        }
        // d experts[b, e, :] = Σ_g p_g[b, e] * d out_g[b, :], gates in order.
        par_rows(grads.get_or_alloc_mut(&h_id)?, count * width, |b, dh| {
            for ((_, _, pv), go) in gates.iter().zip(&gos) {
                let dout = &go[b * width..(b + 1) * width];
                for (e, &pe) in pv[b * count..(b + 1) * count].iter().enumerate() {
                    for (d, x) in dh[e * width..(e + 1) * width].iter_mut().zip(dout) {
                        *d += pe * x;
                    }
                }
            }
        });
        // d p[b, e] = <experts[b, e, :], d out[b, :]>; through the softmax,
        // d logits[b, e] = p[b, e] * (d p[b, e] - Σ_f p[b, f] d p[b, f]).
        for ((z_id, _, pv), go) in gates.iter().zip(&gos) {
            par_rows(grads.get_or_alloc_mut(z_id)?, count, |b, dz| {
                let hb = &hv[b * count * width..(b + 1) * count * width];
                let pb = &pv[b * count..(b + 1) * count];
                let dout = &go[b * width..(b + 1) * width];
                // On the stack for the usual gate sizes: this runs once per row.
                let (mut stack, mut heap) = ([0.0f32; 64], Vec::new());
                let dp = if count <= stack.len() {
                    &mut stack[..count]
                } else {
                    heap.resize(count, 0.0);
                    &mut heap[..]
                };
                for (e, d) in dp.iter_mut().enumerate() {
                    *d = hb[e * width..(e + 1) * width].iter().zip(dout).map(|(x, y)| x * y).sum::<f32>();
                }
                let mean: f32 = pb.iter().zip(dp.iter()).map(|(p, d)| p * d).sum();
                for ((d, p), g) in dz.iter_mut().zip(pb).zip(dp.iter()) {
                    *d += p * (g - mean);
                }
            });
        }
        gos.into_iter().for_each(give_buffer);
        gates.into_iter().for_each(|(_, _, pv)| give_buffer(pv));
        give_buffer(hv);
        Ok(())
    });
    let mut tape = Some(tape);
    for (out, p) in outs {
        results.push((out.put_tape(tape.take().unwrap_or_default()), p));
    }
    results
}

/// Runs `f(row_index, row)` over the rows (`width` values each) of `buf`, in parallel blocks.
fn par_rows(buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
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

fn add_into(acc: &mut [f32], g: &[f32]) {
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
fn column_sums(g: &[f32], width: usize) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    type TapedMat = Mat<OwnedTape<f32, Dev>>;

    fn filled(dev: &Dev, rows: usize, cols: usize, seed: usize) -> Mat {
        dev.tensor_from_vec(
            (0..rows * cols).map(|i| (((i + seed) * 7919) % 23) as f32 * 0.1 - 1.1).collect(),
            (rows, cols),
        )
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// The same layers in plain dfdx ops: slices, products, broadcast bias, ReLU, concatenation.
    fn plain_grouped(x: TapedMat, layers: &[(Mat, Vector)], relu: bool) -> TapedMat {
        let n = x.shape().0;
        let (k, m) = *layers[0].0.shape();
        let outs: Vec<TapedMat> = crate::arch::fan_out(x, layers.len())
            .into_iter()
            .zip(layers)
            .enumerate()
            .map(|(g, (x, (w, b)))| {
                let y = crate::arch::slice_columns(x, g * k..(g + 1) * k).matmul(w.clone())
                    + b.clone().broadcast_like::<_, Axis<0>>(&(n, m));
                if relu {
                    y.relu()
                } else {
                    y
                }
            })
            .collect();
        let mut it = outs.into_iter();
        let mut acc = it.next().expect("one layer");
        for p in it {
            acc = (acc, p).concat_along(Axis::<1>);
        }
        acc
    }

    /// Values and gradients (input, weights, biases) against plain dfdx ops, under a
    /// non-uniform upstream gradient (the loss is `Σ out ⊙ u`), with one and three groups.
    #[test]
    fn grouped_layer_matches_dfdx_ops() {
        let dev = Dev::default();
        for (groups, n) in [(1, 5), (3, 130)] {
            let (k, m) = (4, 3);
            let x = filled(&dev, n, groups * k, 1);
            let layers: Vec<(Mat, Vector)> = (0..groups)
                .map(|g| (filled(&dev, k, m, 10 + g), dev.tensor_from_vec(vec![0.3, -0.2, 0.05], (m,))))
                .collect();
            let grouped = refs(&layers);
            let u = filled(&dev, n, groups * m, 99);
            for relu in [false, true] {
                let fused =
                    chain(x.clone().trace(Gradients::leaky()), &[Layer { groups: grouped.clone(), relu }], None);
                let plain = plain_grouped(x.clone().trace(Gradients::leaky()), &layers, relu);
                close(&fused.retaped::<NoneTape>().as_vec(), &plain.retaped::<NoneTape>().as_vec());
                let gf = (fused * u.clone()).sum::<(), _>().backward();
                let gp = (plain * u.clone()).sum::<(), _>().backward();
                close(&gf.get(&x).as_vec(), &gp.get(&x).as_vec());
                for (w, b) in &layers {
                    close(&gf.get(w).as_vec(), &gp.get(w).as_vec());
                    close(&gf.get(b).as_vec(), &gp.get(b).as_vec());
                }
            }
        }
    }

    fn refs(layer: &[(Mat, Vector)]) -> Vec<(&Mat, &Vector)> {
        layer.iter().map(|(w, b)| (w, b)).collect()
    }

    /// A two-layer chain (one plain layer, then two groups) against the same layers in plain
    /// dfdx ops: values and the gradients of the input and of every parameter.
    #[test]
    fn mlp_matches_dfdx_ops() {
        let dev = Dev::default();
        let n = 90;
        let x = filled(&dev, n, 5, 2);
        let first = vec![(filled(&dev, 5, 8, 20), dev.tensor_from_vec(vec![0.1; 8], (8,)))];
        let second: Vec<(Mat, Vector)> =
            (0..2).map(|g| (filled(&dev, 4, 3, 30 + g), dev.tensor_from_vec(vec![-0.05, 0.2, 0.0], (3,)))).collect();
        let u = filled(&dev, n, 6, 77);
        let fused = mlp(x.clone().trace(Gradients::leaky()), &[refs(&first), refs(&second)], None);
        let plain = plain_grouped(plain_grouped(x.clone().trace(Gradients::leaky()), &first, true), &second, true);
        close(&fused.retaped::<NoneTape>().as_vec(), &plain.retaped::<NoneTape>().as_vec());
        let gf = (fused * u.clone()).sum::<(), _>().backward();
        let gp = (plain * u.clone()).sum::<(), _>().backward();
        close(&gf.get(&x).as_vec(), &gp.get(&x).as_vec());
        for (w, b) in first.iter().chain(&second) {
            close(&gf.get(w).as_vec(), &gp.get(w).as_vec());
            close(&gf.get(b).as_vec(), &gp.get(b).as_vec());
        }
    }

    /// Rows beyond one block and over the parallel thresholds: blocks and their sums line up.
    #[test]
    fn linear_over_many_blocks_sums_every_row() {
        let dev = Dev::default();
        let (n, k, m) = (2000, 90, 100);
        assert!(n * k * m >= PARALLEL_GEMM_MIN && n * k >= PARALLEL_MIN, "the products must run in parallel");
        let x: Mat = dev.tensor_from_vec(vec![1.0; n * k], (n, k));
        let w: Mat = dev.tensor_from_vec(vec![0.01; k * m], (k, m));
        let b: Vector = dev.tensor_from_vec(vec![0.0; m], (m,));
        let grads = linear(x.clone().trace(Gradients::leaky()), &w, &b, true).sum::<(), _>().backward();
        assert!(grads.get(&b).as_vec().iter().all(|&g| g == n as f32));
        assert!(grads.get(&w).as_vec().iter().all(|&g| g == n as f32));
        close(&grads.get(&x).as_vec(), &vec![0.01 * m as f32; n * k]);
    }

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

    #[test]
    fn mix_matches_dfdx_ops() {
        let dev = Dev::default();
        let (n, count, width) = (70, 3, 4);
        let h = filled(&dev, n, count * width, 3);
        let logits = filled(&dev, n, count, 5);
        let u = filled(&dev, n, width, 7);
        let (fused, probs) =
            mix(h.clone().trace(Gradients::leaky()), logits.clone().trace(Gradients::leaky()), count, width);
        close(&probs.as_vec(), &logits.clone().softmax::<Axis<1>>().as_vec());
        let plain = {
            let g = logits.clone().trace(Gradients::leaky()).softmax::<Axis<1>>();
            let g = g.broadcast_like::<_, Axis<2>>(&(n, count, width));
            (h.clone().trace(Gradients::leaky()).reshape_like(&(n, count, width)) * g).sum::<(usize, usize), Axis<1>>()
        };
        close(&fused.retaped::<NoneTape>().as_vec(), &plain.retaped::<NoneTape>().as_vec());
        let gf = (fused * u.clone()).sum::<(), _>().backward();
        let gp = (plain * u.clone()).sum::<(), _>().backward();
        for t in [&h, &logits] {
            close(&gf.get(t).as_vec(), &gp.get(t).as_vec());
        }
    }

    #[test]
    fn mix_gates_matches_one_dfdx_mixture_per_gate() {
        let dev = Dev::default();
        let (n, count, width) = (70, 3, 4);
        let h = filled(&dev, n, count * width, 3);
        let logits = [filled(&dev, n, count, 5), filled(&dev, n, count, 9)];
        let weights = [filled(&dev, n, width, 7), filled(&dev, n, width, 11)];
        let plain_mix = |h: TapedMat, z: TapedMat| {
            let g = z.softmax::<Axis<1>>().broadcast_like::<_, Axis<2>>(&(n, count, width));
            (h.reshape_like(&(n, count, width)) * g).sum::<(usize, usize), Axis<1>>()
        };
        let traced = |t: &Mat| t.clone().trace(Gradients::leaky());
        let fused = mix_gates(traced(&h), logits.iter().map(traced).collect(), count, width);
        let ht = traced(&h);
        let plain = [plain_mix(ht.with_empty_tape(), traced(&logits[0])), plain_mix(ht, traced(&logits[1]))];
        let mut fused_loss = Vec::new();
        for (((out, probs), plain), (z, u)) in fused.into_iter().zip(&plain).zip(logits.iter().zip(&weights)) {
            close(&probs.as_vec(), &z.clone().softmax::<Axis<1>>().as_vec());
            close(&out.retaped::<NoneTape>().as_vec(), &plain.retaped::<NoneTape>().as_vec());
            fused_loss.push((out * u.clone()).sum::<(), _>());
        }
        let [p0, p1] = plain;
        let [f0, f1]: [_; 2] = fused_loss.try_into().expect("two gates");
        let gf = (f0 + f1).backward();
        let gp = ((p0 * weights[0].clone()).sum::<(), _>() + (p1 * weights[1].clone()).sum::<(), _>()).backward();
        for t in [&h, &logits[0], &logits[1]] {
            close(&gf.get(t).as_vec(), &gp.get(t).as_vec());
        }
    }

    #[test]
    fn inference_records_nothing_and_gives_the_same_values() {
        let dev = Dev::default();
        let x: Mat = dev.tensor_from_vec(vec![-1.0, 2.0, 0.5, -0.5], (2, 2));
        let w: Mat = dev.tensor_from_vec(vec![1.0, 0.0, 0.0, 1.0], (2, 2));
        let b: Vector = dev.tensor_from_vec(vec![0.25, 0.0], (2,));
        assert_eq!(linear(x.clone(), &w, &b, true).as_vec(), vec![0.0, 2.0, 0.75, 0.0]);
        assert_eq!(linear(x, &w, &b, false).as_vec(), vec![-0.75, 2.0, 0.75, -0.5]);
    }
}
