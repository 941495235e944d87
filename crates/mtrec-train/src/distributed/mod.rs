//! Data-parallel training across processes: the collective operations a step needs, and how
//! the ranks combine their gradients.
//!
//! Every rank holds the whole model (replicated dense parameters and embedding tables), trains
//! its own part of each batch on its threads, and before every update the ranks combine what
//! they computed, so that every rank applies the same update and the replicas stay identical:
//! - dense gradients are summed in rank order ([`sum_in_rank_order`]: a reduce-scatter then an
//!   all-gather, each rank summing one chunk of the vector), so a run is deterministic for a
//!   seed, a rank count and a thread count, and one thread per rank sums exactly as one
//!   process whose parts are the ranks' parts;
//! - embedding gradients travel as the touched rows only (ids and values, gathered from every
//!   rank) and are merged in rank order; a whole table is never sent.
//!
//! - embedding tables too large to copy on every rank are row-sharded ([`sharding`]).
//!
//! [`Collective`] is the transport: [`Solo`] for one process, and with the `mpi` cargo feature
//! [`mpi::MpiCollective`] over an MPI communicator (OpenMPI through the `mpi` crate).

#[cfg(feature = "mpi")]
pub mod mpi;
pub mod sharding;

use mtrec_model::embedding::SparseGrad;

/// The collective operations of data-parallel training. Every rank calls the same operations in
/// the same order (they block until every rank has called them); only the thread that created
/// the transport calls them.
pub trait Collective: std::fmt::Debug {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Every rank's `data` (lengths may differ), in rank order.
    fn all_gather_f32(&self, data: &[f32]) -> Vec<Vec<f32>>;
    /// Every rank's `data` (lengths may differ), in rank order.
    fn all_gather_u64(&self, data: &[u64]) -> Vec<Vec<u64>>;
    /// Every rank's `data` (lengths may differ), in rank order.
    fn all_gather_u32(&self, data: &[u32]) -> Vec<Vec<u32>>;
    /// Sends `chunks[k]` to rank `k`; returns what each rank sent to this one, in rank order.
    fn all_to_all_f32(&self, chunks: &[&[f32]]) -> Vec<Vec<f32>>;
    /// Sends `chunks[k]` to rank `k`; returns what each rank sent to this one, in rank order.
    fn all_to_all_u32(&self, chunks: &[&[u32]]) -> Vec<Vec<u32>>;
    /// Bytes this rank has sent since it started (payload only).
    fn bytes_sent(&self) -> u64;
}

/// One process alone: every gather returns its own data.
#[derive(Debug, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather_f32(&self, data: &[f32]) -> Vec<Vec<f32>> {
        vec![data.to_vec()]
    }
    fn all_gather_u64(&self, data: &[u64]) -> Vec<Vec<u64>> {
        vec![data.to_vec()]
    }
    fn all_gather_u32(&self, data: &[u32]) -> Vec<Vec<u32>> {
        vec![data.to_vec()]
    }
    fn all_to_all_f32(&self, chunks: &[&[f32]]) -> Vec<Vec<f32>> {
        chunks.iter().map(|c| c.to_vec()).collect()
    }
    fn all_to_all_u32(&self, chunks: &[&[u32]]) -> Vec<Vec<u32>> {
        chunks.iter().map(|c| c.to_vec()).collect()
    }
    fn bytes_sent(&self) -> u64 {
        0
    }
}

/// Part `k` of `parts` consecutive, near-equal parts of `len` items: how a batch is cut into
/// data-parallel parts and over ranks, a dealt window into steps, and a vector into the chunks
/// ranks sum.
pub(crate) fn part_range(len: usize, parts: usize, k: usize) -> std::ops::Range<usize> {
    k * len / parts..(k + 1) * len / parts
}

/// Replaces every rank's `values` (one length on every rank) by their sum over the ranks, added
/// in rank order: rank `k` receives chunk `k` from every rank, sums it (rank 0's first), and
/// the sums are gathered back. Each rank sends and receives about 2 (N−1)/N of the vector, as
/// a ring all-reduce does, and the result does not depend on the transport's algorithm.
pub fn sum_in_rank_order(comm: &dyn Collective, values: &mut [f32]) {
    let size = comm.size();
    if size == 1 {
        return;
    }
    let len = values.len();
    let chunks: Vec<&[f32]> = (0..size).map(|k| &values[part_range(len, size, k)]).collect();
    let mut received = comm.all_to_all_f32(&chunks).into_iter();
    let mut sum = received.next().expect("one chunk per rank");
    for other in received {
        assert_eq!(other.len(), sum.len(), "sum_in_rank_order: ranks hold vectors of different lengths");
        sum.iter_mut().zip(&other).for_each(|(a, b)| *a += b);
    }
    for (k, part) in comm.all_gather_f32(&sum).into_iter().enumerate() {
        values[part_range(len, size, k)].copy_from_slice(&part);
    }
}

/// Every rank's per-table sparse gradients, in rank order (`[rank][table]`): one gather of the
/// ids (each table's row count first) and one of the values.
pub fn gather_sparse(comm: &dyn Collective, grads: Vec<SparseGrad>, dims: &[usize]) -> Vec<Vec<SparseGrad>> {
    if comm.size() == 1 {
        return vec![grads];
    }
    let mut ids: Vec<u32> = grads.iter().map(|g| u32::try_from(g.ids.len()).expect("rows per step fit u32")).collect();
    let mut values = Vec::with_capacity(grads.iter().map(|g| g.values.len()).sum());
    for g in &grads {
        ids.extend_from_slice(&g.ids);
        values.extend_from_slice(&g.values);
    }
    let all_ids = comm.all_gather_u32(&ids);
    let all_values = comm.all_gather_f32(&values);
    all_ids
        .into_iter()
        .zip(all_values)
        .map(|(ids, values)| {
            let (counts, mut ids) = ids.split_at(dims.len());
            let mut values = &values[..];
            counts
                .iter()
                .zip(dims)
                .map(|(&n, &dim)| {
                    let n = n as usize;
                    let g = SparseGrad { ids: ids[..n].to_vec(), values: values[..n * dim].to_vec() };
                    (ids, values) = (&ids[n..], &values[n * dim..]);
                    g
                })
                .collect()
        })
        .collect()
}

/// Returns once every rank has called it.
pub fn barrier(comm: &dyn Collective) {
    comm.all_gather_u64(&[]);
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Barrier, Mutex};

    use super::*;

    /// Ranks as threads of one process, exchanging through shared slots: the collectives'
    /// semantics without MPI, for the unit tests.
    #[derive(Debug)]
    pub(crate) struct Threads {
        rank: usize,
        shared: Arc<Shared>,
    }

    #[derive(Debug)]
    pub(crate) struct Shared {
        size: usize,
        barrier: Barrier,
        slots: Mutex<Vec<Vec<Vec<u8>>>>,
    }

    impl Threads {
        pub(crate) fn group(size: usize) -> Vec<Threads> {
            let shared = Arc::new(Shared { size, barrier: Barrier::new(size), slots: Mutex::new(vec![vec![]; size]) });
            (0..size).map(|rank| Threads { rank, shared: shared.clone() }).collect()
        }

        /// Posts one message per destination, then reads the ones addressed to this rank.
        fn exchange(&self, to: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
            self.shared.slots.lock().unwrap()[self.rank] = to;
            self.shared.barrier.wait();
            let got = self.shared.slots.lock().unwrap().iter().map(|from| from[self.rank].clone()).collect();
            self.shared.barrier.wait();
            got
        }

        fn gather<T: Copy>(&self, data: &[T], to_bytes: fn(&T) -> Vec<u8>, from: fn(&[u8]) -> T) -> Vec<Vec<T>> {
            let bytes: Vec<u8> = data.iter().flat_map(to_bytes).collect();
            let width = std::mem::size_of::<T>();
            self.exchange(vec![bytes; self.shared.size])
                .into_iter()
                .map(|b| b.chunks_exact(width).map(from).collect())
                .collect()
        }
    }

    impl Collective for Threads {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.shared.size
        }
        fn all_gather_f32(&self, data: &[f32]) -> Vec<Vec<f32>> {
            self.gather(data, |v| v.to_le_bytes().to_vec(), |b| f32::from_le_bytes(b.try_into().unwrap()))
        }
        fn all_gather_u64(&self, data: &[u64]) -> Vec<Vec<u64>> {
            self.gather(data, |v| v.to_le_bytes().to_vec(), |b| u64::from_le_bytes(b.try_into().unwrap()))
        }
        fn all_gather_u32(&self, data: &[u32]) -> Vec<Vec<u32>> {
            self.gather(data, |v| v.to_le_bytes().to_vec(), |b| u32::from_le_bytes(b.try_into().unwrap()))
        }
        fn all_to_all_f32(&self, chunks: &[&[f32]]) -> Vec<Vec<f32>> {
            let to = chunks.iter().map(|c| c.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
            self.exchange(to)
                .into_iter()
                .map(|b| b.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
                .collect()
        }
        fn all_to_all_u32(&self, chunks: &[&[u32]]) -> Vec<Vec<u32>> {
            let to = chunks.iter().map(|c| c.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
            self.exchange(to)
                .into_iter()
                .map(|b| b.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect())
                .collect()
        }
        fn bytes_sent(&self) -> u64 {
            0
        }
    }

    /// Runs `f` on every rank of a group of `size` thread-ranks, results in rank order.
    pub(crate) fn on_ranks<T: Send>(size: usize, f: impl Fn(&dyn Collective) -> T + Sync) -> Vec<T> {
        let f = &f;
        std::thread::scope(|s| {
            let handles: Vec<_> = Threads::group(size).into_iter().map(|c| s.spawn(move || f(&c))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn sums_are_added_in_rank_order_and_reach_every_rank() {
        for size in [1, 2, 3] {
            let sums = on_ranks(size, |comm| {
                // Lengths that do not divide by the rank count; rank-dependent values.
                let mut v: Vec<f32> = (0..7).map(|i| (comm.rank() * 10 + i) as f32 + 0.1).collect();
                sum_in_rank_order(comm, &mut v);
                v
            });
            let expected: Vec<f32> = (0..7)
                .map(|i| {
                    (0..size)
                        .map(|r| (r * 10 + i) as f32 + 0.1)
                        .fold(None, |a: Option<f32>, x| Some(a.map_or(x, |a| a + x)))
                        .unwrap()
                })
                .collect();
            for s in sums {
                assert_eq!(s, expected, "{size} ranks");
            }
        }
    }

    #[test]
    fn sparse_gradients_arrive_per_rank_and_table() {
        let dims = [2, 1];
        let got = on_ranks(2, |comm| {
            let r = comm.rank() as u32;
            let grads = vec![
                SparseGrad { ids: vec![r, 5], values: vec![1.0, 2.0, 3.0 + r as f32, 4.0] },
                SparseGrad { ids: (0..r).collect(), values: (0..r).map(|i| i as f32).collect() },
            ];
            gather_sparse(comm, grads, &dims)
        });
        for per_rank in got {
            assert_eq!(per_rank[0][0].ids, vec![0, 5]);
            assert_eq!(per_rank[1][0].values, vec![1.0, 2.0, 4.0, 4.0]);
            assert!(per_rank[0][1].ids.is_empty());
            assert_eq!(per_rank[1][1].ids, vec![0]);
        }
    }
}
