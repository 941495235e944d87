//! Scratch buffers kept between steps, so that large buffers are not handed back to the OS
//! and faulted in again (zeroed by the kernel) on every step.

use dfdx::prelude::*;

use crate::params::Dev;

/// Freed scratch buffers kept for the next step. Bounded by [`POOL_BYTES`]; its contents
/// never reach a result (every taken buffer is overwritten).
static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
const POOL_BYTES: usize = 256 << 20;

/// A buffer of `len` values with unspecified contents: the smallest pooled buffer that fits
/// (and is not over twice the size), or a new one.
pub(super) fn take_buffer(len: usize) -> Vec<f32> {
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
pub(super) fn give_buffer(buf: Vec<f32>) {
    let bytes = |b: &Vec<f32>| b.capacity() * std::mem::size_of::<f32>();
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.iter().map(bytes).sum::<usize>() + bytes(&buf) <= POOL_BYTES {
        pool.push(buf);
    }
}

/// A contiguous tensor's values (a plain copy; `as_vec` walks a strided index per value).
/// Every input here is the fresh output of another op or a parameter, hence contiguous.
pub(super) fn values<S: Shape, T>(t: &Tensor<S, f32, Dev, T>) -> Vec<f32> {
    let mut buf = take_buffer(t.shape().num_elements());
    t.copy_into(&mut buf);
    buf
}
