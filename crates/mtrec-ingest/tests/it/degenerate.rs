//! Degenerate data: what ingestion does with columns and labels that carry little or nothing,
//! numbers a model cannot use, and splits that come out empty. Each case is a defined behaviour
//! with a warning in `ingest_report.json`, or an error that says why.

use mtrec_schema::{Encoder, FeaturePipeline, RecordWarningKind};

use crate::common::{read_split, Fixture};

/// The fixture CSV with every cell of `column` replaced by `value(row)` (0-based data row).
fn with_column(csv: &str, column: &str, value: impl Fn(usize) -> String) -> String {
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    let k = header.split(',').position(|c| c == column).unwrap_or_else(|| panic!("no column {column}"));
    let mut out = vec![header.to_owned()];
    for (r, line) in lines.enumerate() {
        let mut cells: Vec<String> = line.split(',').map(str::to_owned).collect();
        cells[k] = value(r);
        out.push(cells.join(","));
    }
    out.join("\n") + "\n"
}

fn warnings(fx: &Fixture) -> Vec<String> {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("out/ingest_report.json")).unwrap()).unwrap();
    report["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).collect()
}

fn feature_report(fx: &Fixture, name: &str) -> serde_json::Value {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("out/ingest_report.json")).unwrap()).unwrap();
    report["features"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap().clone()
}

fn encode_one(fx: &Fixture, field: &str, value: serde_json::Value) -> (f32, Vec<RecordWarningKind>) {
    let pipeline = FeaturePipeline::load(&fx.path("out/features.json")).unwrap();
    let f = pipeline.features.iter().position(|f| f.name == field).unwrap();
    let encoder = Encoder::new(pipeline);
    let record = serde_json::Map::from_iter([(field.to_owned(), value)]);
    let encoded = encoder.encode_record(&record).unwrap();
    let mtrec_schema::EncodedValue::Value(x) = encoded.values[f] else { panic!("{field} is numeric") };
    let kinds = encoded.warnings.iter().filter(|w| w.field == field).map(|w| w.kind).collect();
    (x, kinds)
}

/// A numeric column constant on train (the reproduction's user-side columns): its spread is
/// rounding residue, so it is shifted and not scaled; a value met later stays a small number.
#[test]
fn a_constant_numeric_column_is_shifted_not_scaled_and_reported() {
    let fx = Fixture::new();
    fx.set_csv(&with_column(&fx.csv(), "price", |_| "4.2".to_owned()));
    fx.ingest(&[]).unwrap();
    let price = feature_report(&fx, "price");
    let constant = price["constant_on_train"].as_f64().unwrap();
    assert!((constant - 5.2f64.ln()).abs() < 1e-12, "{price}");
    assert!(warnings(&fx).iter().any(|w| w.starts_with("feature \"price\": constant on the train split")));
    let train = read_split(&fx.path("out"), "train");
    assert!(train.column("price").unwrap().f32().unwrap().into_no_null_iter().all(|x| x.abs() < 1e-6));
    let (x, _) = encode_one(&fx, "price", serde_json::json!(4.2001));
    assert!(x.abs() < 1e-4 && x > 0.0, "a value near the constant stays near 0: {x}");
}

/// A column whose only non-null value is one number is a constant too (its fill is that value).
#[test]
fn a_single_non_null_value_is_a_constant() {
    let fx = Fixture::new();
    fx.set_csv(&with_column(&fx.csv(), "price", |r| if r % 4 == 0 { "9.5".to_owned() } else { "NA".to_owned() }));
    fx.ingest(&[]).unwrap();
    assert!(feature_report(&fx, "price")["constant_on_train"].is_number());
}

/// Infinite numbers and numbers beyond f32 are read as null (filled), counted per split and
/// warned about, at ingestion and at serving alike.
#[test]
fn non_finite_numbers_are_read_as_null_and_counted() {
    let fx = Fixture::new();
    let odd = ["inf", "-inf", "1e300", "-1e39"];
    fx.set_csv(&with_column(&fx.csv(), "price", |r| {
        odd.get(r).map_or_else(|| format!("{}.5", r % 7 + 1), |s| (*s).to_owned())
    }));
    fx.ingest(&[]).unwrap();
    let price = feature_report(&fx, "price");
    let n = &price["non_finite"];
    let total: u64 = ["train", "valid", "test"].iter().map(|s| n[s].as_u64().unwrap()).sum();
    assert_eq!(total, 4, "{price}");
    assert!(
        warnings(&fx).iter().any(|w| w.starts_with("feature \"price\": 4 number(s) infinite")),
        "{:?}",
        warnings(&fx)
    );
    let (filled, null_kinds) = encode_one(&fx, "price", serde_json::Value::Null);
    for value in [serde_json::json!("inf"), serde_json::json!(1e300), serde_json::json!("-Infinity")] {
        let (x, kinds) = encode_one(&fx, "price", value.clone());
        assert_eq!(x.to_bits(), filled.to_bits(), "{value} is encoded as a null");
        // `price` and its buckets (`price_q`) read the same field: each warns.
        assert!(!kinds.is_empty() && kinds.iter().all(|k| *k == RecordWarningKind::NonFinite), "{value}: {kinds:?}");
    }
    // NaN is how pandas writes a missing number: exactly a null.
    let (x, kinds) = encode_one(&fx, "price", serde_json::json!("NaN"));
    assert_eq!((x.to_bits(), kinds), (filled.to_bits(), null_kinds));
}

#[test]
fn a_categorical_column_of_one_value_or_of_unique_values_is_reported() {
    let fx = Fixture::new();
    let csv = with_column(&fx.csv(), "country", |_| "fr".to_owned());
    fx.set_csv(&with_column(&csv, "device", |r| format!("d{r}")));
    fx.ingest(&[]).unwrap();
    let w = warnings(&fx);
    assert!(
        w.iter().any(|w| w == "feature \"country\": one category on the train split: it carries no information"),
        "{w:?}"
    );
    let truncated = w.iter().find(|w| w.starts_with("vocabulary \"device\"")).unwrap_or_else(|| panic!("{w:?}"));
    assert!(truncated.contains("the 2 most frequent of") && truncated.contains("out-of-vocabulary"), "{truncated}");
    let device = feature_report(&fx, "device");
    assert!(device["oov_rate"]["valid"].as_f64().unwrap() == 1.0, "unseen devices are OOV: {device}");
}

#[test]
fn labels_of_one_class_or_none_are_reported() {
    let fx = Fixture::new();
    // No click at all: `click` is all negative, and `buy` (masked to clicked rows) has no label.
    fx.set_csv(&with_column(&fx.csv(), "clicked", |_| "0".to_owned()));
    fx.ingest(&[]).unwrap();
    let w = warnings(&fx);
    assert!(w.iter().any(|w| w.starts_with("task \"click\": every labeled train row is negative")), "{w:?}");
    assert!(w.iter().any(|w| w.starts_with("task \"buy\": no labeled row in the train split")), "{w:?}");
    assert!(
        w.iter().any(|w| w == "task \"buy\": no labeled row in the test split: its metrics there are undefined"),
        "{w:?}"
    );
}

/// Event times as logs write them, against date cut-offs.
fn time_split(fx: &Fixture, valid_from: &str, test_from: &str, unit: Option<&str>) {
    let mut schema = fx.schema();
    schema["split"] = serde_json::json!({"method": "time", "valid_from": valid_from, "test_from": test_from});
    if let Some(unit) = unit {
        schema["ids"]["timestamp_unit"] = serde_json::json!(unit);
    }
    fx.set_schema(&schema);
}

#[test]
fn time_splits_read_date_times_and_say_why_a_split_is_empty() {
    // The fixture's rows are an hour apart from 2026-01-01T00:00:00Z.
    let fx = Fixture::new();
    time_split(&fx, "2026-01-02T12:00:00Z", "2026-01-03", None);
    let forms = ["2026-01-01T{h}:00:00Z", "2026-01-01 {h}:00:00", "2026-01-01T{h}:00:00.000+00:00"];
    let hours = |r: usize| (r / 24 + 1, r % 24);
    fx.set_csv(&with_column(&fx.csv(), "ts", |r| {
        let (day, hour) = hours(r);
        forms[r % 3].replace("2026-01-01", &format!("2026-01-{day:02}")).replace("{h}", &format!("{hour:02}"))
    }));
    let report = fx.ingest(&[]).unwrap().report;
    // 48 rows: days 1 and 2 until 12:00 are train (36), the rest of day 2 valid (12).
    assert_eq!((report.rows.train, report.rows.valid, report.rows.test), (36, 12, 0));
    let w = report.warnings.iter().find(|w| w.starts_with("the time split leaves the test split empty")).unwrap();
    assert!(w.contains("timestamps run from 2026-01-01T00:00:00Z to 2026-01-02T23:00:00Z"), "{w}");
    assert!(w.contains("test_from 2026-01-03T00:00:00Z"), "{w}");

    // Epoch milliseconds read as seconds are thousands of years ahead: the train split is
    // empty, and the error says why and what to set.
    let fx = Fixture::new();
    time_split(&fx, "2026-01-01T12:00:00Z", "2026-01-01T18:00:00Z", None);
    fx.set_csv(&with_column(&fx.csv(), "ts", |r| format!("{}", (1_767_225_600 + 3600 * r as i64) * 1000)));
    let err = fx.ingest_err(&[]);
    assert!(
        err.contains("the time split leaves the train split empty") && err.contains("set ids.timestamp_unit"),
        "{err}"
    );
    // With the unit, the same file splits by hour: 12 train, 6 valid, the rest test.
    time_split(&fx, "2026-01-01T12:00:00Z", "2026-01-01T18:00:00Z", Some("milliseconds"));
    let report = fx.ingest(&[]).unwrap().report;
    assert_eq!((report.rows.train, report.rows.valid, report.rows.test), (12, 6, 30));
    let ts = read_split(&fx.path("out"), "train");
    let first = ts.column(mtrec_schema::columns::TIMESTAMP).unwrap().f64().unwrap().get(0).unwrap();
    assert_eq!(first, 1_767_225_600.0, "encoded timestamps are seconds");
}
