//! Embedding tables outside the tape, with row-wise sparse optimizers.
//!
//! dfdx's `gather` backward allocates a gradient the size of the whole table, and a dense
//! optimizer would then touch every row each step (see the crate docs, "Working with dfdx
//! 0.13"). Instead the rows of a batch are copied into a fresh leaf tensor (`gather`), the dense
//! network runs on the tape, and the leaf's gradient is scattered back to the rows it came from,
//! duplicate ids summed (`sparse_grads`), for a lazy Adam or Adagrad step on those rows only. The
//! cost of a step is O(batch x features x dim), whatever the vocabulary size.
//!
//! A batch's path, one file each: [`batch_ids`] reads the batch's ids from the encoded columns
//! once; [`gather`] copies (or pools) their rows into the input; [`scatter`] sums the input's
//! gradient back per table row; [`optimizer`] updates the touched rows. `row_index` maps a
//! batch's ids to positions, in O(batch) whatever the table's size.

pub mod batch_ids;
pub mod gather;
pub mod optimizer;
mod row_index;
pub mod scatter;
#[cfg(test)]
mod test_support;

use mtrec_schema::FeaturePipeline;
use rand::Rng;

pub use batch_ids::BatchIds;
pub use optimizer::{SparseOptimizer, SparseOptimizerConfig};
pub use scatter::SparseGrad;

/// One feature's encoded values for a set of rows, as the model reads them.
#[derive(Debug, Clone, Copy)]
pub enum FeatureData<'a> {
    Ids(&'a [u32]),
    /// Ids of row `r` are `values[offsets[r]..offsets[r + 1]]`.
    Lists {
        offsets: &'a [usize],
        values: &'a [u32],
    },
    Values(&'a [f32]),
}

/// A table of `rows x dim` weights, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingTable {
    pub name: String,
    pub rows: usize,
    pub dim: usize,
    pub weights: Vec<f32>,
}

impl EmbeddingTable {
    pub fn row(&self, id: u32) -> &[f32] {
        let start = id as usize * self.dim;
        &self.weights[start..start + self.dim]
    }
}

/// Every embedding table of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingTables {
    pub tables: Vec<EmbeddingTable>,
}

impl EmbeddingTables {
    /// One table per distinct table name of the pipeline (shared vocabularies share one),
    /// initialized uniformly in ±0.05.
    pub fn from_pipeline(pipeline: &FeaturePipeline, rng: &mut impl Rng) -> Self {
        Self::from_pipeline_sharded(pipeline, rng, &|_| None)
    }

    /// As [`EmbeddingTables::from_pipeline`], but of table `t` with `shard_of(t) = Some((r, n))`
    /// only the rows `r, r + n, r + 2n, …` (rank `r`'s share of a row-sharded table, as rows
    /// `0, 1, 2, …`), with the values the whole table would have: every value is drawn, only
    /// the share's are kept, so memory holds the share alone.
    pub fn from_pipeline_sharded(
        pipeline: &FeaturePipeline,
        rng: &mut impl Rng,
        shard_of: &dyn Fn(usize) -> Option<(usize, usize)>,
    ) -> Self {
        let tables = pipeline
            .table_sizes()
            .into_iter()
            .enumerate()
            .map(|(t, (name, (rows, dim)))| match shard_of(t) {
                None => {
                    let weights = (0..rows * dim).map(|_| rng.gen_range(-0.05f32..0.05)).collect();
                    EmbeddingTable { name, rows, dim, weights }
                }
                Some((rank, ranks)) => {
                    let kept = (rows + ranks - 1 - rank) / ranks;
                    let mut weights = Vec::with_capacity(kept * dim);
                    for row in 0..rows {
                        for _ in 0..dim {
                            let value = rng.gen_range(-0.05f32..0.05);
                            if row % ranks == rank {
                                weights.push(value);
                            }
                        }
                    }
                    EmbeddingTable { name, rows: kept, dim, weights }
                }
            })
            .collect();
        Self { tables }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.name == name)
    }
}
