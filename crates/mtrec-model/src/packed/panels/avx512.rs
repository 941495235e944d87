//! The AVX-512 kernel: panels of 32 outputs (two vectors), blocks of 14 input rows.

use std::arch::x86_64::*;

use super::{Kernel, Panels};

/// Outputs per panel.
const PANEL: usize = 32;

/// Input rows per block: two accumulators per row, 28 of the 32 registers.
const ROWS: usize = 14;

/// Which lanes of a panel's two vectors hold outputs, for the panel starting at `column`.
fn lanes(m: usize, column: usize) -> [__mmask16; 2] {
    let mask = |count: usize| if count >= 16 { u16::MAX } else { (1u16 << count) - 1 };
    let left = m - column;
    [mask(left), mask(left.saturating_sub(16))]
}

/// `act(x W + b)` of `panels` for `n` rows of `x` into `n` rows of `out`.
///
/// # Safety
/// The CPU has AVX-512F; `panels` are packed for [`Kernel::Avx512`]; `x` holds `n` rows of
/// `panels.k` values, `x_stride` apart; `out` holds `n` rows of `panels.m` writable values,
/// `stride` apart; `bias` holds `panels.m` values.
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
    debug_assert!(panels.kernel == Kernel::Avx512 && panels.kernel.width() == PANEL);
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
                    // `max` returns its second operand where the first is NaN: a NaN becomes 0,
                    // as in the scalar ReLU.
                    v = _mm512_max_ps(v, zero);
                }
                _mm512_mask_storeu_ps(out.add(r * self.stride + half * 16), mask, v);
            }
        }
    }
}
