//! The same rows written as users write CSV (booleans as `True`/`False`, event times as
//! date-time text) and as a typed Parquet file (boolean and datetime columns) ingest to the same
//! encoded data.

use polars::prelude::*;

use crate::common::{read_split, Fixture};

/// The fixture's rows as a typed frame: `clicked` and `bought` booleans, `ts` a datetime,
/// numbers as numbers, cells trimmed, `NA` and empty cells as nulls (what the schema's CSV
/// options make of the text).
fn typed_frame(csv: &str) -> DataFrame {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let cells = |name: &str| -> Vec<Option<&str>> {
        let k = header.iter().position(|c| *c == name).unwrap();
        rows.iter().map(|r| Some(r[k].trim()).filter(|v| !v.is_empty() && *v != "NA")).collect()
    };
    let text = |name: &str| Column::new(name.into(), cells(name));
    let int = |name: &str| {
        Column::new(name.into(), cells(name).iter().map(|v| v.map(|v| v.parse::<i64>().unwrap())).collect::<Vec<_>>())
    };
    let float = |name: &str| {
        Column::new(name.into(), cells(name).iter().map(|v| v.map(|v| v.parse::<f64>().unwrap())).collect::<Vec<_>>())
    };
    let boolean =
        |name: &str| Column::new(name.into(), cells(name).iter().map(|v| v.map(|v| v == "1")).collect::<Vec<_>>());
    let millis: Vec<Option<i64>> = cells("ts").iter().map(|v| v.map(|v| v.parse::<i64>().unwrap() * 1000)).collect();
    let ts = Series::new("ts".into(), millis).cast(&DataType::Datetime(TimeUnit::Milliseconds, None)).unwrap();
    let columns = vec![
        text("user"),
        text("item"),
        ts.into(),
        int("age"),
        text("country"),
        float("price"),
        text("tags"),
        boolean("clicked"),
        boolean("bought"),
        int("stars"),
        text("segment"),
        text("device"),
    ];
    DataFrame::new(rows.len(), columns).unwrap()
}

/// The fixture's CSV as pandas or Spark would write the same frame.
fn as_users_write_it(csv: &str) -> String {
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    let k = |name: &str| header.split(',').position(|c| c == name).unwrap();
    let (ts, clicked, bought) = (k("ts"), k("clicked"), k("bought"));
    let mut out = vec![header.to_owned()];
    for (r, line) in lines.enumerate() {
        let mut cells: Vec<String> = line.split(',').map(str::to_owned).collect();
        let seconds: i64 = cells[ts].parse().unwrap();
        let time = chrono::DateTime::from_timestamp(seconds, 0).unwrap();
        cells[ts] = match r % 3 {
            0 => time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            1 => time.format("%Y-%m-%d %H:%M:%S").to_string(),
            _ => time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        };
        for c in [clicked, bought] {
            cells[c] = (if cells[c] == "1" { "True" } else { "False" }).to_owned();
        }
        out.push(cells.join(","));
    }
    out.join("\n") + "\n"
}

#[test]
fn csv_as_users_write_it_ingests_like_its_parquet_twin() {
    let csv = Fixture::new();
    let text = as_users_write_it(&csv.csv());
    assert!(text.contains(",True,") && text.contains("2026-01-01T00:00:00Z"), "{}", &text[..300]);
    csv.set_csv(&text);
    csv.ingest(&[]).unwrap();

    let parquet = Fixture::new();
    let mut frame = typed_frame(&parquet.csv());
    assert_eq!(frame.column("clicked").unwrap().dtype(), &DataType::Boolean);
    let path = parquet.path("interactions.parquet");
    ParquetWriter::new(std::fs::File::create(&path).unwrap()).finish(&mut frame).unwrap();
    parquet.ingest(&[path]).unwrap();

    for split in ["train", "valid", "test"] {
        let a = read_split(&csv.path("out"), split);
        let b = read_split(&parquet.path("out"), split);
        assert!(a.height() > 0, "{split}");
        assert_eq!(a.get_column_names(), b.get_column_names(), "{split}");
        for column in a.get_column_names() {
            let (x, y) = (a.column(column).unwrap(), b.column(column).unwrap());
            assert!(
                x.as_materialized_series().equals_missing(y.as_materialized_series()),
                "{split} {column}: {x:?} vs {y:?}"
            );
        }
    }
}
