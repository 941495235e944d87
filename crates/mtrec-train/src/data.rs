//! A split as the trainer reads it: whole and kept in memory when it has at most
//! `window_rows` rows, else a window of shards at a time.
//!
//! Train windows: each epoch the shards are taken in a seeded order and grouped into windows
//! of the number of shards nearest to `window_rows` rows; a window's rows are put in source order and then
//! shuffled with a seed of the run, the epoch and the window. With one window (a split that
//! fits), this is exactly the shuffle of the whole split in memory, row for row. While a window
//! trains, the next one is read on another thread. Memory holds two windows and the model,
//! whatever the size of the split.
//!
//! Across N ranks ([`RankShare`]), a split kept whole is held by every rank and each batch is
//! cut into N consecutive slices, rank r training slice r (so the batches are those of one
//! process). A split read by windows is dealt instead: a window holds a multiple of N shards
//! and rank r reads the shards at positions r, r + N, … of it, so that no shard is read twice;
//! each rank shuffles its own rows, and every rank takes the same number of steps in a window
//! (the most any rank needs at N-th of the batch size), each step taking an equal share of
//! its rows, so no rank waits at the end of a window. Ranks hold equal rows when the window's
//! shards do (train shards are uniform samples of about `shard_rows` rows each).

use std::sync::Arc;
use std::thread::JoinHandle;

use mtrec_ingest::encoded::{open_split, Columns, ShardedSplit};
use mtrec_schema::{EncodedDataset, FeaturePipeline, Split};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::distributed::part_range;
use crate::error::TrainError;

/// Which rank of how many reads the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankShare {
    pub rank: usize,
    pub ranks: usize,
}

impl RankShare {
    /// One process reading everything.
    pub const ALONE: RankShare = RankShare { rank: 0, ranks: 1 };

    /// Slice `rank` of `ranks` consecutive slices of `rows`.
    pub fn slice<'a>(&self, rows: &'a [usize]) -> &'a [usize] {
        &rows[part_range(rows.len(), self.ranks, self.rank)]
    }
}

/// A split read whole or by windows of shards.
#[derive(Debug)]
pub struct SplitData {
    shards: ShardedSplit,
    /// The whole split, when it fits in one window.
    kept: Option<Arc<EncodedDataset>>,
    shards_per_window: usize,
    share: RankShare,
}

impl SplitData {
    /// Opens `split` of the ingest directory `dir` for rank `share` ([`RankShare::ALONE`]: the
    /// whole split); reads it whole when it has at most `window_rows` rows.
    pub fn open(
        dir: &std::path::Path,
        split: Split,
        pipeline: &FeaturePipeline,
        window_rows: usize,
        share: RankShare,
    ) -> Result<Self, TrainError> {
        let shards = open_split(dir, split, pipeline)?;
        // Train shards hold about the same number of rows (spread by hash): a window takes the
        // number of them nearest to `window_rows`.
        let rows_per_shard = (shards.rows() as f64 / shards.shard_count().max(1) as f64).max(1.0);
        // Dealt over the ranks, a window holds a multiple of their count.
        let shards_per_window =
            ((window_rows as f64 / rows_per_shard).round() as usize).max(1).next_multiple_of(share.ranks);
        let kept =
            if shards.rows() <= window_rows { Some(Arc::new(shards.read_all(Columns::ForTraining)?)) } else { None };
        Ok(SplitData { shards, kept, shards_per_window, share })
    }

    pub fn rows(&self) -> usize {
        self.shards.rows()
    }

    /// Whether the whole split is in memory.
    pub fn is_kept(&self) -> bool {
        self.kept.is_some()
    }

    /// Whether each rank reads its own shards of every window (else every rank holds the
    /// split and trains its slice of every batch).
    pub fn is_dealt(&self) -> bool {
        self.kept.is_none() && self.share.ranks > 1
    }

    /// The windows of epoch `epoch`: groups of shard indices, in the order they train.
    pub fn windows(&self, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
        let count = self.shards.shard_count();
        if self.kept.is_some() || count == 0 {
            return vec![(0..count).collect()];
        }
        let mut order: Vec<usize> = (0..count).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed ^ SHARD_ORDER ^ (epoch as u64).wrapping_mul(GOLDEN)));
        let mut windows: Vec<Vec<usize>> = order.chunks(self.shards_per_window).map(<[usize]>::to_vec).collect();
        // Too few shards left to deal one to every rank: they join the window before.
        if windows.len() > 1 && windows.last().is_some_and(|w| w.len() < self.share.ranks) {
            let tail = windows.pop().expect("more than one window");
            windows.last_mut().expect("more than one window").extend(tail);
        }
        windows
    }

    /// Starts reading this rank's shards of `window` on another thread (at once when the split
    /// is kept).
    pub fn start_reading(&self, window: &[usize]) -> Reading {
        if let Some(kept) = &self.kept {
            return Reading::Ready(kept.clone());
        }
        let RankShare { rank, ranks } = self.share;
        let window: Vec<usize> = window.iter().copied().skip(rank).step_by(ranks).collect();
        let shards = self.shards.clone();
        Reading::Pending(std::thread::spawn(move || read_window(&shards, &window, Columns::ForTraining)))
    }

    /// Each part of the split in order: the kept split, or one shard at a time, read with
    /// `columns`.
    pub fn for_each_part(
        &self,
        columns: Columns,
        mut f: impl FnMut(&EncodedDataset) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        if let Some(kept) = &self.kept {
            return f(kept);
        }
        for i in 0..self.shards.shard_count() {
            f(&self.shards.read(i, columns)?)?;
        }
        Ok(())
    }

    /// The first `rows` rows of the split in source order, or of its first shard when the
    /// split is read by windows.
    pub fn first_rows(&self, rows: usize) -> Result<EncodedDataset, TrainError> {
        let data = match &self.kept {
            Some(kept) => kept.clone(),
            None if self.shards.shard_count() == 0 => read_window(&self.shards, &[], Columns::ForTraining)?,
            None => Arc::new(self.shards.read(0, Columns::ForTraining)?),
        };
        let order = data.source_order();
        Ok(data.take(&order[..rows.min(order.len())]))
    }
}

/// `0x9E37_79B9_7F4A_7C15`: 2^64 / φ, which spreads consecutive numbers over the seeds.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// Separates the stream of shard orders from the stream of row shuffles.
const SHARD_ORDER: u64 = 0x5A4D_0D3E_0F5A_2D00;
/// Spreads window indices over the row shuffles' seeds.
const WINDOW_MIX: u64 = 0xD1B5_4A32_D192_ED03;

/// The order in which the rows of window `window` of `epoch` train: positions into the
/// window, in source order, shuffled. Window 0 of an epoch shuffles with the epoch's seed, so
/// a split that fits in one window trains exactly as if it were shuffled whole.
pub fn window_order(data: &EncodedDataset, seed: u64, epoch: usize, window: usize) -> Vec<usize> {
    let mut order = data.source_order();
    let shuffle = seed ^ (epoch as u64 + 1).wrapping_mul(GOLDEN) ^ (window as u64).wrapping_mul(WINDOW_MIX);
    order.shuffle(&mut StdRng::seed_from_u64(shuffle));
    order
}

/// This rank's rows of each of `steps` steps of a dealt window: `order` (its own rows, shuffled)
/// cut into `steps` consecutive, near-equal parts.
pub fn dealt_steps(order: &[usize], steps: usize) -> impl Iterator<Item = &[usize]> {
    (0..steps).map(move |i| &order[part_range(order.len(), steps, i)])
}

/// A window being read.
#[derive(Debug)]
pub enum Reading {
    Ready(Arc<EncodedDataset>),
    Pending(JoinHandle<Result<Arc<EncodedDataset>, TrainError>>),
}

impl Reading {
    /// The window, once read.
    pub fn wait(self) -> Result<Arc<EncodedDataset>, TrainError> {
        match self {
            Reading::Ready(data) => Ok(data),
            Reading::Pending(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        }
    }
}

fn read_window(shards: &ShardedSplit, window: &[usize], columns: Columns) -> Result<Arc<EncodedDataset>, TrainError> {
    let mut parts = window.iter().map(|&i| shards.read(i, columns));
    let mut data = match parts.next() {
        Some(first) => first?,
        None => mtrec_ingest::encoded::empty_dataset(shards.split(), shards.pipeline(), columns),
    };
    for part in parts {
        data.append(part?);
    }
    Ok(Arc::new(data))
}
