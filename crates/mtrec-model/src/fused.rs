//! Fused element-wise ops with hand-written backward passes, recorded on dfdx's tape.
//!
//! dfdx 0.13 runs every element-wise op through a generic strided index, single-threaded, and
//! allocates a fresh buffer per op (`../shared/notes/DFDX.md` §4): a bias add, a ReLU and the
//! MMoE mixture cost more than the matrix products of a small model. Each op here makes one
//! pass over contiguous rows (rayon over fixed-size row blocks, so the result never depends on
//! the thread count) and records one backward closure through the public `Tape` API. Without
//! a tape (inference) the closure is simply not recorded: the same code serves both.

use dfdx::prelude::*;
use rayon::prelude::*;

use crate::params::{Mat, TapeKind, Vector};

/// Rows per block: blocks run in parallel, and sums over blocks are added in block order, so
/// results never depend on the thread count.
const BLOCK_ROWS: usize = 64;
/// Below this many values an op runs on the calling thread: waking rayon's workers costs more.
const PARALLEL_MIN: usize = 1 << 16;

/// A contiguous tensor's values (a plain copy; `as_vec` walks a strided index per value).
/// Every input here is the fresh output of another op or a parameter, hence contiguous.
fn values<T>(t: &Tensor<(usize, usize), f32, crate::params::Dev, T>) -> Vec<f32> {
    let mut buf = vec![0.0; t.shape().0 * t.shape().1];
    t.copy_into(&mut buf);
    buf
}

/// `act(x + b)` with `b` broadcast over rows; `relu` picks ReLU, otherwise the identity.
pub fn bias_act<T: TapeKind>(x: Mat<T>, bias: &Vector, relu: bool) -> Mat<T> {
    let (n, m) = *x.shape();
    assert_eq!(bias.shape().0, m, "bias_act: bias width");
    let (x, mut tape) = x.split_tape();
    let mut b = vec![0.0; m];
    bias.copy_into(&mut b);
    let mut out = values(&x);
    par_rows(&mut out, m, |_, row| {
        for (o, b) in row.iter_mut().zip(&b) {
            let v = *o + b;
            *o = if relu && v <= 0.0 { 0.0 } else { v };
        }
    });
    let out = x.device().tensor_from_vec(out, (n, m));
    if T::OWNS_TAPE {
        let (x_id, b_id, out_id) = (x.clone(), bias.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let mut g = grads.get_or_alloc_mut(&out_id)?.to_vec();
            if relu {
                let kept = values(&out_id);
                par_rows(&mut g, m, |r, row| {
                    for (g, o) in row.iter_mut().zip(&kept[r * m..(r + 1) * m]) {
                        if *o <= 0.0 {
                            *g = 0.0;
                        }
                    }
                });
            }
            add_into(grads.get_or_alloc_mut(&x_id)?, &g);
            let sums = column_sums(&g, m);
            add_into(grads.get_or_alloc_mut(&b_id)?, &sums);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// A softmax gate's mixture of experts: `experts` holds `count` experts' outputs side by side
/// (`B x count*width`), `gates` the gate's weights (`B x count`); returns `B x width` with
/// `out[b] = Σ_e gates[b, e] * experts[b, e*width..(e+1)*width]`.
pub fn mix<T: TapeKind>(experts: Mat<T>, gates: Mat<T>, count: usize, width: usize) -> Mat<T> {
    let n = experts.shape().0;
    assert_eq!(*experts.shape(), (n, count * width), "mix: experts shape");
    assert_eq!(*gates.shape(), (n, count), "mix: gates shape");
    let (h, tape_h) = experts.split_tape();
    let (g, tape_g) = gates.split_tape();
    let mut tape = tape_h.merge(tape_g);
    let hv = values(&h);
    let gv = values(&g);
    let mut out = vec![0.0f32; n * width];
    let rows = |b: usize| (&hv[b * count * width..(b + 1) * count * width], &gv[b * count..(b + 1) * count]);
    par_rows(&mut out, width, |b, o| {
        let (hb, gb) = rows(b);
        for (e, &ge) in gb.iter().enumerate() {
            for (o, x) in o.iter_mut().zip(&hb[e * width..(e + 1) * width]) {
                *o += ge * x;
            }
        }
    });
    let out = h.device().tensor_from_vec(out, (n, width));
    if T::OWNS_TAPE {
        let (h_id, g_id, out_id) = (h.clone(), g.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let go = grads.get_or_alloc_mut(&out_id)?.to_vec();
            let rows = |b: usize| (&hv[b * count * width..(b + 1) * count * width], &gv[b * count..(b + 1) * count]);
            // d experts[b, e, :] = gates[b, e] * d out[b, :]
            let gh = grads.get_or_alloc_mut(&h_id)?;
            par_rows(gh, count * width, |b, dh| {
                let (_, gb) = rows(b);
                let dout = &go[b * width..(b + 1) * width];
                for (e, &ge) in gb.iter().enumerate() {
                    for (d, x) in dh[e * width..(e + 1) * width].iter_mut().zip(dout) {
                        *d += ge * x;
                    }
                }
            });
            // d gates[b, e] = <experts[b, e, :], d out[b, :]>
            let gg = grads.get_or_alloc_mut(&g_id)?;
            par_rows(gg, count, |b, dg| {
                let (hb, _) = rows(b);
                let dout = &go[b * width..(b + 1) * width];
                for (e, d) in dg.iter_mut().enumerate() {
                    *d += hb[e * width..(e + 1) * width].iter().zip(dout).map(|(x, y)| x * y).sum::<f32>();
                }
            });
            Ok(())
        });
    }
    out.put_tape(tape)
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
    use crate::params::Dev;

    fn dev() -> Dev {
        Dev::default()
    }

    /// `act(x + b)` in plain dfdx ops, the reference for the fused op.
    fn plain_bias_act(x: Mat<OwnedTape<f32, Dev>>, b: &Vector, relu: bool) -> Mat<OwnedTape<f32, Dev>> {
        let n = x.shape().0;
        let y = x + b.clone().broadcast_like::<_, Axis<0>>(&(n, b.shape().0));
        if relu {
            y.relu()
        } else {
            y
        }
    }

    /// The fused op against the same computation in plain dfdx ops: values and gradients,
    /// under a non-uniform upstream gradient (the loss is `Σ out ⊙ w`).
    #[test]
    fn bias_act_matches_dfdx_ops() {
        let dev = dev();
        let x: Mat = dev.tensor_from_vec((0..15).map(|i| (i as f32 - 7.0) * 0.3).collect(), (5, 3));
        let b: Vector = dev.tensor_from_vec(vec![0.5, -0.2, 0.1], (3,));
        let w: Mat = dev.tensor_from_vec((0..15).map(|i| 1.0 + i as f32 * 0.1).collect(), (5, 3));
        for relu in [false, true] {
            let fused = bias_act(x.clone().trace(Gradients::leaky()), &b, relu);
            let plain = plain_bias_act(x.clone().trace(Gradients::leaky()), &b, relu);
            let (a, p) = (fused.retaped::<NoneTape>().as_vec(), plain.retaped::<NoneTape>().as_vec());
            assert_eq!(a, p);
            let gf = (fused * w.clone()).sum::<(), _>().backward();
            let gp = (plain * w.clone()).sum::<(), _>().backward();
            assert_eq!(gf.get(&x).as_vec(), gp.get(&x).as_vec());
            let (bf, bp) = (gf.get(&b).as_vec(), gp.get(&b).as_vec());
            assert!(bf.iter().zip(&bp).all(|(a, b)| (a - b).abs() < 1e-5), "{bf:?} vs {bp:?}");
        }
    }

    /// Rows beyond one block and over the parallel threshold: blocks and their sums line up.
    #[test]
    fn bias_act_over_many_blocks_sums_every_row() {
        let dev = dev();
        let (n, m) = (1000, 70);
        let x: Mat = dev.tensor_from_vec(vec![1.0; n * m], (n, m));
        let b: Vector = dev.tensor_from_vec(vec![0.0; m], (m,));
        let grads = bias_act(x.clone().trace(Gradients::leaky()), &b, true).sum::<(), _>().backward();
        assert!(grads.get(&b).as_vec().iter().all(|&g| g == n as f32));
        assert!(grads.get(&x).as_vec().iter().all(|&g| g == 1.0));
    }

    #[test]
    fn mix_matches_dfdx_ops() {
        let dev = dev();
        let (n, count, width) = (70, 3, 4);
        let h: Mat = dev
            .tensor_from_vec((0..n * count * width).map(|i| ((i * 7) % 11) as f32 * 0.1).collect(), (n, count * width));
        let logits: Mat = dev.tensor_from_vec((0..n * count).map(|i| ((i * 5) % 7) as f32 * 0.2).collect(), (n, count));
        let w: Mat = dev.tensor_from_vec((0..n * width).map(|i| ((i * 3) % 5) as f32 - 2.0).collect(), (n, width));
        let fused = {
            let g = logits.clone().trace(Gradients::leaky()).softmax::<Axis<1>>();
            mix(h.clone().trace(Gradients::leaky()), g, count, width)
        };
        let plain = {
            let g = logits.clone().trace(Gradients::leaky()).softmax::<Axis<1>>();
            let g = g.broadcast_like::<_, Axis<2>>(&(n, count, width));
            (h.clone().trace(Gradients::leaky()).reshape_like(&(n, count, width)) * g).sum::<(usize, usize), Axis<1>>()
        };
        let (a, b) = (fused.retaped::<NoneTape>().as_vec(), plain.retaped::<NoneTape>().as_vec());
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5));
        let gf = (fused * w.clone()).sum::<(), _>().backward();
        let gp = (plain * w.clone()).sum::<(), _>().backward();
        for t in [&h, &logits] {
            let (a, b) = (gf.get(t).as_vec(), gp.get(t).as_vec());
            assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn inference_records_nothing_and_gives_the_same_values() {
        let dev = dev();
        let x: Mat = dev.tensor_from_vec(vec![-1.0, 2.0, 0.5, -0.5], (2, 2));
        let b: Vector = dev.tensor_from_vec(vec![0.25, 0.0], (2,));
        assert_eq!(bias_act(x.clone(), &b, true).as_vec(), vec![0.0, 2.0, 0.75, 0.0]);
        assert_eq!(bias_act(x, &b, false).as_vec(), vec![-0.75, 2.0, 0.75, -0.5]);
    }
}
