//! A dense layer's weights packed once, when the model is packed, in the layout a SIMD kernel
//! reads, and the kernels: AVX-512 (`avx512`) and, on CPUs without it, AVX2 with FMA (`avx2`).
//!
//! faer packs the weight operand of every product again on each call (it cannot know the
//! weights are constant), and serving's products are small: a request of 100 rows against a
//! layer of a few thousand outputs spends a sixth of its time packing. Here the weights are
//! stored as column panels of two vectors' worth of outputs ([`Kernel::width`]), each panel `k`
//! rows of contiguous values (zero beyond the layer's last output), so a kernel streams a panel
//! straight from memory. A kernel keeps a block of input rows by one panel in registers over
//! the whole depth `k` (AVX-512: 14 rows, 28 of its 32 registers; AVX2: 6 rows, 12 of 16),
//! then adds the bias and applies the ReLU as it stores. Each output is the sum over `k` in
//! order, one fused multiply-add at a time, the same sum whichever block a row falls in: a
//! row's outputs never depend on the other rows of its call.
//!
//! Only layers wider than one vector ([`Panels::new`]) take this path; narrower layers and CPUs
//! without AVX2 keep faer's products. benches/README.md ("Serving") gives the speed.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// A SIMD kernel, and the panel layout it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Avx512,
    Avx2,
}

impl Kernel {
    /// Outputs per panel: two vectors of `f32`.
    fn width(self) -> usize {
        match self {
            Kernel::Avx512 => 32,
            Kernel::Avx2 => 16,
        }
    }

    /// The kernels this CPU can run, the fastest first.
    fn available() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                kernels.push(Kernel::Avx2);
            }
        }
        kernels
    }
}

/// The weights `W` (`k x m`) of a layer, as column panels for a SIMD kernel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Panels {
    kernel: Kernel,
    k: usize,
    m: usize,
    values: Vec<f32>,
}

impl Panels {
    /// The panels of `w` (`k x m`, row-major) for the fastest kernel of this CPU, where it has
    /// one and the layer has more outputs than one vector holds (narrower layers would waste
    /// most of each panel).
    pub(crate) fn new(w: &[f32], k: usize, m: usize) -> Option<Self> {
        let kernel = *Kernel::available().first()?;
        (m > kernel.width() / 2).then(|| Self::pack(w, k, m, kernel))
    }

    fn pack(w: &[f32], k: usize, m: usize, kernel: Kernel) -> Self {
        assert_eq!(w.len(), k * m, "a {k} x {m} layer's weights");
        let width = kernel.width();
        let mut values = vec![0.0; m.div_ceil(width) * k * width];
        for (i, dst) in values.chunks_exact_mut(width).enumerate() {
            // Row `i % k` of panel `i / k`.
            let (row, columns) = (i % k, (i / k) * width..m.min((i / k + 1) * width));
            dst[..columns.len()].copy_from_slice(&w[row * m + columns.start..row * m + columns.end]);
        }
        Self { kernel, k, m, values }
    }

    /// `act(x W + b)` into columns `at..at + m` of the `n` rows of `out` (row-major, `stride`
    /// values per row), over `x`: `n` rows of `k` contiguous values, `x_stride` apart.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply(
        &self,
        x: &[f32],
        x_stride: usize,
        n: usize,
        bias: &[f32],
        out: &mut [f32],
        stride: usize,
        at: usize,
        relu: bool,
    ) {
        let (k, m) = (self.k, self.m);
        if n == 0 {
            return;
        }
        // Every access of the kernels lies within these bounds.
        assert!(x_stride >= k && x.len() >= (n - 1) * x_stride + k, "the input's rows");
        assert!(at + m <= stride && out.len() >= (n - 1) * stride + at + m, "the output's rows");
        assert_eq!(bias.len(), m, "the bias");
        #[cfg(target_arch = "x86_64")]
        {
            let (x, bias, out) = (x.as_ptr(), bias.as_ptr(), out[at..].as_mut_ptr());
            // SAFETY: panels for a kernel exist only where the CPU runs it (`Kernel::available`),
            // and the asserts above keep every read and write within `x`, `out`, `bias` and the
            // panels.
            match self.kernel {
                Kernel::Avx512 => unsafe { avx512::apply(self, x, x_stride, n, bias, out, stride, relu) },
                Kernel::Avx2 => unsafe { avx2::apply(self, x, x_stride, n, bias, out, stride, relu) },
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("panels are built on x86-64 only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `act(x W + b)` by its definition, each sum in order over `k`.
    fn reference(x: &[f32], w: &[f32], b: &[f32], n: usize, k: usize, m: usize, relu: bool) -> Vec<f32> {
        let mut out = vec![0.0; n * m];
        for r in 0..n {
            for c in 0..m {
                let v = b[c] + (0..k).fold(0.0f32, |s, i| x[r * k + i].mul_add(w[i * m + c], s));
                out[r * m + c] = if relu { v.max(0.0) } else { v };
            }
        }
        out
    }

    #[test]
    fn panels_hold_the_weights_by_column_blocks_padded_with_zeros() {
        let (k, m) = (2, 33);
        let w: Vec<f32> = (0..k * m).map(|i| i as f32 + 1.0).collect();
        let panels = Panels::pack(&w, k, m, Kernel::Avx512);
        assert_eq!(panels.values.len(), 2 * k * 32);
        assert_eq!(&panels.values[..32], &w[..32]);
        assert_eq!(&panels.values[32..64], &w[m..m + 32]);
        // The second panel: column 32 of each row, then zeros.
        assert_eq!(panels.values[64], w[32]);
        assert_eq!(panels.values[96], w[m + 32]);
        assert!(panels.values[65..96].iter().all(|&v| v == 0.0));
        // Panels of 16: the third holds column 32.
        let panels = Panels::pack(&w, k, m, Kernel::Avx2);
        assert_eq!(panels.values.len(), 3 * k * 16);
        assert_eq!(&panels.values[16..32], &w[m..m + 16]);
        assert_eq!(panels.values[4 * 16], w[32]);
        assert!(panels.values[4 * 16 + 1..5 * 16].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn every_kernel_computes_the_layer_for_every_row_count_and_width() {
        let kernels = Kernel::available();
        if kernels.is_empty() {
            eprintln!("no AVX2 on this CPU: the panels' kernels are not used here");
        }
        let shapes = [(1, 5, 9), (5, 3, 16), (13, 7, 17), (14, 3, 40), (29, 0, 48), (100, 37, 70)];
        for (kernel, (n, k, m)) in kernels.into_iter().flat_map(|kernel| shapes.map(|s| (kernel, s))) {
            let x: Vec<f32> = (0..n * k).map(|i| ((i as f32) * 0.37).sin()).collect();
            let w: Vec<f32> = (0..k * m).map(|i| ((i as f32) * 0.11).cos()).collect();
            let b: Vec<f32> = (0..m).map(|i| ((i as f32) * 0.7).sin()).collect();
            let panels = Panels::pack(&w, k, m, kernel);
            for relu in [false, true] {
                let want = reference(&x, &w, &b, n, k, m, relu);
                // Into the middle of wider rows: the columns beside stay untouched.
                let (stride, at) = (m + 5, 3);
                let mut out = vec![f32::NAN; n * stride];
                panels.apply(&x, k, n, &b, &mut out, stride, at, relu);
                for r in 0..n {
                    let row = &out[r * stride..(r + 1) * stride];
                    let context = format!("{kernel:?}: n {n}, k {k}, m {m}, row {r}, relu {relu}");
                    assert_eq!(&row[at..at + m], &want[r * m..(r + 1) * m], "{context}");
                    assert!(row[..at].iter().chain(&row[at + m..]).all(|v| v.is_nan()), "{context}");
                }
            }
        }
    }

    #[test]
    fn a_rows_outputs_do_not_depend_on_the_other_rows() {
        let (k, m) = (300, 64);
        let x: Vec<f32> = (0..20 * k).map(|i| ((i as f32) * 0.013).sin()).collect();
        let w: Vec<f32> = (0..k * m).map(|i| ((i as f32) * 0.29).cos()).collect();
        let b = vec![0.25; m];
        for kernel in Kernel::available() {
            let panels = Panels::pack(&w, k, m, kernel);
            let mut all = vec![0.0; 20 * m];
            panels.apply(&x, k, 20, &b, &mut all, m, 0, true);
            for r in 0..20 {
                let mut one = vec![0.0; m];
                panels.apply(&x[r * k..(r + 1) * k], k, 1, &b, &mut one, m, 0, true);
                assert_eq!(one, all[r * m..(r + 1) * m], "{kernel:?}, row {r}");
            }
        }
    }

    #[test]
    fn layers_of_one_vector_or_less_keep_the_plain_product() {
        let Some(&best) = Kernel::available().first() else { return };
        let half = best.width() / 2;
        assert!(Panels::new(&vec![0.0; half], 1, half).is_none());
        assert_eq!(Panels::new(&vec![0.0; half + 1], 1, half + 1).map(|p| p.kernel), Some(best));
    }
}
