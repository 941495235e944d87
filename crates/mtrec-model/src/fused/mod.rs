//! Fused ops with hand-written backward passes, recorded on dfdx's tape.
//!
//! dfdx 0.13 runs every element-wise op through a generic strided index, single-threaded, and
//! allocates a fresh buffer per op; its matrix products use gemm 0.15, measurably slower than
//! faer's on the CPUs we train on (benches/README.md, "Training speed against PyTorch:
//! history"). The ops here are the model's hot path, one file each:
//!
//! - [`layers`]: [`mlp`], a whole ReLU MLP, or an expert bank (the experts' first layers as one
//!   product, each deeper layer of all experts as one grouped product over their column
//!   blocks), as one op; products through faer, bias and ReLU in the same pass over each
//!   output, activations kept inside the op; and [`linear`], one layer without activation
//!   (gates, output heads);
//! - [`coded`]: the first layer computed per distinct embedding id (below);
//! - [`gates`]: [`mix`], a gate's softmax and its mixture of the experts, and [`mix_gates`],
//!   several gates over the same experts (MMoE's one per task), reading them once;
//! - `kernels` and `pool`: the passes they share (products, row-parallel element-wise passes,
//!   column sums, ReLU masks) and the scratch buffers they reuse.
//!
//! In training, the first layer over the assembled input can take [`InputCodes`]: for the
//! embedding slots of single-id features, which id each row holds. A batch of 2,048 rows holds
//! a few dozen distinct ids of a small vocabulary, so that slot's part of `x W` is computed once
//! per distinct id (`U_s W_s`, then added to each row), and so are its parts of the backward
//! pass: the rows' output gradients are summed per id first, then multiplied. The three
//! products of that layer (`x W`, `x^T dOut`, `dOut W^T`) shrink by about the ratio of rows to
//! distinct ids; what remains is one add of a `width_out` row per row and slot each way.
//! The input's gradient then holds, in a coded slot, each id's summed gradient in the first
//! row holding it and zero in the others: exactly what the scatter to the embedding rows sums
//! (`EmbeddingTables::sparse_grads`), but not a per-row gradient.
//!
//! Each records one backward closure through the public `Tape` API; without a tape (inference)
//! nothing is recorded and the same code serves both. Element-wise passes and sums run on rayon
//! over fixed-size row blocks (their results do not depend on the thread count); a run is
//! deterministic for a given thread count, as the trainer promises. Inputs are read with one
//! copy each (dfdx gives no borrowed view of a tensor's data); scratch buffers come from a small
//! bounded pool.

pub mod coded;
pub mod gates;
mod kernels;
pub mod layers;
mod pool;
#[cfg(test)]
mod test_support;

pub use coded::{CodedBlock, InputCodes, CODED_MIN_WIDTH};
pub use gates::{mix, mix_gates};
pub use layers::{linear, mlp};
