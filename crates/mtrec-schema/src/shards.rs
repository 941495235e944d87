//! The layout of an ingest directory's encoded data: each split is a directory of shards (Arrow
//! IPC files of a bounded number of rows), listed with their row counts and checksums in
//! `manifest.json`. Readers check a shard against its entry before they trust it, so a
//! truncated or altered file is an error that names it, never rows silently lost.

use serde::{Deserialize, Serialize};

use crate::Split;

/// The manifest's file name in an ingest directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Version of the shard layout; readers refuse other versions.
pub const SHARD_FORMAT_VERSION: u32 = 1;

/// `manifest.json`: the shards of every split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardManifest {
    pub format_version: u32,
    /// The hash of the dataset schema the data was encoded with (as in `features.json`).
    pub schema_hash: String,
    /// The pipeline the shards were encoded with, relative to the ingest directory.
    pub pipeline: String,
    /// The number of rows a shard holds at most, but for train shards: train rows are spread
    /// over `ceil(train rows / shard_rows)` shards by a seeded hash of the row, so each holds
    /// about `shard_rows` of them, in no particular order of time.
    pub shard_rows: usize,
    /// The seed of the train rows' spread over shards.
    pub shuffle_seed: u64,
    pub train: SplitShards,
    pub valid: SplitShards,
    pub test: SplitShards,
}

impl ShardManifest {
    /// The shards of `split`.
    pub fn split(&self, split: Split) -> &SplitShards {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// The shard directory of `split`, relative to the ingest directory: `train`, `valid`,
    /// `test`.
    pub fn split_dir(split: Split) -> &'static str {
        split.name()
    }

    /// The file name of shard `index` of a split: `part-00000.arrow`.
    pub fn shard_file(split: Split, index: usize) -> String {
        format!("{}/part-{index:05}.arrow", Self::split_dir(split))
    }
}

/// One split's shards, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitShards {
    /// Rows of all shards.
    pub rows: usize,
    pub shards: Vec<ShardEntry>,
}

/// One shard: its file, relative to the ingest directory, and what a reader checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    pub file: String,
    pub rows: usize,
    pub bytes: u64,
    /// XXH3-64 of the file's bytes, as 16 hex digits.
    pub xxh3: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_files_are_numbered_within_their_split() {
        assert_eq!(ShardManifest::shard_file(Split::Train, 0), "train/part-00000.arrow");
        assert_eq!(ShardManifest::shard_file(Split::Test, 123), "test/part-00123.arrow");
    }
}
