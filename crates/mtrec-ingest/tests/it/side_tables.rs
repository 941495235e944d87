//! Side tables: a log of ids joined with a user table and an item table encodes like the log
//! that carries every column; an id the table lacks reads as nulls and is counted; a key that
//! repeats or is null is an error naming it.

use std::path::{Path, PathBuf};

use mtrec_ingest::{ingest, IngestError, IngestOptions};
use polars::prelude::*;

use crate::common::read_split;

const USER_COLUMNS: [&str; 5] = ["user_id", "age_bucket", "region", "activity", "account_age_days"];
const ITEM_COLUMNS: [&str; 3] = ["item_id", "category", "price"];

/// The synthetic log written twice: whole, and as a log without the user and item attribute
/// columns beside a user table (Parquet) and an item table (CSV, keyed by `sku`).
struct Tables {
    dir: tempfile::TempDir,
    raw: DataFrame,
}

impl Tables {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = mtrec_synth::SyntheticConfig { users: 80, items: 50, rows: 3000, seed: 4, ..Default::default() };
        let mut raw = mtrec_synth::generate(&config).unwrap();
        mtrec_synth::write_parquet(&mut raw, &dir.path().join("full.parquet")).unwrap();
        let attributes: Vec<&str> = USER_COLUMNS[1..].iter().chain(&ITEM_COLUMNS[1..]).copied().collect();
        let mut log = raw.drop_many(attributes);
        mtrec_synth::write_parquet(&mut log, &dir.path().join("log.parquet")).unwrap();
        let tables = Tables { dir, raw };
        let mut users = tables.first_rows("user_id", &USER_COLUMNS);
        tables.write_parquet(&mut users, "users.parquet");
        let mut items = tables.first_rows("item_id", &ITEM_COLUMNS);
        items.rename("item_id", "sku".into()).unwrap();
        CsvWriter::new(std::fs::File::create(tables.path("items.csv")).unwrap()).finish(&mut items).unwrap();
        tables
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// One row per id: the columns of its first row in the log.
    fn first_rows(&self, id: &str, columns: &[&str]) -> DataFrame {
        let ids = self.raw.column(id).unwrap().str().unwrap().clone();
        let mut seen = std::collections::HashSet::new();
        let first: Vec<IdxSize> = ids
            .iter()
            .enumerate()
            .filter(|(_, v)| seen.insert(v.map(str::to_owned)))
            .map(|(r, _)| r as IdxSize)
            .collect();
        self.raw.select(columns.iter().copied()).unwrap().take(&IdxCa::from_vec("idx".into(), first)).unwrap()
    }

    fn write_parquet(&self, df: &mut DataFrame, name: &str) {
        mtrec_synth::write_parquet(df, &self.path(name)).unwrap();
    }

    /// The synthetic schema, with the tables when `tables`, written beside the data.
    fn schema(&self, tables: bool) -> PathBuf {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic.json"));
        let mut schema: serde_json::Value = serde_json::from_str(&text.unwrap()).unwrap();
        if tables {
            schema["tables"] = serde_json::json!({
                "user": {"path": "users.parquet"},
                "item": {"path": "items.csv", "key": "sku"}
            });
        }
        let path = self.path(if tables { "with-tables.json" } else { "plain.json" });
        std::fs::write(&path, schema.to_string()).unwrap();
        path
    }

    fn ingest(&self, log: &str, tables: bool, out: &str) -> Result<mtrec_ingest::Ingested, IngestError> {
        ingest(&IngestOptions {
            input: vec![self.path(log).to_string_lossy().into_owned()],
            ..IngestOptions::new(&self.schema(tables), &self.path(out))
        })
    }
}

#[test]
fn a_log_of_ids_joined_with_its_tables_encodes_like_the_whole_log() {
    let t = Tables::new();
    let whole = t.ingest("full.parquet", false, "whole").unwrap();
    let joined = t.ingest("log.parquet", true, "joined").unwrap();
    // The schemas differ (one declares tables), the fitted pipelines do not.
    let whole_pipeline =
        mtrec_schema::FeaturePipeline { schema_hash: joined.pipeline.schema_hash.clone(), ..whole.pipeline };
    assert_eq!(whole_pipeline.difference(&joined.pipeline), None, "the same pipeline");
    assert_eq!(joined.pipeline.tables.len(), 2, "the tables are recorded for serving");
    assert!(joined.pipeline.tables.iter().all(|t| t.path.is_absolute()));
    let tables = &joined.report.tables;
    assert_eq!(tables[0].columns, ["age_bucket", "region", "activity", "account_age_days"]);
    assert_eq!(tables[1].columns, ["category", "price"]);
    assert!(tables.iter().all(|t| t.missing_ids.train + t.missing_ids.valid + t.missing_ids.test == 0));
    for split in ["train", "valid", "test"] {
        let (a, b) = (read_split(&t.path("whole"), split), read_split(&t.path("joined"), split));
        assert!(a.equals_missing(&b), "{split}: the same encoded rows");
    }
}

#[test]
fn an_id_the_table_lacks_reads_as_nulls_and_is_counted() {
    let t = Tables::new();
    let users = t.first_rows("user_id", &USER_COLUMNS);
    let absent = users.column("user_id").unwrap().str().unwrap().get(0).unwrap().to_owned();
    let mut fewer = users.slice(1, users.height() - 1);
    t.write_parquet(&mut fewer, "users.parquet");
    let joined = t.ingest("log.parquet", true, "joined").unwrap();
    let rows_of_absent =
        t.raw.column("user_id").unwrap().str().unwrap().iter().filter(|v| *v == Some(absent.as_str())).count();
    let m = &joined.report.tables[0].missing_ids;
    assert_eq!((m.train + m.valid + m.test) as usize, rows_of_absent);
    assert!(joined.report.warnings.iter().any(|w| w.contains("users.parquet") && w.contains("have an id it lacks")));
    // Those rows' user features are nulls: region's null id (1).
    let train = read_split(&t.path("joined"), "train");
    let (ids, region) =
        (train.column("id.user").unwrap().str().unwrap(), train.column("region").unwrap().u32().unwrap());
    for (id, region) in ids.iter().zip(region.iter()) {
        if id == Some(absent.as_str()) {
            assert_eq!(region, Some(mtrec_schema::NULL_ID));
        }
    }
}

#[test]
fn a_key_that_repeats_or_is_null_is_an_error_naming_it() {
    let t = Tables::new();
    let users = t.first_rows("user_id", &USER_COLUMNS);
    let mut twice = users.vstack(&users.slice(0, 1)).unwrap();
    t.write_parquet(&mut twice, "users.parquet");
    let err = mtrec_schema::error_chain(&t.ingest("log.parquet", true, "joined").unwrap_err());
    let first = users.column("user_id").unwrap().str().unwrap().get(0).unwrap().to_owned();
    assert!(err.contains("users.parquet") && err.contains(&format!("key \"{first}\" repeats row 1")), "{err}");
    assert!(!t.path("joined").exists());

    let mut with_null = users.clone();
    let mut ids: Vec<Option<String>> =
        users.column("user_id").unwrap().str().unwrap().iter().map(|v| v.map(str::to_owned)).collect();
    ids[3] = None;
    with_null.replace("user_id", Series::new("user_id".into(), ids).into()).unwrap();
    t.write_parquet(&mut with_null, "users.parquet");
    let err = mtrec_schema::error_chain(&t.ingest("log.parquet", true, "joined").unwrap_err());
    assert!(err.contains("users.parquet: row 4, column \"user_id\": the key is null"), "{err}");

    // A key column the table does not have is a schema error with its path.
    let mut good = users.clone();
    t.write_parquet(&mut good, "users.parquet");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.schema(true)).unwrap()).unwrap();
    schema["tables"]["item"]["key"] = serde_json::json!("product");
    std::fs::write(t.path("with-tables.json"), schema.to_string()).unwrap();
    let err = mtrec_schema::error_chain(
        &ingest(&IngestOptions {
            input: vec![t.path("log.parquet").to_string_lossy().into_owned()],
            ..IngestOptions::new(&t.path("with-tables.json"), &t.path("joined"))
        })
        .unwrap_err(),
    );
    assert!(err.contains("tables.item.key: column \"product\" not in"), "{err}");
}
