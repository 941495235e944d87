//! `mtrec train --distributed`: one rank of a data-parallel job launched by `mpirun` (or the
//! Kubeflow MPI Operator), with the `mpi` cargo feature.

use anyhow::Result;

/// Trains as one rank of the MPI job this process belongs to. Rank 0 gets the result (and has
/// written the bundle); the other ranks get `None`. A rank that fails prints its error with its
/// rank and ends the whole job (MPI_Abort), so that no rank waits for it forever; what rank 0
/// writes is written atomically, so the last checkpoint stays whole and `--resume` continues.
/// A rank that waits longer than `exchange_timeout` in one exchange ends the job: another rank
/// hangs.
#[cfg(feature = "mpi")]
pub fn train(
    opts: &mtrec_train::TrainOptions,
    exchange_timeout: std::time::Duration,
) -> Result<Option<mtrec_train::Trained>> {
    use mtrec_train::distributed::{mpi::MpiCollective, Collective};
    let comm = MpiCollective::init().ok_or_else(|| {
        anyhow::anyhow!("MPI could not be initialized with the threading the trainer needs (MPI_THREAD_FUNNELED)")
    })?;
    let comm = if exchange_timeout.is_zero() { comm } else { comm.watchdog(exchange_timeout) };
    let (rank, ranks) = (comm.rank(), comm.size());
    match mtrec_train::train_on(opts, &comm) {
        Ok(trained) => Ok((rank == 0).then_some(trained)),
        // Every rank stops at the same window; rank 0 says so.
        Err(stopped @ mtrec_train::TrainError::Stopped { .. }) if rank == 0 => Err(stopped.into()),
        Err(mtrec_train::TrainError::Stopped { .. }) => Ok(None),
        Err(e) => {
            eprintln!("error on rank {rank} of {ranks}: {:#}", anyhow::Error::from(e));
            comm.abort(1)
        }
    }
}

#[cfg(not(feature = "mpi"))]
pub fn train(_: &mtrec_train::TrainOptions, _: std::time::Duration) -> Result<Option<mtrec_train::Trained>> {
    anyhow::bail!(
        "this mtrec was built without MPI: build it with `cargo build --release --features mpi` \
         (needs OpenMPI's libopenmpi-dev and libclang-dev), then run `mpirun -np N mtrec train --distributed …`"
    )
}
