//! The shard layout and the batch-by-batch reading: the same input gives the same shards
//! whatever the batch size, train rows are spread over shards and valid/test rows fill them in
//! order, a damaged shard or manifest is an error naming the file, directories of Hive
//! partition folders read like one file.

use std::path::{Path, PathBuf};

use mtrec_ingest::encoded::{load_manifest, load_pipeline, load_split, open_split, Columns};
use mtrec_ingest::{ingest, IngestOptions};
use mtrec_schema::{columns, EncodedDataset, Split};
use polars::prelude::*;

use crate::common::{read_split, Fixture};

/// A small synthetic log as Parquet in `dir`, and its raw frame.
fn synthetic_log(dir: &Path, rows: usize) -> (PathBuf, DataFrame) {
    let config = mtrec_synth::SyntheticConfig { users: 60, items: 40, rows, seed: 3, ..Default::default() };
    let mut raw = mtrec_synth::generate(&config).unwrap();
    let path = dir.join("log.parquet");
    mtrec_synth::write_parquet(&mut raw, &path).unwrap();
    (path, raw)
}

fn synthetic_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic.json")
}

fn ingest_log(input: &Path, out: &Path, options: impl FnOnce(&mut IngestOptions)) {
    let mut opts = IngestOptions {
        input: vec![input.to_string_lossy().into_owned()],
        ..IngestOptions::new(&synthetic_schema(), out)
    };
    options(&mut opts);
    ingest(&opts).unwrap();
}

/// Every file of an ingest directory, by relative path, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["", "train", "valid", "test"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() {
                out.push((path.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The rows of a split as (row id, every encoded value as text), sorted by row id.
fn rows_by_id(data: &EncodedDataset) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = (0..data.rows)
        .map(|r| {
            let features: Vec<String> = data
                .features
                .iter()
                .map(|f| match f {
                    mtrec_schema::FeatureColumn::Ids(ids) => ids[r].to_string(),
                    mtrec_schema::FeatureColumn::Values(v) => v[r].to_bits().to_string(),
                    mtrec_schema::FeatureColumn::Lists { offsets, values } => {
                        format!("{:?}", &values[offsets[r]..offsets[r + 1]])
                    }
                })
                .collect();
            let labels: Vec<String> =
                data.labels.iter().zip(&data.masks).map(|(l, m)| format!("{}/{}", l[r], m[r])).collect();
            (data.row_ids[r], format!("{features:?} {labels:?}"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn batches_of_any_size_give_the_same_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = synthetic_log(dir.path(), 3000);
    ingest_log(&log, &dir.path().join("whole"), |_| {});
    ingest_log(&log, &dir.path().join("batched"), |o| o.batch_rows = 257);
    let (whole, batched) = (files(&dir.path().join("whole")), files(&dir.path().join("batched")));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&whole), names(&batched));
    for ((name, a), (_, b)) in whole.iter().zip(&batched) {
        if name != "ingest_report.json" {
            assert!(a == b, "{name} differs between batch sizes");
        }
    }
    // CSV is cut in chunks of text: the fixture's 48 rows in chunks of a few rows.
    let fx = Fixture::new();
    fx.ingest(&[]).unwrap();
    let small = fx.path("small");
    ingest(&IngestOptions { batch_rows: 3, ..IngestOptions::new(&fx.path("interactions.json"), &small) }).unwrap();
    for split in ["train", "valid", "test"] {
        assert!(read_split(&fx.path("out"), split).equals_missing(&read_split(&small, split)), "{split}");
    }
}

#[test]
fn train_rows_are_spread_over_shards_and_valid_and_test_rows_fill_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = synthetic_log(dir.path(), 3000);
    let (one, many) = (dir.path().join("one"), dir.path().join("many"));
    ingest_log(&log, &one, |_| {});
    ingest_log(&log, &many, |o| o.shard_rows = 500);
    let manifest = load_manifest(&many).unwrap();
    let pipeline = load_pipeline(&many).unwrap();
    let train = &manifest.train;
    assert_eq!(train.shards.len(), train.rows.div_ceil(500), "{train:?}");
    let split = open_split(&many, Split::Train, &pipeline).unwrap();
    for (i, entry) in train.shards.iter().enumerate() {
        let shard = split.read(i, Columns::ForTraining).unwrap();
        assert_eq!(shard.rows, entry.rows);
        assert!(shard.user_ids.is_none(), "training reads no raw ids");
        assert!(shard.row_ids.windows(2).all(|w| w[0] < w[1]), "rows of a shard keep their order");
        for &id in &shard.row_ids {
            let hash = xxhash_rust::xxh3::xxh3_64_with_seed(&id.to_le_bytes(), manifest.shuffle_seed);
            assert_eq!(hash % train.shards.len() as u64, i as u64, "row {id} is in the shard its hash picks");
        }
    }
    for s in [Split::Valid, Split::Test] {
        let shards = &manifest.split(s).shards;
        let sizes: Vec<usize> = shards.iter().map(|e| e.rows).collect();
        assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == 500), "{s}: {sizes:?}");
        let rows = load_split(&many, s, &pipeline).unwrap().row_ids;
        assert!(rows.windows(2).all(|w| w[0] < w[1]), "{s} rows stay in source order across shards");
    }
    // The same rows, encoded the same, whichever the layout.
    for s in Split::ALL {
        let a = load_split(&one, s, &pipeline).unwrap();
        let b = load_split(&many, s, &pipeline).unwrap();
        assert_eq!(rows_by_id(&a), rows_by_id(&b), "{s}");
    }
}

#[test]
fn a_damaged_shard_or_manifest_is_an_error_naming_the_file() {
    let fx = Fixture::new();
    fx.ingest(&[]).unwrap();
    let out = fx.path("out");
    let pipeline = load_pipeline(&out).unwrap();
    let shard = out.join("train/part-00000.arrow");
    let good = std::fs::read(&shard).unwrap();
    let error = |split: Split| mtrec_schema::error_chain(&load_split(&out, split, &pipeline).unwrap_err());

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&shard, &flipped).unwrap();
    let err = error(Split::Train);
    assert!(err.contains("train/part-00000.arrow") && err.contains("the shard is corrupt"), "{err}");

    std::fs::write(&shard, &good[..good.len() - 100]).unwrap();
    let err = error(Split::Train);
    assert!(err.contains("train/part-00000.arrow") && err.contains("truncated"), "{err}");

    std::fs::remove_file(&shard).unwrap();
    let err = error(Split::Train);
    assert!(err.contains("train/part-00000.arrow"), "{err}");
    std::fs::write(&shard, &good).unwrap();
    assert!(load_split(&out, Split::Train, &pipeline).is_ok());

    let manifest_path = out.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["valid"]["rows"] = serde_json::json!(manifest["valid"]["rows"].as_u64().unwrap() + 1);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let err = error(Split::Valid);
    assert!(err.contains("manifest.json") && err.contains("the valid split lists"), "{err}");

    std::fs::remove_file(&manifest_path).unwrap();
    std::fs::write(out.join("train.arrow"), b"").unwrap();
    let err = error(Split::Train);
    assert!(err.contains("single-file layout") && err.contains("run mtrec ingest again"), "{err}");
}

/// The synthetic log written as Spark writes a partitioned table: one folder per device
/// (`device=ios/part-00000.parquet`), the column itself only in the folder names, next to a
/// `_SUCCESS` marker.
#[test]
fn a_directory_of_hive_partitions_reads_like_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let (log, raw) = synthetic_log(dir.path(), 2000);
    let table = dir.path().join("table");
    let devices =
        raw.column("device").unwrap().as_materialized_series().unique().unwrap().sort(Default::default()).unwrap();
    for device in devices.str().unwrap().iter().flatten() {
        let mask = raw.column("device").unwrap().as_materialized_series().equal(device).unwrap();
        let mut part = raw.filter(&mask).unwrap().drop("device").unwrap();
        let folder = table.join(format!("device={device}"));
        std::fs::create_dir_all(&folder).unwrap();
        mtrec_synth::write_parquet(&mut part, &folder.join("part-00000.parquet")).unwrap();
    }
    std::fs::write(table.join("_SUCCESS"), b"").unwrap();
    // Rows are grouped by device now, so split by user: the same rows train.
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(synthetic_schema()).unwrap()).unwrap();
    schema["split"] = serde_json::json!({"method": "user", "fractions": {"train": 0.8, "valid": 0.1, "test": 0.1}});
    let schema_path = dir.path().join("schema.json");
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let (flat, hive) = (dir.path().join("flat"), dir.path().join("hive"));
    for (input, out) in [(&log, &flat), (&table, &hive)] {
        ingest(&IngestOptions {
            input: vec![input.to_string_lossy().into_owned()],
            ..IngestOptions::new(&schema_path, out)
        })
        .unwrap();
    }
    let (a, b) = (load_pipeline(&flat).unwrap(), load_pipeline(&hive).unwrap());
    assert_eq!(a.vocabularies, b.vocabularies, "the same train rows, the same categories");
    // Each row, found by its user, item and time, encodes its device the same.
    let keyed = |out: &Path| {
        let df = read_split(out, "train");
        let key = |c: &str| df.column(c).unwrap().cast(&DataType::String).unwrap();
        let (u, i, t, d) = (key(columns::USER_ID), key(columns::ITEM_ID), key(columns::TIMESTAMP), key("device"));
        let mut rows: Vec<String> = (0..df.height())
            .map(|r| {
                format!(
                    "{:?} {:?} {:?} {:?}",
                    u.get(r).unwrap(),
                    i.get(r).unwrap(),
                    t.get(r).unwrap(),
                    d.get(r).unwrap()
                )
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(keyed(&flat), keyed(&hive));
}
