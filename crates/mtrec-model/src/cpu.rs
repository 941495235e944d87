//! Clearing the vector registers' upper halves between faer's matrix products and this crate's
//! own loops.
//!
//! faer's matrix kernels run on AVX-512 or AVX2 where the CPU has them, and they can return
//! with the upper halves of the vector registers still dirty. The rest of the crate is compiled
//! for baseline x86-64, and on Intel CPUs its SSE instructions then stall merging into those
//! dirty registers (as does every call from it into glibc's AVX `expf`), which made training on
//! a Xeon with AVX-512 markedly slower (benches/README.md, "Training speed against PyTorch:
//! history"). So every product is followed by a `vzeroupper` on its thread, and every parallel
//! job of the training and serving path starts with one, since a parallel product leaves the
//! pool's threads dirty as well. The instruction costs a cycle or so; pulp wraps it safely.
//! AMD's CPUs do not have the stall.

/// `vzeroupper` on this thread where the CPU has AVX; nothing elsewhere.
#[inline]
pub(crate) fn clean_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx) = pulp::core_arch::x86::Avx::try_new() {
        avx._mm256_zeroupper();
    }
}
