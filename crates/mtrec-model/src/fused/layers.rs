//! Linear layers and whole ReLU MLPs (or expert banks) as one taped op each: products through
//! faer, bias and activation in one pass over each output, the activations between layers
//! kept inside the op.

use dfdx::prelude::*;
use faer::prelude::ReborrowMut;
use faer::{Accum, MatMut, MatRef};

use super::coded::{coded_backward, coded_product, InputCodes, CODED_MIN_WIDTH};
use super::kernels::{add_into, column_sums, gemm, gemm_par, mask_rows, par_rows, positive, LayerShape};
use super::pool::{give_buffer, take_buffer, values};
use crate::params::{take_grad, Mat, TapeKind, Vector};

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

/// One layer of a [`chain`]: `G` groups of `k x m` weights and `m` biases over `G` column
/// blocks of its input, then ReLU or nothing.
struct Layer<'a> {
    groups: Vec<(&'a Mat, &'a Vector)>,
    relu: bool,
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
pub(super) fn product(input: &[f32], weights: &[Vec<f32>], shape: LayerShape, n: usize, out: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::kernels::{PARALLEL_GEMM_MIN, PARALLEL_MIN};
    use crate::fused::test_support::*;
    use crate::params::Dev;

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
