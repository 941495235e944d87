//! Shared helpers: fixtures, running an ingest into a temporary directory, reading outputs.

use std::path::{Path, PathBuf};

use mtrec_ingest::{ingest, IngestError, IngestOptions, Ingested};
use polars::prelude::*;

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A temporary copy of the CSV fixture and its schema, to modify.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for f in ["interactions.csv", "interactions.json"] {
            std::fs::copy(data_dir().join(f), dir.path().join(f)).unwrap();
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn schema(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.path("interactions.json")).unwrap()).unwrap()
    }

    pub fn set_schema(&self, schema: &serde_json::Value) {
        std::fs::write(self.path("interactions.json"), serde_json::to_string_pretty(schema).unwrap()).unwrap();
    }

    pub fn csv(&self) -> String {
        std::fs::read_to_string(self.path("interactions.csv")).unwrap()
    }

    pub fn set_csv(&self, text: &str) {
        std::fs::write(self.path("interactions.csv"), text).unwrap();
    }

    /// Ingests into `<dir>/out`, with `input` replacing the schema's source when not empty.
    pub fn ingest(&self, input: &[PathBuf]) -> Result<Ingested, IngestError> {
        ingest(&IngestOptions {
            input: input.iter().map(|p| p.to_string_lossy().into_owned()).collect(),
            ..IngestOptions::new(&self.path("interactions.json"), &self.path("out"))
        })
    }

    /// Ingests, expecting failure; checks nothing was left behind and returns the message.
    pub fn ingest_err(&self, input: &[PathBuf]) -> String {
        let err = mtrec_schema::error_chain(&self.ingest(input).expect_err("ingest should fail"));
        assert!(!self.path("out").exists(), "a failed ingest left its output directory: {err}");
        let leftovers: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".mtrec-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary output left behind: {leftovers:?}");
        err
    }
}

pub fn read_arrow(path: &Path) -> DataFrame {
    IpcReader::new(std::fs::File::open(path).unwrap()).finish().unwrap()
}

/// A split of the ingest directory `out` as one frame: its shards, in manifest order.
pub fn read_split(out: &Path, split: &str) -> DataFrame {
    let manifest = mtrec_ingest::encoded::load_manifest(out).unwrap();
    let shards = manifest.split(split.parse().unwrap());
    let mut frames = shards.shards.iter().map(|s| read_arrow(&out.join(&s.file)));
    // An empty split has no shard: its frame has the columns of a train shard and no row.
    let Some(mut df) = frames.next() else { return read_arrow(&out.join(&manifest.train.shards[0].file)).clear() };
    for more in frames {
        df.vstack_mut_owned(more).unwrap();
    }
    df
}

/// The source row of every row of an encoded split (`id.row`), in order.
pub fn row_ids(out: &Path, split: &str) -> Vec<u64> {
    read_split(out, split).column(mtrec_schema::columns::ROW).unwrap().u64().unwrap().into_no_null_iter().collect()
}

/// Parses the fixture CSV (no quoting in it) into JSON records of strings, as a client that
/// forwards raw log lines would send them; empty cells are empty strings.
pub fn csv_records(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            header
                .iter()
                .zip(line.split(','))
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_owned())))
                .collect()
        })
        .collect()
}
