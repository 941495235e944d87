//! Writing a split's encoded rows as shards: Arrow IPC files of a bounded number of rows, each
//! checksummed for the manifest. Valid and test rows fill shards one after another
//! in source order; train rows are spread over their shards by a seeded hash of the row, so
//! that every shard is a uniform sample of the train split and training can shuffle a window
//! of shards instead of the whole split.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mtrec_schema::{columns, ShardEntry, ShardManifest, Split, SplitShards};
use polars::prelude::*;

use crate::error::IngestError;

/// The most train shards written at once; beyond it, shards hold more than `shard_rows` rows.
pub const MAX_TRAIN_SHARDS: usize = 512;

/// Rows of a shard's record batches, at most.
const BATCH_ROWS: usize = 1 << 14;

/// Rows gathered but not yet written, over all the train shards open at once: each shard's record
/// batches are cut smaller when there are many shards, so that memory does not grow with them.
const SPREAD_PENDING_ROWS: usize = 1 << 19;

/// The fewest rows of a record batch.
const MIN_BATCH_ROWS: usize = 1 << 10;

/// One shard being written.
struct ShardFile {
    file: String,
    path: PathBuf,
    /// Writes straight to the file (the Arrow writer writes whole buffers), so that an error
    /// of the last write is not lost in a buffer's drop.
    writer: polars::io::ipc::BatchedWriter<Checksummed>,
    /// The checksum and size of the bytes written so far.
    digest: Arc<Mutex<Digest>>,
    rows: usize,
    /// Rows of each record batch written ([`BATCH_ROWS`] or fewer).
    batch_rows: usize,
    /// Rows gathered but not yet written (counted in `rows`).
    pending: Option<DataFrame>,
}

impl ShardFile {
    fn create(root: &Path, file: String, schema: &DataFrame, batch_rows: usize) -> Result<Self, IngestError> {
        let path = root.join(&file);
        let file_out = std::fs::File::create(&path).map_err(|e| IngestError::write(&path, e))?;
        let digest = Arc::new(Mutex::new(Digest::default()));
        let out = Checksummed { file: file_out, digest: Arc::clone(&digest) };
        let writer = IpcWriter::new(out)
            .with_compat_level(CompatLevel::oldest())
            .batched(schema.schema(), ipc_fields(schema))
            .map_err(|e| IngestError::write(&path, e))?;
        Ok(ShardFile { file, path, writer, digest, rows: 0, batch_rows, pending: None })
    }

    fn write(&mut self, df: &DataFrame) -> Result<(), IngestError> {
        self.writer.write_batch(df).map_err(|e| IngestError::write(&self.path, e))
    }

    /// Gathers `df`, writing record batches of exactly `batch_rows` rows as they fill (the last
    /// one may be shorter), so that a shard's bytes do not depend on how the input was cut into
    /// batches.
    fn gather(&mut self, df: DataFrame) -> Result<(), IngestError> {
        self.rows += df.height();
        let pending = match self.pending.take() {
            None => df,
            Some(mut p) => {
                p.vstack_mut_owned(df).map_err(|e| IngestError::write(&self.path, e))?;
                p
            }
        };
        let full = pending.height() / self.batch_rows * self.batch_rows;
        for start in (0..full).step_by(self.batch_rows) {
            let mut batch = pending.slice(start as i64, self.batch_rows);
            batch.rechunk_mut();
            self.write(&batch)?;
        }
        if full < pending.height() {
            self.pending = Some(pending.slice(full as i64, pending.height() - full));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if let Some(mut df) = self.pending.take() {
            df.rechunk_mut();
            self.write(&df)?;
        }
        Ok(())
    }

    /// Writes what is gathered and the file's footer; the shard's manifest entry, with the
    /// checksum of the bytes written (taken as they pass, not by reading the file back).
    fn finish(mut self) -> Result<ShardEntry, IngestError> {
        self.flush()?;
        self.writer.finish().map_err(|e| IngestError::write(&self.path, e))?;
        drop(self.writer);
        let digest = self.digest.lock().expect("no writer panicked holding the digest");
        let xxh3 = format!("{:016x}", digest.hasher.digest());
        Ok(ShardEntry { file: self.file, rows: self.rows, bytes: digest.bytes, xxh3 })
    }
}

/// The running checksum of a file being written.
#[derive(Default)]
struct Digest {
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

/// A file that checksums what is written to it ([`checksum`] of the whole file, in one pass).
struct Checksummed {
    file: std::fs::File,
    digest: Arc<Mutex<Digest>>,
}

impl Write for Checksummed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        let mut digest = self.digest.lock().expect("no writer panicked holding the digest");
        digest.hasher.update(&buf[..written]);
        digest.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The checksum of a shard's bytes, as the manifest records it.
pub fn checksum(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// The IPC field descriptions of `df`'s columns, for the batched Arrow writer.
fn ipc_fields(df: &DataFrame) -> Vec<polars_arrow::io::ipc::IpcField> {
    let arrow = df.schema().to_arrow(CompatLevel::oldest());
    polars_arrow::io::ipc::write::default_ipc_fields(arrow.iter_values())
}

/// Rows of the record batches of each of `shards` train shards written at once: the pending rows
/// of all of them stay within [`SPREAD_PENDING_ROWS`]. It depends on the shard count alone, so
/// the shards' bytes are the same whatever the input's batches.
fn spread_batch_rows(shards: usize) -> usize {
    (SPREAD_PENDING_ROWS / shards.max(1)).clamp(MIN_BATCH_ROWS, BATCH_ROWS)
}

/// How a split's rows are laid out over its shards.
enum Layout {
    /// One shard after another, each full before the next (valid, test).
    Sequential { current: Option<Box<ShardFile>> },
    /// Each row in the shard its hash picks (train); shards are created as rows arrive.
    Spread { shards: Vec<Option<ShardFile>>, seed: u64 },
}

/// Writes one split's shards under an ingest directory being staged.
pub struct SplitWriter {
    root: PathBuf,
    split: Split,
    shard_rows: usize,
    layout: Layout,
    done: Vec<(usize, ShardEntry)>,
    next_index: usize,
}

impl std::fmt::Debug for SplitWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitWriter").field("split", &self.split).field("shards", &self.done.len()).finish()
    }
}

impl SplitWriter {
    /// A writer of shards of `shard_rows` rows each, in source order.
    pub fn sequential(root: &Path, split: Split, shard_rows: usize) -> Result<Self, IngestError> {
        Self::new(root, split, shard_rows, Layout::Sequential { current: None })
    }

    /// A writer that spreads `rows` rows over `ceil(rows / shard_rows)` shards (at most
    /// [`MAX_TRAIN_SHARDS`]) by a hash of each row's id with `seed`.
    pub fn spread(root: &Path, split: Split, shard_rows: usize, rows: u64, seed: u64) -> Result<Self, IngestError> {
        let count = (rows.div_ceil(shard_rows as u64) as usize).clamp(1, MAX_TRAIN_SHARDS);
        Self::new(root, split, shard_rows, Layout::Spread { shards: (0..count).map(|_| None).collect(), seed })
    }

    fn new(root: &Path, split: Split, shard_rows: usize, layout: Layout) -> Result<Self, IngestError> {
        let dir = root.join(ShardManifest::split_dir(split));
        std::fs::create_dir_all(&dir).map_err(|e| IngestError::write(&dir, e))?;
        Ok(SplitWriter {
            root: root.to_owned(),
            split,
            shard_rows: shard_rows.max(1),
            layout,
            done: Vec::new(),
            next_index: 0,
        })
    }

    /// Writes the encoded rows `df` (with their `id.row` column).
    pub fn write(&mut self, df: DataFrame) -> Result<(), IngestError> {
        if df.height() == 0 {
            return Ok(());
        }
        match &mut self.layout {
            Layout::Sequential { current } => {
                let mut offset = 0;
                while offset < df.height() {
                    if current.as_ref().is_some_and(|s| s.rows >= self.shard_rows) {
                        let full = current.take().expect("checked");
                        self.done.push((self.next_index - 1, full.finish()?));
                    }
                    let shard = match current {
                        Some(s) => s,
                        None => {
                            let file = ShardManifest::shard_file(self.split, self.next_index);
                            self.next_index += 1;
                            current.insert(Box::new(ShardFile::create(&self.root, file, &df, BATCH_ROWS)?))
                        }
                    };
                    let take = (self.shard_rows - shard.rows).min(df.height() - offset);
                    shard.gather(df.slice(offset as i64, take))?;
                    offset += take;
                }
            }
            Layout::Spread { shards, seed } => {
                let ids = df
                    .column(columns::ROW)
                    .and_then(|c| c.u64().cloned())
                    .map_err(|e| IngestError::Polars { what: "the encoded rows' ids".into(), source: e })?;
                let count = shards.len() as u64;
                let batch_rows = spread_batch_rows(shards.len());
                let mut members: Vec<Vec<IdxSize>> = vec![Vec::new(); shards.len()];
                for (position, id) in ids.into_no_null_iter().enumerate() {
                    let shard = xxhash_rust::xxh3::xxh3_64_with_seed(&id.to_le_bytes(), *seed) % count;
                    members[shard as usize].push(position as IdxSize);
                }
                for (index, rows) in members.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
                    let part = df
                        .take(&IdxCa::from_vec("idx".into(), rows))
                        .map_err(|e| IngestError::Polars { what: "spreading rows over shards".into(), source: e })?;
                    let shard = match &mut shards[index] {
                        Some(s) => s,
                        slot => slot.insert(ShardFile::create(
                            &self.root,
                            ShardManifest::shard_file(self.split, index),
                            &part,
                            batch_rows,
                        )?),
                    };
                    shard.gather(part)?;
                }
            }
        }
        Ok(())
    }

    /// Finishes every shard; the split's entry in the manifest.
    pub fn finish(mut self) -> Result<SplitShards, IngestError> {
        match self.layout {
            Layout::Sequential { current } => {
                if let Some(last) = current {
                    self.done.push((self.next_index - 1, last.finish()?));
                }
            }
            Layout::Spread { shards, .. } => {
                for (index, shard) in shards.into_iter().enumerate() {
                    if let Some(shard) = shard {
                        self.done.push((index, shard.finish()?));
                    }
                }
            }
        }
        self.done.sort_by_key(|(index, _)| *index);
        let shards: Vec<ShardEntry> = self.done.into_iter().map(|(_, entry)| entry).collect();
        Ok(SplitShards { rows: shards.iter().map(|s| s.rows).sum(), shards })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_checksummed_while_written_matches_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let df = df!("id.row" => (0..50_000u64).collect::<Vec<_>>(), "x" => vec![1.5f32; 50_000]).unwrap();
        let mut shard = ShardFile::create(dir.path(), "part-00000.arrow".into(), &df, 4_096).unwrap();
        shard.gather(df.slice(0, 30_000)).unwrap();
        shard.gather(df.slice(30_000, 20_000)).unwrap();
        let entry = shard.finish().unwrap();
        let bytes = std::fs::read(dir.path().join("part-00000.arrow")).unwrap();
        assert_eq!((entry.rows, entry.bytes, entry.xxh3), (50_000, bytes.len() as u64, checksum(&bytes)));
    }

    #[test]
    fn train_shards_cut_smaller_batches_as_they_multiply() {
        assert_eq!(spread_batch_rows(1), BATCH_ROWS);
        assert_eq!(spread_batch_rows(32), BATCH_ROWS);
        assert_eq!(spread_batch_rows(33), (1 << 19) / 33);
        assert_eq!(spread_batch_rows(MAX_TRAIN_SHARDS), MIN_BATCH_ROWS);
        for shards in [1, 40, 100, 333, MAX_TRAIN_SHARDS] {
            let pending = shards * (spread_batch_rows(shards) - 1);
            assert!(pending < SPREAD_PENDING_ROWS.max(shards * MIN_BATCH_ROWS), "{shards} shards");
        }
    }
}
