//! The Polars path and the one-record JSON path must encode every row identically: the
//! serving side depends on it.

use mtrec_schema::{columns, EncodedValue, Encoder, FeaturePipeline};
use polars::prelude::*;

use crate::common::{csv_records, read_split, Fixture};

/// Encodes `records[id.row]` with `features.json` for every row of every split and compares
/// with the ingested columns; returns the number of rows checked.
fn assert_parity(out: &std::path::Path, records: &[serde_json::Map<String, serde_json::Value>]) -> usize {
    let pipeline = FeaturePipeline::load(&out.join("features.json")).unwrap();
    let encoder = Encoder::new(pipeline.clone());
    let mut checked = 0;
    for split in ["train", "valid", "test"] {
        let df = read_split(out, split);
        let rows = df.column(columns::ROW).unwrap().u64().unwrap().clone();
        for i in 0..df.height() {
            let record = &records[rows.get(i).unwrap() as usize];
            let encoded = encoder.encode_record(record).unwrap();
            for (f, feature) in pipeline.features.iter().enumerate() {
                let column = df.column(&feature.name).unwrap().as_materialized_series();
                let from_polars = match &encoded.values[f] {
                    EncodedValue::Id(_) => EncodedValue::Id(column.u32().unwrap().get(i).unwrap()),
                    EncodedValue::Ids(_) => {
                        let s = column.list().unwrap().get_as_series(i).unwrap();
                        EncodedValue::Ids(s.u32().unwrap().into_no_null_iter().collect())
                    }
                    EncodedValue::Value(_) => EncodedValue::Value(column.f32().unwrap().get(i).unwrap()),
                };
                // Bit-identical, not approximately equal: both paths run the same transform.
                let same = match (&encoded.values[f], &from_polars) {
                    (EncodedValue::Value(a), EncodedValue::Value(b)) => a.to_bits() == b.to_bits(),
                    (a, b) => a == b,
                };
                assert!(
                    same,
                    "{split} row {i}, feature {}: json {:?} vs polars {:?}",
                    feature.name, encoded.values[f], from_polars
                );
            }
            for (t, task) in pipeline.tasks.iter().enumerate() {
                let (label, mask) = encoder.record_label(t, record).unwrap();
                let want_label = df.column(&columns::label(&task.name)).unwrap().f32().unwrap().get(i).unwrap();
                let want_mask = df.column(&columns::mask(&task.name)).unwrap().u8().unwrap().get(i).unwrap();
                assert_eq!(
                    (label.to_bits(), mask),
                    (want_label.to_bits(), want_mask),
                    "{split} row {i}, task {}",
                    task.name
                );
            }
            checked += 1;
        }
    }
    checked
}

/// Every row of a typed frame as a JSON record typed like a real request: numbers as numbers,
/// text as strings, nulls as null.
fn typed_records(df: &DataFrame) -> Vec<serde_json::Map<String, serde_json::Value>> {
    (0..df.height())
        .map(|i| {
            df.columns()
                .iter()
                .map(|c| {
                    let v = match c.get(i).unwrap() {
                        AnyValue::Null => serde_json::Value::Null,
                        AnyValue::Int64(x) => serde_json::json!(x),
                        AnyValue::Int32(x) => serde_json::json!(x),
                        AnyValue::Float64(x) => serde_json::json!(x),
                        AnyValue::String(s) => serde_json::json!(s),
                        AnyValue::StringOwned(s) => serde_json::json!(s.as_str()),
                        other => panic!("unexpected {other:?} in column {}", c.name()),
                    };
                    (c.name().to_string(), v)
                })
                .collect()
        })
        .collect()
}

#[test]
fn csv_rows_encode_identically_from_json_strings() {
    let fx = Fixture::new();
    fx.ingest(&[]).unwrap();
    let records = csv_records(&fx.csv());
    assert_eq!(assert_parity(&fx.path("out"), &records), records.len());
}

/// JSON scalars typed like a real request (numbers as numbers) against a typed Parquet source.
#[test]
fn parquet_rows_encode_identically_from_typed_json() {
    let fx = Fixture::new();
    let mut df = CsvReadOptions::default()
        .with_infer_schema_length(Some(100))
        .try_into_reader_with_file_path(Some(fx.path("interactions.csv")))
        .unwrap()
        .finish()
        .unwrap();
    // `country` has "NA" and padded texts; keep it as text, the rest typed.
    assert_eq!(df.column("price").unwrap().dtype(), &DataType::String, "price holds NA texts");
    let price = df
        .column("price")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.and_then(|s| s.parse::<f64>().ok()))
        .collect::<Float64Chunked>();
    df.with_column(price.with_name("price".into()).into_series().into()).unwrap();
    let parquet = fx.path("interactions.parquet");
    ParquetWriter::new(std::fs::File::create(&parquet).unwrap()).finish(&mut df).unwrap();

    let mut schema = fx.schema();
    schema["source"] = serde_json::json!({"format": "parquet"});
    fx.set_schema(&schema);
    fx.ingest(&[parquet]).unwrap();

    let records = typed_records(&df);
    assert!(records[0]["clicked"].is_number() && records[0]["user"].is_string());
    assert_eq!(assert_parity(&fx.path("out"), &records), records.len());
}

/// The synthetic dataset: a multi-categorical history sharing the item vocabulary, quantile
/// buckets, passthrough columns; and with ESMM's product task.
#[test]
fn synthetic_rows_encode_identically() {
    let fx = Fixture::new();
    let cfg = mtrec_synth::SyntheticConfig { users: 60, items: 40, rows: 1_500, ..Default::default() };
    let mut df = mtrec_synth::generate(&cfg).unwrap();
    let parquet = fx.path("synthetic.parquet");
    mtrec_synth::write_parquet(&mut df, &parquet).unwrap();
    let records = typed_records(&df);
    for schema in ["synthetic.json", "synthetic-esmm.json"] {
        let schema_path = fx.path(schema);
        let repo_schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        std::fs::copy(repo_schemas.join(schema), &schema_path).unwrap();
        let out = fx.path(&format!("out-{schema}"));
        mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
            input: vec![parquet.to_string_lossy().into_owned()],
            ..mtrec_ingest::IngestOptions::new(&schema_path, &out)
        })
        .unwrap();
        assert_eq!(assert_parity(&out, &records), records.len(), "{schema}");
    }
}

/// A product task (ESMM's click-and-buy) is labeled on every impression: 0 without a click,
/// the purchase where clicked; rows where a clicked purchase is unknown stay unlabeled.
#[test]
fn a_product_task_is_labeled_from_its_factors() {
    let fx = Fixture::new();
    let mut schema = fx.schema();
    schema["tasks"]
        .as_array_mut()
        .unwrap()
        .insert(2, serde_json::json!({"name": "click_buy", "type": "binary", "product_of": ["click", "buy"]}));
    fx.set_schema(&schema);
    // One clicked row with an unknown purchase.
    let csv = fx.csv();
    let mut lines: Vec<String> = csv.lines().map(str::to_owned).collect();
    let clicked = lines.iter().position(|l| l.split(',').nth(7) == Some("1")).unwrap();
    let mut cells: Vec<&str> = lines[clicked].split(',').collect();
    cells[8] = "";
    lines[clicked] = cells.join(",");
    fx.set_csv(&(lines.join("\n") + "\n"));
    fx.ingest(&[]).unwrap();

    let records = csv_records(&fx.csv());
    let mut seen = std::collections::BTreeMap::new();
    for split in ["train", "valid", "test"] {
        let df = read_split(&fx.path("out"), split);
        let rows = df.column(columns::ROW).unwrap().u64().unwrap().clone();
        let label = df.column(&columns::label("click_buy")).unwrap().f32().unwrap().clone();
        let mask = df.column(&columns::mask("click_buy")).unwrap().u8().unwrap().clone();
        for i in 0..df.height() {
            let record = &records[rows.get(i).unwrap() as usize];
            let cell = |c: &str| record[c].as_str().unwrap().to_owned();
            let (case, want) = match (cell("clicked").as_str(), cell("bought").as_str()) {
                ("0", _) => ("no click", (0.0, 1)),
                ("1", "") => ("purchase unknown", (0.0, 0)),
                ("1", "1") => ("bought", (1.0, 1)),
                ("1", "0") => ("clicked only", (0.0, 1)),
                other => panic!("unexpected cells {other:?}"),
            };
            assert_eq!((label.get(i).unwrap(), mask.get(i).unwrap()), want, "{split} row {i}: {case}");
            *seen.entry(case).or_insert(0) += 1;
        }
    }
    // Every case occurs: no click, clicked and bought, clicked without buying, unknown.
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(assert_parity(&fx.path("out"), &records), records.len());
}
