//! Deterministic synthetic interaction logs with known true probabilities.
//!
//! mtrec needs a data set where the best achievable score of every task is known, so that
//! models, losses and metrics can be checked against ground truth rather than against each
//! other. [`generate`] builds one from a seed.
//!
//! # The world
//! - **Users** (`u0`, `u1`, ...) have a latent taste vector `u ~ N(0, I/latent_dim)`. Their
//!   attributes are drawn partly from projections of `u`, so features carry signal about the
//!   latent: `age_bucket`, `region`, `activity` (low/medium/high; a user appears with weight
//!   1/3/9) and `account_age_days` (log-normal, about 2% null).
//! - **Items** (`i0`, `i1`, ...) belong to one of 20 categories. Each category has a centroid
//!   in latent space and an item's latent is `v = centroid + noise`, so the category is
//!   informative about `v`. Prices are log-normal around a per-category level; popularity is
//!   Zipf-like (`s = 1`), so a few items dominate.
//! - **Events** are spread over 30 days from 2026-01-01T00:00:00Z with a diurnal rhythm and
//!   sorted by `timestamp`. Each picks a user by activity weight and an item by popularity,
//!   with a context (`hour`, `device`, `position` 1..10). `recent_items` lists the user's last
//!   up to five clicked items before the event, most recent first, joined by `|`.
//!
//! # The labels
//! With `x = u ⊙ v` and unit vectors `w1`, `w2`, the affinities `s1 = d·(w1·x)` and
//! `s2 = d·(w2·x)` (`d = latent_dim`) have roughly unit variance.
//! - `click` ~ Bernoulli(`p_click`), `p_click = σ(a·s1 + position bias + device + hour + b)`.
//! - `convert` ~ Bernoulli(`p_convert`) for clicked rows only (0 otherwise);
//!   `p_convert = σ(a·s2 − price effect + b)` is written for every row. `would_convert` is the
//!   conversion had the row been clicked: `convert` where clicked, else a draw from `p_convert`
//!   (on a stream of its own, so the other columns do not depend on it). Against it a
//!   conversion model is judged on every impression, the population it scores when serving,
//!   not only on the clicked rows it can be trained on (the sample-selection bias ESMM
//!   addresses).
//! - With `history_effect` h ≠ 0, the click logit also gains `h · max_j cos(v, v_j)` over the
//!   user's recent clicks `v_j` (`recent_items`; 0 without any): short-term interest, which
//!   depends on the candidate and the history jointly (what target attention over the history
//!   can represent and its mean cannot). `p_click` includes it.
//! - `dwell_time` (seconds, null without a click) is log-normal around
//!   `expected_log_dwell = 3 + 0.5·s1`.
//! - `high_value` is drawn per event from a user-level `p_high_value` (latent, age, activity).
//! - `item_quality` (`low`/`mid`/`high`) is drawn per event from an item-level softmax over
//!   the item latent and its price (`p_quality_*`).
//!
//! Every probability is written beside its label, so the Bayes-optimal score of each task
//! (for example the AUC of `p_click` against `click`) can be computed from the frame itself.
//!
//! # Task correlation
//! As in the synthetic data of the MMoE paper (Ma et al., KDD 2018, §3), `w2` is built from
//! `w1` by Gram-Schmidt: `w2 = R·w1 + sqrt(1 − R²)·w⊥` with `w⊥ ⟂ w1`, so the cosine of the
//! click and conversion directions is exactly `R = task_correlation`. `R = 1` makes the two
//! tasks share one affinity, `R = 0` makes them unrelated, `R = −1` makes them opposed.
//!
//! # Determinism
//! Every random draw comes from `StdRng` streams derived from `seed`: one for the shared
//! directions, one for users, one for items and two for events. The same config always gives
//! the same frame, and changing `rows` (or `items`) leaves the user population unchanged.
//! [`write_synthetic`] writes the same rows chunk by chunk, in memory of one chunk.
//!
//! The code follows the generation: the `constants` of the world, seeded `random`
//! streams, the `world` (directions, users, items), the `events`, and the `frame`.

mod config;
mod constants;
mod error;
mod events;
mod frame;
mod random;
#[cfg(test)]
mod tests;
mod world;

use std::path::Path;

use mtrec_schema::fs::StagedFile;
use polars::prelude::*;

pub use crate::config::SyntheticConfig;
pub use crate::error::SynthError;

use crate::events::{Events, Simulation};
use crate::frame::into_frame;
use crate::world::{Items, Users, World};

/// Rows per Parquet row group of [`write_synthetic`]: what is in memory at a time.
pub const CHUNK_ROWS: usize = 1 << 17;

/// Generates the synthetic interaction log described in the crate docs, in memory.
///
/// The same config always yields a bit-identical frame.
pub fn generate(cfg: &SyntheticConfig) -> Result<DataFrame, SynthError> {
    cfg.validate()?;
    let world = World::new(cfg);
    let users = Users::new(cfg, &world);
    let items = Items::new(cfg, &world);
    let mut simulation = Simulation::new(cfg, &world, &users, &items);
    match simulation.next_chunk(cfg.rows) {
        Some(events) => into_frame(events, &users, &items),
        None => into_frame(Events::with_capacity(0), &users, &items),
    }
}

/// Generates the log of `cfg` straight into the Parquet file `path`, one row group of
/// [`CHUNK_ROWS`] rows at a time, atomically: memory holds one row group (and the users and
/// items), whatever the number of rows. The rows are those of [`generate`]. `progress` is told
/// the rows written after each row group.
pub fn write_synthetic(cfg: &SyntheticConfig, path: &Path, progress: &dyn Fn(usize)) -> Result<(), SynthError> {
    write_chunked(cfg, path, CHUNK_ROWS, progress)
}

fn write_chunked(
    cfg: &SyntheticConfig,
    path: &Path,
    chunk_rows: usize,
    progress: &dyn Fn(usize),
) -> Result<(), SynthError> {
    cfg.validate()?;
    let world = World::new(cfg);
    let users = Users::new(cfg, &world);
    let items = Items::new(cfg, &world);
    let mut simulation = Simulation::new(cfg, &world, &users, &items);
    let io_error = |source| SynthError::Io { path: path.to_path_buf(), source };
    let mut staged = StagedFile::new(path).map_err(io_error)?;
    {
        let mut out = std::io::BufWriter::new(staged.file());
        let first = simulation.next_chunk(chunk_rows).unwrap_or_else(|| Events::with_capacity(0));
        let first = into_frame(first, &users, &items)?;
        let mut writer = ParquetWriter::new(&mut out).batched(first.schema())?;
        writer.write_batch(&first)?;
        progress(first.height());
        while let Some(events) = simulation.next_chunk(chunk_rows) {
            let df = into_frame(events, &users, &items)?;
            writer.write_batch(&df)?;
            progress(df.height());
        }
        writer.finish()?;
        std::io::Write::flush(&mut out).map_err(io_error)?;
    }
    staged.commit().map_err(io_error)
}

/// Writes `df` to `path` as Parquet, atomically: readers see the old file or the whole new
/// one, never a partial write.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<(), SynthError> {
    let io_error = |source| SynthError::Io { path: path.to_path_buf(), source };
    let mut staged = StagedFile::new(path).map_err(io_error)?;
    {
        let mut writer = std::io::BufWriter::new(staged.file());
        ParquetWriter::new(&mut writer).finish(df)?;
        std::io::Write::flush(&mut writer).map_err(io_error)?;
    }
    staged.commit().map_err(io_error)
}
