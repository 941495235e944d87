//! The AVX2 kernel (with FMA), for CPUs without AVX-512: panels of 16 outputs (two vectors),
//! blocks of 6 input rows.

use std::arch::x86_64::*;

use super::{Kernel, Panels};

/// Outputs per panel.
const PANEL: usize = 16;

/// Input rows per block: two accumulators per row, 12 of the 16 registers.
const ROWS: usize = 6;

/// Which lanes of a panel's two vectors hold outputs (all bits set in a lane that does), for
/// the panel starting at `column`.
#[target_feature(enable = "avx2")]
fn lanes(m: usize, column: usize) -> [__m256i; 2] {
    let left = (m - column).min(PANEL) as i32;
    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    [_mm256_cmpgt_epi32(_mm256_set1_epi32(left), index), _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 8), index)]
}

/// `act(x W + b)` of `panels` for `n` rows of `x` into `n` rows of `out`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `panels` are packed for [`Kernel::Avx2`]; `x` holds `n` rows of
/// `panels.k` values, `x_stride` apart; `out` holds `n` rows of `panels.m` writable values,
/// `stride` apart; `bias` holds `panels.m` values.
#[target_feature(enable = "avx2,fma")]
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
    debug_assert!(panels.kernel == Kernel::Avx2 && panels.kernel.width() == PANEL);
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
    lanes: [__m256i; 2],
    stride: usize,
    relu: bool,
}

impl Block {
    /// `R` rows of `x` through the panel, into `R` rows of `out`.
    ///
    /// # Safety
    /// As for [`apply`], for these `R` rows and this panel.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows<const R: usize>(&self, x: *const f32, out: *mut f32) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for d in 0..self.k {
            let w0 = _mm256_loadu_ps(self.panel.add(d * PANEL));
            let w1 = _mm256_loadu_ps(self.panel.add(d * PANEL + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let v = _mm256_broadcast_ss(&*x.add(r * self.x_stride + d));
                acc[0] = _mm256_fmadd_ps(v, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(v, w1, acc[1]);
            }
        }
        let [low, high] = self.lanes;
        let bias = [_mm256_maskload_ps(self.bias, low), _mm256_maskload_ps(self.bias.add(8), high)];
        let zero = _mm256_setzero_ps();
        for (r, acc) in acc.iter().enumerate() {
            for (half, mask) in [low, high].into_iter().enumerate() {
                let mut v = _mm256_add_ps(acc[half], bias[half]);
                if self.relu {
                    // `max` returns its second operand where the first is NaN: a NaN becomes 0,
                    // as in the scalar ReLU.
                    v = _mm256_max_ps(v, zero);
                }
                _mm256_maskstore_ps(out.add(r * self.stride + half * 8), mask, v);
            }
        }
    }
}
