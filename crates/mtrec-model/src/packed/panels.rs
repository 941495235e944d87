//! A dense layer's weights packed once, when the model is packed, in the layout an AVX-512
//! kernel reads, and that kernel.
//!
//! faer packs the weight operand of every product again on each call (it cannot know the
//! weights are constant), and serving's products are small: a request of 100 rows against a
//! layer of a few thousand outputs spends a sixth of its time packing. Here the weights are
//! stored as column panels of [`PANEL`] outputs, each panel `k` rows of [`PANEL`] contiguous
//! values (zero beyond the layer's last output), so the kernel streams a panel straight from
//! memory. The kernel keeps a block of [`ROWS`] input rows by one panel in 28 of the 32
//! vector registers over the whole depth `k`, then adds the bias and applies the ReLU as it
//! stores. Each output is the sum over `k` in order, one fused multiply-add at a time, the
//! same sum whichever block a row falls in: a row's outputs never depend on the other rows of
//! its call.
//!
//! Only layers wider than one vector ([`Panels::new`]) and only CPUs with AVX-512 take this
//! path; the others keep faer's products. benches/README.md ("Serving") gives the speed.

/// Outputs per panel: two AVX-512 vectors of `f32`.
pub(crate) const PANEL: usize = 32;

/// Input rows per block of the kernel: two accumulators per row, 28 registers in all.
pub(crate) const ROWS: usize = 14;

/// The weights `W` (`k x m`) of a layer, as column panels for the AVX-512 kernel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Panels {
    k: usize,
    m: usize,
    values: Vec<f32>,
}

impl Panels {
    /// The panels of `w` (`k x m`, row-major), where the CPU has AVX-512 and the layer has
    /// more outputs than one vector holds (narrower layers would waste most of each panel).
    pub(crate) fn new(w: &[f32], k: usize, m: usize) -> Option<Self> {
        (m > PANEL / 2 && has_avx512()).then(|| Self::pack(w, k, m))
    }

    fn pack(w: &[f32], k: usize, m: usize) -> Self {
        assert_eq!(w.len(), k * m, "a {k} x {m} layer's weights");
        let mut values = vec![0.0; m.div_ceil(PANEL) * k * PANEL];
        for (i, dst) in values.chunks_exact_mut(PANEL).enumerate() {
            // Row `i % k` of panel `i / k`.
            let (row, columns) = (i % k, (i / k) * PANEL..m.min((i / k + 1) * PANEL));
            dst[..columns.len()].copy_from_slice(&w[row * m + columns.start..row * m + columns.end]);
        }
        Self { k, m, values }
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
        // Every access of the kernel lies within these bounds.
        assert!(x_stride >= k && x.len() >= (n - 1) * x_stride + k, "the input's rows");
        assert!(at + m <= stride && out.len() >= (n - 1) * stride + at + m, "the output's rows");
        assert_eq!(bias.len(), m, "the bias");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: panels exist only where the CPU has AVX-512 (`new`), and the asserts above
        // keep every read and write within `x`, `out`, `bias` and the panels.
        unsafe {
            avx512::apply(self, x.as_ptr(), x_stride, n, bias.as_ptr(), out.as_mut_ptr().add(at), stride, relu)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("panels are built on x86-64 only");
    }
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Panels, PANEL, ROWS};

    /// Which lanes of a panel's two vectors hold outputs, for the panel starting at `column`.
    fn lanes(m: usize, column: usize) -> [__mmask16; 2] {
        let mask = |count: usize| if count >= 16 { u16::MAX } else { (1u16 << count) - 1 };
        let left = m - column;
        [mask(left), mask(left.saturating_sub(16))]
    }

    /// # Safety
    /// The CPU has AVX-512F; `x` holds `n` rows of `panels.k` values, `x_stride` apart;
    /// `out` holds `n` rows of `panels.m` writable values, `stride` apart; `bias` holds
    /// `panels.m` values.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn apply(
        panels: &Panels,
        x: *const f32,
        x_stride: usize,
        n: usize,
        bias: *const f32,
        out: *mut f32,
        stride: usize,
        relu: bool,
    ) {
        let k = panels.k;
        for p in 0..panels.m.div_ceil(PANEL) {
            let column = p * PANEL;
            let block = Block {
                panel: panels.values.as_ptr().add(p * k * PANEL),
                k,
                x_stride,
                bias: bias.add(column),
                lanes: lanes(panels.m, column),
                stride,
                relu,
            };
            let mut row = 0;
            while row + ROWS <= n {
                block.rows::<ROWS>(x.add(row * x_stride), out.add(row * stride + column));
                row += ROWS;
            }
            let (x, out) = (x.add(row * x_stride), out.add(row * stride + column));
            match n - row {
                0 => {}
                1 => block.rows::<1>(x, out),
                2 => block.rows::<2>(x, out),
                3 => block.rows::<3>(x, out),
                4 => block.rows::<4>(x, out),
                5 => block.rows::<5>(x, out),
                6 => block.rows::<6>(x, out),
                7 => block.rows::<7>(x, out),
                8 => block.rows::<8>(x, out),
                9 => block.rows::<9>(x, out),
                10 => block.rows::<10>(x, out),
                11 => block.rows::<11>(x, out),
                12 => block.rows::<12>(x, out),
                13 => block.rows::<13>(x, out),
                _ => unreachable!("fewer than ROWS rows are left"),
            }
        }
    }

    /// One panel of the layer, and where its outputs go.
    struct Block {
        panel: *const f32,
        k: usize,
        x_stride: usize,
        bias: *const f32,
        lanes: [__mmask16; 2],
        stride: usize,
        relu: bool,
    }

    impl Block {
        /// `R` rows of `x` through the panel, into `R` rows of `out`.
        ///
        /// # Safety
        /// As for [`apply`], for these `R` rows and this panel.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn rows<const R: usize>(&self, x: *const f32, out: *mut f32) {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for d in 0..self.k {
                let w0 = _mm512_loadu_ps(self.panel.add(d * PANEL));
                let w1 = _mm512_loadu_ps(self.panel.add(d * PANEL + 16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let v = _mm512_set1_ps(*x.add(r * self.x_stride + d));
                    acc[0] = _mm512_fmadd_ps(v, w0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(v, w1, acc[1]);
                }
            }
            let [low, high] = self.lanes;
            let bias = [_mm512_maskz_loadu_ps(low, self.bias), _mm512_maskz_loadu_ps(high, self.bias.add(16))];
            let zero = _mm512_setzero_ps();
            for (r, acc) in acc.iter().enumerate() {
                for (half, mask) in [low, high].into_iter().enumerate() {
                    let mut v = _mm512_add_ps(acc[half], bias[half]);
                    if self.relu {
                        // `max` returns its second operand where the first is NaN: a NaN
                        // becomes 0, as in the scalar ReLU.
                        v = _mm512_max_ps(v, zero);
                    }
                    _mm512_mask_storeu_ps(out.add(r * self.stride + half * 16), mask, v);
                }
            }
        }
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
        let panels = Panels::pack(&w, k, m);
        assert_eq!(panels.values.len(), 2 * k * PANEL);
        assert_eq!(&panels.values[..PANEL], &w[..PANEL]);
        assert_eq!(&panels.values[PANEL..2 * PANEL], &w[m..m + PANEL]);
        // The second panel: column 32 of each row, then zeros.
        assert_eq!(panels.values[2 * PANEL], w[32]);
        assert_eq!(panels.values[3 * PANEL], w[m + 32]);
        assert!(panels.values[2 * PANEL + 1..3 * PANEL].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_kernel_computes_the_layer_for_every_row_count_and_width() {
        let Some(_) = Panels::new(&[0.0; 17], 1, 17) else {
            eprintln!("no AVX-512 on this CPU: the panels' kernel is not used here");
            return;
        };
        for (n, k, m) in [(1, 5, 17), (13, 7, 32), (14, 3, 40), (29, 0, 48), (100, 37, 70)] {
            let x: Vec<f32> = (0..n * k).map(|i| ((i as f32) * 0.37).sin()).collect();
            let w: Vec<f32> = (0..k * m).map(|i| ((i as f32) * 0.11).cos()).collect();
            let b: Vec<f32> = (0..m).map(|i| ((i as f32) * 0.7).sin()).collect();
            let panels = Panels::new(&w, k, m).expect("AVX-512 found above");
            for relu in [false, true] {
                let want = reference(&x, &w, &b, n, k, m, relu);
                // Into the middle of wider rows: the columns beside stay untouched.
                let (stride, at) = (m + 5, 3);
                let mut out = vec![f32::NAN; n * stride];
                panels.apply(&x, k, n, &b, &mut out, stride, at, relu);
                for r in 0..n {
                    let row = &out[r * stride..(r + 1) * stride];
                    assert_eq!(&row[at..at + m], &want[r * m..(r + 1) * m], "n {n}, k {k}, m {m}, row {r}");
                    assert!(row[..at].iter().chain(&row[at + m..]).all(|v| v.is_nan()));
                }
            }
        }
    }

    #[test]
    fn a_rows_outputs_do_not_depend_on_the_other_rows() {
        let (k, m) = (300, 64);
        let Some(panels) = Panels::new(&vec![0.5; k * m], k, m) else { return };
        let x: Vec<f32> = (0..20 * k).map(|i| ((i as f32) * 0.013).sin()).collect();
        let b = vec![0.25; m];
        let mut all = vec![0.0; 20 * m];
        panels.apply(&x, k, 20, &b, &mut all, m, 0, true);
        for r in 0..20 {
            let mut one = vec![0.0; m];
            panels.apply(&x[r * k..(r + 1) * k], k, 1, &b, &mut one, m, 0, true);
            assert_eq!(one, all[r * m..(r + 1) * m]);
        }
    }

    #[test]
    fn narrow_layers_keep_the_plain_product() {
        assert!(Panels::new(&[0.0; 16], 1, 16).is_none());
    }
}
