//! Softmax gates and their mixtures of experts (MMoE's and PLE's), with hand-written
//! backward passes.

use dfdx::prelude::*;

use super::kernels::par_rows;
use super::pool::{give_buffer, take_buffer, values};
use crate::params::{take_grad, Mat, TapeKind};

/// A row of logits replaced by its softmax (shared with the packed model, which must compute the
/// same numbers).
pub(crate) fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for p in row.iter_mut() {
        *p = (*p - max).exp();
        total += *p;
    }
    row.iter_mut().for_each(|p| *p /= total);
}

/// `out += Σ_e p[e] h[e*width..(e+1)*width]` for one row: `h` holds the experts' outputs side by
/// side, `p` the gate's weights (`out` is `width` long).
pub(crate) fn mix_row(out: &mut [f32], h: &[f32], p: &[f32]) {
    let width = out.len();
    for (e, &pe) in p.iter().enumerate() {
        for (o, x) in out.iter_mut().zip(&h[e * width..(e + 1) * width]) {
            *o += pe * x;
        }
    }
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
        par_rows(&mut pv, count, |_, row| softmax_row(row));
        let mut out = take_buffer(n * width);
        out.fill(0.0);
        par_rows(&mut out, width, |b, o| {
            mix_row(o, &hv[b * count * width..(b + 1) * count * width], &pv[b * count..(b + 1) * count])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::test_support::*;
    use crate::params::Dev;

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
}
