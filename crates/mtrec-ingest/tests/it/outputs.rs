//! What a successful ingest writes, and that the pipeline is fitted on train rows only.

use mtrec_schema::{columns, FeaturePipeline, Scale, Transform};

use crate::common::{csv_records, read_split, row_ids, Fixture};

#[test]
fn writes_every_artifact_and_splits_all_rows() {
    let fx = Fixture::new();
    let ingested = fx.ingest(&[]).unwrap();
    let out = fx.path("out");
    for f in ["features.json", "schema.json", "ingest_report.json", "manifest.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let manifest = mtrec_ingest::encoded::load_manifest(&out).unwrap();
    for split in mtrec_schema::Split::ALL {
        let shards = manifest.split(split);
        assert_eq!(shards.shards.len(), 1, "a small split is one shard");
        assert_eq!(shards.shards[0].file, format!("{split}/part-00000.arrow"));
        assert!(out.join(&shards.shards[0].file).is_file());
    }
    let r = &ingested.report.rows;
    assert_eq!(r.train + r.valid + r.test, 48);
    assert!(r.train > r.valid && r.valid > 0 && r.test > 0, "{r:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ingest_report.json")).unwrap()).unwrap();
    assert_eq!(report["rows"]["train"], r.train);
    let user = &report["features"][0];
    assert_eq!(user["name"], "user");
    let h = &user["hashing"];
    assert_eq!(h["distinct_values"], 9, "9 users in the fixture (all in train? see seed) {h}");
    assert_eq!(
        h["colliding_values"].as_u64().unwrap(),
        h["distinct_values"].as_u64().unwrap() - h["distinct_buckets"].as_u64().unwrap()
    );
    // Every split holds all rows once.
    let mut seen: Vec<u64> = ["train", "valid", "test"].iter().flat_map(|s| row_ids(&out, s)).collect();
    seen.sort();
    assert_eq!(seen, (0..48).collect::<Vec<u64>>());
}

#[test]
fn pipeline_is_fitted_on_train_rows_only() {
    let fx = Fixture::new();
    fx.ingest(&[]).unwrap();
    let out = fx.path("out");
    let pipeline = FeaturePipeline::load(&out.join("features.json")).unwrap();
    let records = csv_records(&fx.csv());
    let train_rows: Vec<usize> = row_ids(&out, "train").into_iter().map(|r| r as usize).collect();
    // price: fill with the train mean of the raw values, log1p, then the mean over train rows.
    let raw: Vec<Option<f64>> =
        train_rows.iter().map(|&r| records[r]["price"].as_str().unwrap().parse::<f64>().ok()).collect();
    let present: Vec<f64> = raw.iter().flatten().copied().collect();
    let fill = present.iter().sum::<f64>() / present.len() as f64;
    let logged: Vec<f64> = raw.iter().map(|x| x.unwrap_or(fill).max(0.0).ln_1p()).collect();
    let mean = logged.iter().sum::<f64>() / logged.len() as f64;
    let Transform::Numeric { numeric, scale: Scale::Standardize { mean: fitted_mean, .. } } =
        pipeline.feature("price").unwrap().transform
    else {
        panic!("price should be standardized")
    };
    assert!((numeric.fill - fill).abs() < 1e-9 && (fitted_mean - mean).abs() < 1e-9);

    // country: min_count 2 over train only, values trimmed, "NA" null.
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for &r in &train_rows {
        let c = records[r]["country"].as_str().unwrap().trim();
        if c != "NA" && !c.is_empty() {
            *counts.entry(c.to_owned()).or_default() += 1;
        }
    }
    let mut want: Vec<(String, usize)> = counts.into_iter().filter(|(_, n)| *n >= 2).collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let want: Vec<String> = want.into_iter().map(|(k, _)| k).collect();
    assert_eq!(pipeline.vocabularies["country"], want);
    // device: max_size 2.
    assert_eq!(pipeline.vocabularies["device"].len(), 2);
    // items: one vocabulary shared by `item` and `tags`.
    assert!(pipeline.vocabularies.contains_key("items") && !pipeline.vocabularies.contains_key("tags"));
}

#[test]
fn ingest_is_deterministic_and_refuses_to_overwrite_without_force() {
    let fx = Fixture::new();
    fx.ingest(&[]).unwrap();
    let files = ["manifest.json", "train/part-00000.arrow", "valid/part-00000.arrow", "test/part-00000.arrow"];
    let read_all = || files.map(|f| std::fs::read(fx.path("out").join(f)).unwrap());
    let first = read_all();
    let err = mtrec_schema::error_chain(&fx.ingest(&[]).unwrap_err());
    assert!(err.contains("already exists"), "{err}");
    mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
        force: true,
        ..mtrec_ingest::IngestOptions::new(&fx.path("interactions.json"), &fx.path("out"))
    })
    .unwrap();
    assert!(first == read_all(), "the same input gives the same bytes");
}

#[test]
fn gzip_csv_reads_like_plain_csv() {
    let fx = Fixture::new();
    let gz = fx.path("interactions.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, fx.csv().as_bytes()).unwrap();
    enc.finish().unwrap();
    let a = fx.ingest(&[gz]).unwrap();
    let b = mtrec_ingest::ingest(&mtrec_ingest::IngestOptions::new(&fx.path("interactions.json"), &fx.path("out2")))
        .unwrap();
    assert_eq!(a.pipeline, b.pipeline);
}

#[test]
fn time_and_user_splits() {
    let fx = Fixture::new();
    let mut schema = fx.schema();
    // Row r has ts = 1767225600 + r * 3600: rows 0..30 train, 30..40 valid, 40..48 test.
    schema["split"] = serde_json::json!({"method": "time", "valid_from": 1767225600 + 30 * 3600, "test_from": "2026-01-02T16:00:00Z"});
    fx.set_schema(&schema);
    let r = fx.ingest(&[]).unwrap().report.rows;
    assert_eq!((r.train, r.valid, r.test), (30, 10, 8));

    schema["split"] =
        serde_json::json!({"method": "user", "fractions": {"train": 0.5, "valid": 0.25, "test": 0.25}, "seed": 2});
    fx.set_schema(&schema);
    std::fs::remove_dir_all(fx.path("out")).unwrap();
    fx.ingest(&[]).unwrap();
    let users = |s: &str| -> std::collections::BTreeSet<String> {
        read_split(&fx.path("out"), s)
            .column(columns::USER_ID)
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|v| v.unwrap().to_owned())
            .collect()
    };
    let (train, valid, test) = (users("train"), users("valid"), users("test"));
    assert!(train.is_disjoint(&valid) && train.is_disjoint(&test) && valid.is_disjoint(&test));
    assert_eq!(train.len() + valid.len() + test.len(), 9);
}

/// The shipped Census sample through the shipped schema (relative source path, gzip, no
/// header, `, ` separators, `?` nulls).
#[test]
fn census_sample_ingests_with_the_shipped_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/census-income.json");
    let out = dir.path().join("census");
    let ingested = mtrec_ingest::ingest(&mtrec_ingest::IngestOptions::new(&schema, &out)).unwrap();
    let r = &ingested.report;
    assert_eq!(r.rows.train + r.rows.valid + r.rows.test, 3000);
    assert_eq!(r.features.len(), 39);
    // The sample holds 185 incomes over 50K and 1,302 never-married people (counted with
    // Python when it was drawn).
    let positives = |t: usize| -> f64 {
        let task = &r.tasks[t];
        let n = |rows: usize, rate: f64, mean: Option<f64>| rows as f64 * rate * mean.unwrap();
        n(r.rows.train, task.labeled_rate.train, task.label_mean.train)
            + n(r.rows.valid, task.labeled_rate.valid, task.label_mean.valid)
            + n(r.rows.test, task.labeled_rate.test, task.label_mean.test)
    };
    assert!((positives(0) - 185.0).abs() < 1e-6, "{}", positives(0));
    assert!((positives(1) - 1302.0).abs() < 1e-6, "{}", positives(1));
    let pipeline = &ingested.pipeline;
    assert!(pipeline.feature("marital_stat").is_none() && pipeline.feature("income").is_none());
    assert!(pipeline.vocabularies["sex"].iter().any(|v| v == "Female"), "values are trimmed");
}

/// The full official test file, when this machine has it: fetched by
/// `datasets/census-income/download.sh`, or in the datasets folder beside the repository.
#[test]
fn census_full_file_when_present() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let places = [
        root.join("datasets/census-income/census-income.test.gz"),
        root.join("../shared/datasets/census-income-kdd/census-income.test.gz"),
    ];
    let Some(full) = places.iter().find(|p| p.exists()) else {
        eprintln!("skipped: the official Census-Income test file is not present");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/census-income.json");
    let ingested = mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
        input: vec![full.to_string_lossy().into_owned()],
        ..mtrec_ingest::IngestOptions::new(&schema, &dir.path().join("census"))
    })
    .unwrap();
    let r = &ingested.report;
    assert_eq!(r.rows.train + r.rows.valid + r.rows.test, 99_762);
    // 60/20/20 within sampling noise.
    assert!((r.rows.train as f64 / 99_762.0 - 0.6).abs() < 0.01, "{:?}", r.rows);
    // The .names file: 6.20% over 50K; the dataset README: 43,143 never married.
    assert!((r.tasks[0].label_mean.train.unwrap() - 0.062).abs() < 0.005);
    assert!((r.tasks[1].label_mean.train.unwrap() - 43_143.0 / 99_762.0).abs() < 0.01);
}

#[test]
fn encoded_splits_read_back_into_columns() {
    let fx = Fixture::new();
    let ingested = fx.ingest(&[]).unwrap();
    let out = fx.path("out");
    let pipeline = mtrec_ingest::encoded::load_pipeline(&out).unwrap();
    let ds = mtrec_ingest::encoded::load_split(&out, mtrec_schema::Split::Valid, &pipeline).unwrap();
    assert_eq!(ds.rows, ingested.report.rows.valid);
    assert_eq!(ds.features.len(), pipeline.features.len());
    let tags = pipeline.features.iter().position(|f| f.name == "tags").unwrap();
    let mtrec_schema::FeatureColumn::Lists { offsets, .. } = &ds.features[tags] else { panic!("tags is a list") };
    assert_eq!(offsets.len(), ds.rows + 1);
    assert_eq!(ds.user_ids.as_ref().unwrap().len(), ds.rows);

    // A pipeline whose table is smaller than the data's ids is refused, not indexed out of range.
    let mut small = pipeline.clone();
    small.vocabularies.get_mut("items").unwrap().truncate(1);
    let err = mtrec_schema::error_chain(
        &mtrec_ingest::encoded::load_split(&out, mtrec_schema::Split::Train, &small).unwrap_err(),
    );
    assert!(err.contains("is outside its table of 3 ids"), "{err}");
}

#[test]
fn files_split_reads_one_set_of_files_per_split() {
    let fx = Fixture::new();
    let text = fx.csv();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_owned();
    let rows: Vec<&str> = lines.collect();
    // Rows 0..30 train (in two files, by glob), 30..40 valid, 40..48 test.
    let write =
        |name: &str, part: &[&str]| std::fs::write(fx.path(name), format!("{header}\n{}\n", part.join("\n"))).unwrap();
    write("train-a.csv", &rows[..20]);
    write("train-b.csv", &rows[20..30]);
    write("valid.csv", &rows[30..40]);
    write("test.csv", &rows[40..]);
    let mut schema = fx.schema();
    schema["source"]["path"] = serde_json::Value::Null;
    schema["split"] =
        serde_json::json!({"method": "files", "train": "train-*.csv", "valid": "valid.csv", "test": ["test.csv"]});
    fx.set_schema(&schema);
    let r = fx.ingest(&[]).unwrap().report;
    assert_eq!((r.rows.train, r.rows.valid, r.rows.test), (30, 10, 8));
    assert_eq!(r.sources.len(), 4);
    // Rows keep their position across the concatenated files.
    let test_rows = row_ids(&fx.path("out"), "test");
    assert_eq!(test_rows, (40..48).collect::<Vec<u64>>());
    // --input cannot replace per-split files.
    std::fs::remove_dir_all(fx.path("out")).unwrap();
    let err = fx.ingest_err(&[fx.path("test.csv")]);
    assert!(err.contains("split.method: --input cannot replace the per-split files"), "{err}");
}
