//! The MPI transport (the `mpi` cargo feature): the collectives over `MPI_COMM_WORLD`, through
//! the `mpi` crate's safe bindings to the system's MPI library (OpenMPI).
//!
//! Only the thread that initialized MPI calls it (MPI_THREAD_FUNNELED): the step's worker
//! threads compute, the main thread exchanges.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use super::Collective;

/// `MPI_COMM_WORLD`, held with the MPI environment (finalized when dropped).
pub struct MpiCollective {
    world: SimpleCommunicator,
    // Dropped after `world`: finalizes MPI.
    _universe: Universe,
    sent: ByteCounter,
    watch: Arc<Watch>,
}

/// Counts the bytes this rank hands to MPI, for the figures of the training history.
#[derive(Debug, Default)]
struct ByteCounter(std::cell::Cell<u64>);

impl ByteCounter {
    fn add<T>(&self, values: &[T]) {
        self.0.set(self.0.get() + std::mem::size_of_val(values) as u64);
    }
    fn get(&self) -> u64 {
        self.0.get()
    }
}

/// When this rank entered the exchange it is in (milliseconds since `start`, plus one; 0: in
/// none), for the watchdog.
#[derive(Debug)]
struct Watch {
    start: Instant,
    entered: AtomicU64,
}

impl Watch {
    fn enter(&self) -> Exchanging<'_> {
        self.entered.store(self.start.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        Exchanging(self)
    }
}

/// An exchange in progress; its end clears the watch.
struct Exchanging<'a>(&'a Watch);

impl Drop for Exchanging<'_> {
    fn drop(&mut self) {
        self.0.entered.store(0, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for MpiCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MpiCollective {{ rank: {}, size: {} }}", self.rank(), self.size())
    }
}

impl MpiCollective {
    /// Initializes MPI, once per process. `None` when it was initialized already or the MPI
    /// library cannot give the threading level the trainer needs.
    pub fn init() -> Option<Self> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
        if threading < mpi::Threading::Funneled {
            return None;
        }
        let watch = Arc::new(Watch { start: Instant::now(), entered: AtomicU64::new(0) });
        Some(MpiCollective { world: universe.world(), _universe: universe, sent: ByteCounter::default(), watch })
    }

    /// Ends the job when this rank has waited `timeout` in one exchange: the other ranks never
    /// came, because one hangs (a dead one is noticed by mpirun itself). The rank says so and
    /// exits with status 1, which makes mpirun end every rank. Exchanges wait for each other's
    /// steps, so the timeout must exceed the longest phase one rank spends alone (rank 0
    /// writing a checkpoint, a window of shards read while the others wait).
    pub fn watchdog(self, timeout: Duration) -> Self {
        let (watch, rank, ranks) = (Arc::clone(&self.watch), self.rank(), self.size());
        std::thread::spawn(move || loop {
            std::thread::sleep((timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(5)));
            let entered = watch.entered.load(Ordering::Relaxed);
            if entered == 0 {
                continue;
            }
            let waited = watch.start.elapsed().saturating_sub(Duration::from_millis(entered - 1));
            if waited >= timeout {
                eprintln!(
                    "error on rank {rank} of {ranks}: waited {} s in an exchange for the other ranks (the limit, \
                     --exchange-timeout-secs): another rank hangs; ending the job",
                    waited.as_secs()
                );
                std::process::exit(1);
            }
        });
        self
    }

    /// Ends every rank of the job (MPI_Abort): what a rank does when it cannot go on, so that
    /// the others do not wait for it forever.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    fn counts(&self, len: usize) -> Vec<Count> {
        let _exchanging = self.watch.enter();
        let mut counts = vec![0 as Count; self.size()];
        let len = Count::try_from(len).expect("a message of fewer than 2^31 values");
        self.world.all_gather_into(&len, &mut counts[..]);
        counts
    }

    fn gather<T: Equivalence + Copy + Default>(&self, data: &[T]) -> Vec<Vec<T>> {
        let counts = self.counts(data.len());
        let displs = offsets(&counts);
        let mut all = vec![T::default(); counts.iter().map(|&c| c as usize).sum()];
        {
            let _exchanging = self.watch.enter();
            let mut partition = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(data, &mut partition);
        }
        self.sent.add(data);
        split(all, &counts)
    }
}

impl MpiCollective {
    fn all_to_all<T: Equivalence + Copy + Default>(&self, chunks: &[&[T]]) -> Vec<Vec<T>> {
        let send_counts: Vec<Count> =
            chunks.iter().map(|c| Count::try_from(c.len()).expect("a message of fewer than 2^31 values")).collect();
        let _exchanging = self.watch.enter();
        let mut recv_counts = vec![0 as Count; self.size()];
        self.world.all_to_all_into(&send_counts[..], &mut recv_counts[..]);
        let send: Vec<T> = chunks.concat();
        let mut recv = vec![T::default(); recv_counts.iter().map(|&c| c as usize).sum()];
        {
            let (send_displs, recv_displs) = (offsets(&send_counts), offsets(&recv_counts));
            let partition = Partition::new(&send[..], &send_counts[..], &send_displs[..]);
            let mut received = PartitionMut::new(&mut recv[..], &recv_counts[..], &recv_displs[..]);
            self.world.all_to_all_varcount_into(&partition, &mut received);
        }
        self.sent.add(&send);
        split(recv, &recv_counts)
    }
}

/// Where each rank's values start in the concatenation of all of them.
fn offsets(counts: &[Count]) -> Vec<Count> {
    counts
        .iter()
        .scan(0, |at, &c| {
            let start = *at;
            *at += c;
            Some(start)
        })
        .collect()
}

fn split<T: Copy>(all: Vec<T>, counts: &[Count]) -> Vec<Vec<T>> {
    let mut rest = &all[..];
    counts
        .iter()
        .map(|&c| {
            let (head, tail) = rest.split_at(c as usize);
            rest = tail;
            head.to_vec()
        })
        .collect()
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_gather_f32(&self, data: &[f32]) -> Vec<Vec<f32>> {
        self.gather(data)
    }
    fn all_gather_u64(&self, data: &[u64]) -> Vec<Vec<u64>> {
        self.gather(data)
    }
    fn all_gather_u32(&self, data: &[u32]) -> Vec<Vec<u32>> {
        self.gather(data)
    }
    fn all_to_all_f32(&self, chunks: &[&[f32]]) -> Vec<Vec<f32>> {
        self.all_to_all(chunks)
    }
    fn all_to_all_u32(&self, chunks: &[&[u32]]) -> Vec<Vec<u32>> {
        self.all_to_all(chunks)
    }
    fn bytes_sent(&self) -> u64 {
        self.sent.get()
    }
}
