//! Fused ops with hand-written backward passes, recorded on dfdx's tape.
//!
//! dfdx 0.13 runs every element-wise op through a generic strided index, single-threaded, and
//! allocates a fresh buffer per op; its matrix products use gemm 0.15, about 1.6x slower on
//! this machine's CPU than current GEMMs (`../shared/notes/DFDX.md` §4, benches/README.md).
//! The ops here are the model's hot path: a linear layer is one op (the product through
//! faer, then bias and activation in the same pass over the output), the experts' deeper
//! layers are one op over column blocks (no slices, no concatenation), and the MMoE mixture
//! is one op. Each records one backward closure through the public `Tape` API; without a tape
//! (inference) nothing is recorded and the same code serves both. Element-wise passes run on
//! rayon over fixed-size row blocks, so results never depend on the thread count.

use dfdx::prelude::*;
use faer::linalg::matmul::matmul;
use faer::prelude::ReborrowMut;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::params::{Dev, Mat, TapeKind, Vector};

/// Rows per block: blocks run in parallel, and sums over blocks are added in block order, so
/// results never depend on the thread count.
const BLOCK_ROWS: usize = 64;
/// Below this many values an element-wise pass runs on the calling thread: waking rayon's
/// workers costs more.
const PARALLEL_MIN: usize = 1 << 16;
/// Below this many multiply-adds a matrix product runs on the calling thread.
const PARALLEL_GEMM_MIN: usize = 1 << 18;

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

/// Moves the gradient of an op's own output out of `grads` (no copy): only this op's backward
/// reads it, and it runs after every consumer of the output has added its part.
fn take_grad(grads: &mut Gradients<f32, Dev>, out: &Mat) -> Result<Vec<f32>, CpuError> {
    Ok(std::mem::take(&mut **grads.get_or_alloc_mut(out)?))
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
    grouped_linear(x, &[(w, b)], relu)
}

/// Independent linear layers over column blocks: with `G = layers.len()` layers of `k x m`
/// weights, `x` is `n x G*k` and the result `n x G*m`, block `g` being `act(x_g W_g + b_g)`.
/// The experts' deeper layers of an MMoE or PLE bank are one call.
pub fn grouped_linear<T: TapeKind>(x: Mat<T>, layers: &[(&Mat, &Vector)], relu: bool) -> Mat<T> {
    let groups = layers.len();
    let (n, width_in) = *x.shape();
    let (k, m) = *layers[0].0.shape();
    assert!(layers.iter().all(|(w, b)| *w.shape() == (k, m) && b.shape().0 == m), "grouped_linear: layer shapes");
    assert_eq!(width_in, groups * k, "grouped_linear: input width");
    let width_out = groups * m;
    let (x, mut tape) = x.split_tape();
    let xv = values(&x);
    let weights: Vec<Vec<f32>> = layers.iter().map(|(w, _)| values(*w)).collect();
    let bias: Vec<f32> = layers.iter().flat_map(|(_, b)| values(*b)).collect();
    let mut out = take_buffer(n * width_out);
    {
        let mut dst = MatMut::from_row_major_slice_mut(&mut out, n, width_out);
        let lhs = MatRef::from_row_major_slice(&xv, n, width_in);
        for (g, w) in weights.iter().enumerate() {
            matmul(
                dst.rb_mut().subcols_mut(g * m, m),
                Accum::Replace,
                lhs.subcols(g * k, k),
                MatRef::from_row_major_slice(w, k, m),
                1.0,
                gemm_par(n, k, m),
            );
        }
    }
    par_rows(&mut out, width_out, |_, row| {
        for (o, b) in row.iter_mut().zip(&bias) {
            let v = *o + b;
            *o = if relu && v <= 0.0 { 0.0 } else { v };
        }
    });
    // Where the ReLU passed its input through: its backward needs only that.
    let active: Vec<bool> = if relu && T::OWNS_TAPE { out.par_iter().map(|&o| o > 0.0).collect() } else { Vec::new() };
    let out = x.device().tensor_from_vec(out, (n, width_out));
    if T::OWNS_TAPE {
        let params: Vec<(Mat, Vector)> = layers.iter().map(|(w, b)| ((*w).clone(), (*b).clone())).collect();
        let (x_id, out_id) = (x.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let mut go = take_grad(grads, &out_id)?;
            if relu {
                par_rows(&mut go, width_out, |r, row| {
                    for (g, a) in row.iter_mut().zip(&active[r * width_out..(r + 1) * width_out]) {
                        if !a {
                            *g = 0.0;
                        }
                    }
                });
            }
            let d_out = MatRef::from_row_major_slice(&go, n, width_out);
            let lhs = MatRef::from_row_major_slice(&xv, n, width_in);
            let bias_grad = column_sums(&go, width_out);
            for (g, (w, b)) in params.iter().enumerate() {
                // dW_g = x_g^T dOut_g, db_g = column sums of dOut_g
                let dw = grads.get_or_alloc_mut(w)?;
                matmul(
                    MatMut::from_row_major_slice_mut(&mut dw[..], k, m),
                    Accum::Add,
                    lhs.subcols(g * k, k).transpose(),
                    d_out.subcols(g * m, m),
                    1.0,
                    gemm_par(k, n, m),
                );
                add_into(grads.get_or_alloc_mut(b)?, &bias_grad[g * m..(g + 1) * m]);
            }
            // dx_g = dOut_g W_g^T
            let dx = grads.get_or_alloc_mut(&x_id)?;
            let mut dx = MatMut::from_row_major_slice_mut(&mut dx[..], n, width_in);
            for (g, w) in weights.iter().enumerate() {
                matmul(
                    dx.rb_mut().subcols_mut(g * k, k),
                    Accum::Add,
                    d_out.subcols(g * m, m),
                    MatRef::from_row_major_slice(w, k, m).transpose(),
                    1.0,
                    gemm_par(n, m, k),
                );
            }
            give_buffer(go);
            give_buffer(xv);
            weights.into_iter().for_each(give_buffer);
            Ok(())
        });
    } else {
        give_buffer(xv);
        weights.into_iter().for_each(give_buffer);
    }
    out.put_tape(tape)
}

/// A softmax gate's mixture of experts: `experts` holds `count` experts' outputs side by side
/// (`B x count*width`), `logits` the gate's logits (`B x count`). Returns the mixture
/// (`B x width`, `out[b] = Σ_e p[b, e] * experts[b, e*width..(e+1)*width]` with `p` the
/// row-wise softmax of the logits) and `p` itself, off the tape (for gate-usage reports).
pub fn mix<T: TapeKind>(experts: Mat<T>, logits: Mat<T>, count: usize, width: usize) -> (Mat<T>, Mat) {
    let n = experts.shape().0;
    assert_eq!(*experts.shape(), (n, count * width), "mix: experts shape");
    assert_eq!(*logits.shape(), (n, count), "mix: logits shape");
    let (h, tape_h) = experts.split_tape();
    let (z, tape_z) = logits.split_tape();
    let mut tape = tape_h.merge(tape_z);
    let hv = values(&h);
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
    let rows = |b: usize| (&hv[b * count * width..(b + 1) * count * width], &pv[b * count..(b + 1) * count]);
    par_rows(&mut out, width, |b, o| {
        let (hb, pb) = rows(b);
        for (e, &pe) in pb.iter().enumerate() {
            for (o, x) in o.iter_mut().zip(&hb[e * width..(e + 1) * width]) {
                *o += pe * x;
            }
        }
    });
    let dev = h.device().clone();
    let out = dev.tensor_from_vec(out, (n, width));
    let probs = dev.tensor_from_vec(pv.clone(), (n, count));
    if T::OWNS_TAPE {
        let (h_id, z_id, out_id) = (h.clone(), z.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let go = take_grad(grads, &out_id)?;
            let rows = |b: usize| (&hv[b * count * width..(b + 1) * count * width], &pv[b * count..(b + 1) * count]);
            // d experts[b, e, :] = p[b, e] * d out[b, :]
            par_rows(grads.get_or_alloc_mut(&h_id)?, count * width, |b, dh| {
                let (_, pb) = rows(b);
                let dout = &go[b * width..(b + 1) * width];
                for (e, &pe) in pb.iter().enumerate() {
                    for (d, x) in dh[e * width..(e + 1) * width].iter_mut().zip(dout) {
                        *d += pe * x;
                    }
                }
            });
            // d p[b, e] = <experts[b, e, :], d out[b, :]>; through the softmax,
            // d logits[b, e] = p[b, e] * (d p[b, e] - Σ_f p[b, f] d p[b, f]).
            par_rows(grads.get_or_alloc_mut(&z_id)?, count, |b, dz| {
                let (hb, pb) = rows(b);
                let dout = &go[b * width..(b + 1) * width];
                let dp: Vec<f32> = (0..count)
                    .map(|e| hb[e * width..(e + 1) * width].iter().zip(dout).map(|(x, y)| x * y).sum::<f32>())
                    .collect();
                let mean: f32 = pb.iter().zip(&dp).map(|(p, d)| p * d).sum();
                for ((d, p), g) in dz.iter_mut().zip(pb).zip(&dp) {
                    *d += p * (g - mean);
                }
            });
            give_buffer(go);
            give_buffer(hv);
            give_buffer(pv);
            Ok(())
        });
    } else {
        give_buffer(hv);
        give_buffer(pv);
    }
    (out.put_tape(tape), probs)
}

/// Runs `f(row_index, row)` over the rows (`width` values each) of `buf`, in parallel blocks.
fn par_rows(buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    let block = |k: usize, rows: &mut [f32]| {
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
        acc.par_iter_mut().zip(g.par_iter()).for_each(|(a, g)| *a += g);
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
    fn grouped_linear_matches_dfdx_ops() {
        let dev = Dev::default();
        for (groups, n) in [(1, 5), (3, 130)] {
            let (k, m) = (4, 3);
            let x = filled(&dev, n, groups * k, 1);
            let layers: Vec<(Mat, Vector)> = (0..groups)
                .map(|g| (filled(&dev, k, m, 10 + g), dev.tensor_from_vec(vec![0.3, -0.2, 0.05], (m,))))
                .collect();
            let refs: Vec<(&Mat, &Vector)> = layers.iter().map(|(w, b)| (w, b)).collect();
            let u = filled(&dev, n, groups * m, 99);
            for relu in [false, true] {
                let fused = grouped_linear(x.clone().trace(Gradients::leaky()), &refs, relu);
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

    /// Rows beyond one block and over the parallel thresholds: blocks and their sums line up.
    #[test]
    fn linear_over_many_blocks_sums_every_row() {
        let dev = Dev::default();
        let (n, k, m) = (1000, 90, 70);
        let x: Mat = dev.tensor_from_vec(vec![1.0; n * k], (n, k));
        let w: Mat = dev.tensor_from_vec(vec![0.01; k * m], (k, m));
        let b: Vector = dev.tensor_from_vec(vec![0.0; m], (m,));
        let grads = linear(x.clone().trace(Gradients::leaky()), &w, &b, true).sum::<(), _>().backward();
        assert!(grads.get(&b).as_vec().iter().all(|&g| g == n as f32));
        assert!(grads.get(&w).as_vec().iter().all(|&g| g == n as f32));
        close(&grads.get(&x).as_vec(), &vec![0.01 * m as f32; n * k]);
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
    fn inference_records_nothing_and_gives_the_same_values() {
        let dev = Dev::default();
        let x: Mat = dev.tensor_from_vec(vec![-1.0, 2.0, 0.5, -0.5], (2, 2));
        let w: Mat = dev.tensor_from_vec(vec![1.0, 0.0, 0.0, 1.0], (2, 2));
        let b: Vector = dev.tensor_from_vec(vec![0.25, 0.0], (2,));
        assert_eq!(linear(x.clone(), &w, &b, true).as_vec(), vec![0.0, 2.0, 0.75, 0.0]);
        assert_eq!(linear(x, &w, &b, false).as_vec(), vec![-0.75, 2.0, 0.75, -0.5]);
    }
}
