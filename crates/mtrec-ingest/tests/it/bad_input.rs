//! Bad input: every case fails with a message naming the file, row, column or JSON path, and
//! leaves no output behind (checked by `Fixture::ingest_err`).

use polars::prelude::*;

use crate::common::Fixture;

/// Replaces the cell of `column` on 1-based data row `row`.
fn set_cell(fx: &Fixture, row: usize, column: &str, value: &str) {
    let text = fx.csv();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let c = lines[0].split(',').position(|h| h == column).unwrap();
    let mut cells: Vec<String> = lines[row].split(',').map(str::to_owned).collect();
    cells[c] = value.to_owned();
    lines[row] = cells.join(",");
    fx.set_csv(&(lines.join("\n") + "\n"));
}

#[test]
fn missing_column_names_the_schema_path_and_the_file() {
    let fx = Fixture::new();
    let mut schema = fx.schema();
    schema["features"][6]["column"] = serde_json::json!("prices");
    fx.set_schema(&schema);
    let err = fx.ingest_err(&[]);
    assert!(err.contains("features[6].column: column \"prices\" not in"), "{err}");
    assert!(err.contains("interactions.csv") && err.contains("available: user, item, ts"), "{err}");
}

#[test]
fn task_naming_a_missing_column() {
    let fx = Fixture::new();
    let mut schema = fx.schema();
    schema["tasks"][1]["label"]["column"] = serde_json::json!("clickedd");
    fx.set_schema(&schema);
    let err = fx.ingest_err(&[]);
    assert!(err.contains("tasks[1].label.column: column \"clickedd\" not in"), "{err}");
}

#[test]
fn wrong_dtype_in_a_typed_file() {
    let fx = Fixture::new();
    let mut df = df!("user" => ["u1", "u2"], "item" => ["i1", "i2"], "ts" => [1i64, 2], "age" => [30i64, 40],
        "country" => ["fr", "de"], "price" => ["cheap", "dear"], "tags" => ["i1", ""], "clicked" => [0i64, 1],
        "bought" => [0i64, 1], "stars" => [3i64, 4], "segment" => ["gold", "bronze"], "device" => ["ios", "web"])
    .unwrap();
    let parquet = fx.path("bad.parquet");
    ParquetWriter::new(std::fs::File::create(&parquet).unwrap()).finish(&mut df).unwrap();
    let err = fx.ingest_err(&[parquet]);
    assert!(err.contains("features[6].name: column \"price\" holds text, expected numbers"), "{err}");
}

#[test]
fn unparsable_number_names_row_and_column() {
    let fx = Fixture::new();
    set_cell(&fx, 17, "price", "12,5".replace(',', ".").as_str());
    set_cell(&fx, 23, "price", "abc");
    let err = fx.ingest_err(&[]);
    assert!(err.contains("interactions.csv: row 23, column \"price\": cannot parse \"abc\" as a number"), "{err}");
}

#[test]
fn empty_files() {
    let fx = Fixture::new();
    let empty = fx.path("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let err = fx.ingest_err(std::slice::from_ref(&empty));
    assert!(err.contains("empty.csv: the file has no data rows"), "{err}");
    std::fs::write(&empty, fx.csv().lines().next().unwrap().to_owned() + "\n").unwrap();
    let err = fx.ingest_err(&[empty]);
    assert!(err.contains("empty.csv: the file has no data rows"), "{err}");
}

#[test]
fn truncated_gzip() {
    let fx = Fixture::new();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, fx.csv().as_bytes()).unwrap();
    let bytes = enc.finish().unwrap();
    let gz = fx.path("cut.csv.gz");
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let err = fx.ingest_err(&[gz]);
    assert!(err.contains("cut.csv.gz: corrupt or truncated gzip data"), "{err}");
}

#[test]
fn unknown_format() {
    let fx = Fixture::new();
    let odd = fx.path("interactions.xlsx");
    std::fs::copy(fx.path("interactions.csv"), &odd).unwrap();
    let err = fx.ingest_err(&[odd]);
    assert!(err.contains("interactions.xlsx: unknown file format"), "{err}");
}

#[test]
fn label_value_outside_the_label_definition() {
    let fx = Fixture::new();
    set_cell(&fx, 31, "bought", "2");
    let err = fx.ingest_err(&[]);
    assert!(
        err.contains("row 31, column \"bought\": label value \"2\" is neither positive (\"1\") nor negative (\"0\")"),
        "{err}"
    );
    let fx = Fixture::new();
    set_cell(&fx, 5, "segment", "platinum");
    let err = fx.ingest_err(&[]);
    assert!(err.contains("row 5, column \"segment\": label value \"platinum\" is not in the label's map"), "{err}");
    let fx = Fixture::new();
    set_cell(&fx, 8, "clicked", "yes");
    let err = fx.ingest_err(&[]);
    assert!(err.contains("row 8, column \"clicked\": label value \"yes\" is not a number"), "{err}");
}

/// A label the model cannot represent (infinite, beyond f32) is refused where it is: it would
/// make every loss after it infinite or NaN.
#[test]
fn labels_that_are_not_finite_numbers() {
    for cell in ["inf", "-inf", "1e39"] {
        let fx = Fixture::new();
        set_cell(&fx, 12, "stars", cell);
        let err = fx.ingest_err(&[]);
        let expected =
            format!("row 12, column \"stars\": label value \"{cell}\" is not a finite number within f32's range");
        assert!(err.contains(&expected), "{err}");
    }
    // NaN is how pandas writes a missing value: a missing label, like a null cell.
    let labeled = |cell: &str| {
        let fx = Fixture::new();
        set_cell(&fx, 12, "stars", cell);
        let report = fx.ingest(&[]).unwrap().report;
        let stars = report.tasks.iter().find(|t| t.name == "stars").unwrap();
        [stars.labeled_rate.train, stars.labeled_rate.valid, stars.labeled_rate.test]
    };
    assert_eq!(labeled("NaN"), labeled("NA"));
    assert_ne!(labeled("NaN"), labeled("2"));
}

#[test]
fn all_null_feature() {
    let fx = Fixture::new();
    for row in 1..=48 {
        set_cell(&fx, row, "device", "NA");
    }
    let err = fx.ingest_err(&[]);
    assert!(err.contains("features[8] (device): column \"device\" is null in every train row"), "{err}");
}

#[test]
fn split_fractions_not_summing_to_one() {
    let fx = Fixture::new();
    let mut schema = fx.schema();
    schema["split"]["fractions"]["valid"] = serde_json::json!(0.3);
    fx.set_schema(&schema);
    let err = fx.ingest_err(&[]);
    assert!(err.contains("interactions.json: split.fractions: must sum to 1, got 1.1"), "{err}");
}

#[test]
fn duplicate_feature_names() {
    let fx = Fixture::new();
    let mut schema = fx.schema();
    schema["features"][3]["name"] = serde_json::json!("age");
    fx.set_schema(&schema);
    let err = fx.ingest_err(&[]);
    assert!(err.contains("features[3].name: duplicate feature name \"age\" (also features[1])"), "{err}");
}

#[test]
fn malformed_schema_json_names_the_path() {
    let fx = Fixture::new();
    let mut schema = fx.schema();
    schema["features"][2]["bucketize"]["boundaries"] = serde_json::json!("25,35");
    fx.set_schema(&schema);
    let err = fx.ingest_err(&[]);
    assert!(err.contains("features[2].bucketize.boundaries: invalid type: string"), "{err}");
}

#[test]
fn missing_input_file() {
    let fx = Fixture::new();
    let err = fx.ingest_err(&[fx.path("nope.csv")]);
    assert!(err.contains("nope.csv: no such file"), "{err}");
    let err = fx.ingest_err(&[fx.path("*.nothing")]);
    assert!(err.contains("*.nothing: no file matches"), "{err}");
}
