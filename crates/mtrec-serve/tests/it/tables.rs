//! Feature tables: features missing from a request are looked up by id; features in the
//! request win; unknown ids are warned about and defaulted.

use polars::prelude::*;

use crate::common::{config, fixture, pair_record, post_json, state, state_with};
use mtrec_serve::TablePaths;

/// One row per user (the first time the user appears) with every user-side column, as Parquet;
/// and the same for items as CSV (all text), so both readers are exercised.
fn write_tables() -> TablePaths {
    // Once for all tests: a test that found a file another one was still writing would read
    // half a table.
    static TABLES: std::sync::OnceLock<TablePaths> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| crate::common::off_runtime(write_tables_here)).clone()
}

fn write_tables_here() -> TablePaths {
    let fx = fixture();
    let model = state().model().unwrap();
    let features = &model.encoder.pipeline().features;
    let columns = |side: mtrec_schema::Side| -> Vec<String> {
        let mut c: Vec<String> = features.iter().filter(|f| f.side == side).map(|f| f.column.clone()).collect();
        c.dedup();
        c
    };
    let first_rows = |id: &str, cols: Vec<String>| -> DataFrame {
        let ids = fx.raw.column(id).unwrap().cast(&DataType::String).unwrap();
        let mut seen = std::collections::HashSet::new();
        let first: Vec<IdxSize> = ids
            .str()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, v)| seen.insert(v.map(str::to_owned)))
            .map(|(r, _)| r as IdxSize)
            .collect();
        fx.raw.select(cols.iter().map(String::as_str)).unwrap().take(&IdxCa::from_vec("idx".into(), first)).unwrap()
    };
    let user_path = fx.root.join("users.parquet");
    let mut users = first_rows("user_id", columns(mtrec_schema::Side::User));
    ParquetWriter::new(std::fs::File::create(&user_path).unwrap()).finish(&mut users).unwrap();
    let item_path = fx.root.join("items.csv");
    let mut items = first_rows("item_id", columns(mtrec_schema::Side::Item));
    CsvWriter::new(std::fs::File::create(&item_path).unwrap()).finish(&mut items).unwrap();
    TablePaths { user: Some(user_path), item: Some(item_path) }
}

#[tokio::test]
async fn missing_features_come_from_the_tables_and_request_features_win() {
    let fx = fixture();
    let tables = write_tables();
    let with_tables = state_with(config(), tables);
    let plain = state();
    let model = plain.model().unwrap();
    // Row 0 of the log: its user's and item's first rows are row 0 itself.
    let full = pair_record(&model, &fx.raw, 0);
    let explicit = serde_json::json!({ "user": full["user"], "context": full["context"], "items": [full["item"]] });
    let by_id = serde_json::json!({
        "user": { "id": full["user"]["user_id"] },
        "context": full["context"],
        "items": [{ "id": full["item"]["item_id"] }],
    });
    let a = post_json(&plain, "/v1/score", &explicit).await.json();
    let b = post_json(&with_tables, "/v1/score", &by_id).await.json();
    assert_eq!(a["results"][0]["scores"], b["results"][0]["scores"]);
    assert_eq!(b["warnings"], serde_json::json!([]), "nothing was missing");

    // A feature in the request wins over the table's.
    let mut user = full["user"].clone();
    user["region"] = serde_json::json!("a region never seen");
    let explicit = serde_json::json!({ "user": user, "context": full["context"], "items": [full["item"]] });
    let overriding = serde_json::json!({
        "user": { "id": full["user"]["user_id"], "region": "a region never seen" },
        "context": full["context"],
        "items": [{ "id": full["item"]["item_id"] }],
    });
    let a = post_json(&plain, "/v1/score", &explicit).await.json();
    let b = post_json(&with_tables, "/v1/score", &overriding).await.json();
    assert_eq!(a["results"][0]["scores"], b["results"][0]["scores"]);
    assert_eq!(b["warnings"][0]["kind"], "out_of_vocabulary");
    assert_eq!(b["warnings"][0]["field"], "user.region");
}

#[tokio::test]
async fn unknown_ids_are_warned_and_defaulted() {
    let with_tables = state_with(config(), write_tables());
    let request =
        serde_json::json!({ "user": { "id": "nobody" }, "items": [{ "id": "nothing" }, { "id": "nothing either" }] });
    let answer = post_json(&with_tables, "/v1/score", &request).await;
    assert_eq!(answer.status, 200);
    let warnings = answer.json()["warnings"].clone();
    let find = |field: &str, kind: &str| {
        warnings.as_array().unwrap().iter().find(|w| w["field"] == field && w["kind"] == kind).cloned()
    };
    assert_eq!(find("user.id", "unknown_id").unwrap()["count"], 1);
    let items = find("items[].id", "unknown_id").unwrap();
    assert_eq!((items["count"].clone(), items["indices"].clone()), (serde_json::json!(2), serde_json::json!([0, 1])));
    assert!(find("items[].price", "missing").is_some());
    assert!(find("user.region", "missing").is_some());
}

#[test]
fn a_table_without_its_id_column_is_refused_with_the_file_named() {
    let fx = fixture();
    let path = fx.root.join("no-id.csv");
    std::fs::write(&path, "region,age_bucket\nx,y\n").unwrap();
    let err =
        mtrec_serve::ServingModel::load(&fx.bundle, &TablePaths { user: Some(path.clone()), item: None }).unwrap_err();
    let message = mtrec_schema::error_chain(&err);
    assert!(message.contains("no-id.csv") && message.contains("user_id"), "{message}");

    let path = fx.root.join("dup.csv");
    std::fs::write(&path, "user_id,region\nu1,x\nu1,y\n").unwrap();
    let err = mtrec_serve::ServingModel::load(&fx.bundle, &TablePaths { user: Some(path), item: None }).unwrap_err();
    let message = mtrec_schema::error_chain(&err);
    assert!(message.contains("row 2") && message.contains("repeats row 1"), "{message}");
}
