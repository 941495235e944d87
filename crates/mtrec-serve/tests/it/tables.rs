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

/// One row per id of column `id` of the log `raw` (the id's first row), with `columns`.
fn first_rows(raw: &DataFrame, id: &str, columns: &[impl AsRef<str>]) -> DataFrame {
    let ids = raw.column(id).unwrap().cast(&DataType::String).unwrap();
    let mut seen = std::collections::HashSet::new();
    let first: Vec<IdxSize> = ids
        .str()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, v)| seen.insert(v.map(str::to_owned)))
        .map(|(r, _)| r as IdxSize)
        .collect();
    raw.select(columns.iter().map(AsRef::as_ref)).unwrap().take(&IdxCa::from_vec("idx".into(), first)).unwrap()
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
    let user_path = fx.root.join("users.parquet");
    let mut users = first_rows(&fx.raw, "user_id", &columns(mtrec_schema::Side::User));
    ParquetWriter::new(std::fs::File::create(&user_path).unwrap()).finish(&mut users).unwrap();
    let item_path = fx.root.join("items.csv");
    let mut items = first_rows(&fx.raw, "item_id", &columns(mtrec_schema::Side::Item));
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

/// A bundle trained on data joined with side tables (declared in the schema) finds the same
/// tables when it serves, without flags: a request of ids scores like one of every feature.
#[tokio::test]
async fn the_side_tables_of_the_ingest_serve_without_flags() {
    let fx = fixture();
    let dir = crate::common::off_runtime(|| {
        let dir = fx.root.join("joined-data");
        std::fs::create_dir_all(&dir).unwrap();
        let user_columns = ["user_id", "age_bucket", "region", "activity", "account_age_days"];
        let item_columns = ["item_id", "category", "price"];
        let mut users = first_rows(&fx.raw, "user_id", &user_columns);
        mtrec_synth::write_parquet(&mut users, &dir.join("users.parquet")).unwrap();
        let mut items = first_rows(&fx.raw, "item_id", &item_columns);
        items.rename("item_id", "sku".into()).unwrap();
        mtrec_synth::write_parquet(&mut items, &dir.join("items.parquet")).unwrap();
        let attributes: Vec<&str> = user_columns[1..].iter().chain(&item_columns[1..]).copied().collect();
        let mut log = fx.raw.drop_many(attributes);
        mtrec_synth::write_parquet(&mut log, &dir.join("log.parquet")).unwrap();
        let mut schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(mtrec_testkit::synthetic_schema()).unwrap()).unwrap();
        schema["tables"] = serde_json::json!({
            "user": {"path": "users.parquet"}, "item": {"path": "items.parquet", "key": "sku"}
        });
        std::fs::write(dir.join("schema.json"), schema.to_string()).unwrap();
        mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
            input: vec![dir.join("log.parquet").to_string_lossy().into_owned()],
            ..mtrec_ingest::IngestOptions::new(&dir.join("schema.json"), &dir.join("ingest"))
        })
        .unwrap();
        let config = mtrec_model::ModelConfig::default();
        mtrec_testkit::untrained_bundle(&dir.join("ingest"), &dir.join("bundle"), &config, 3);
        dir
    });
    let config = mtrec_serve::ServeConfig { bundle: dir.join("bundle"), ..Default::default() };
    let state = state_with(config, TablePaths::default());
    let model = state.model().unwrap();
    let full = pair_record(&model, &fx.raw, 7);
    let explicit = serde_json::json!({ "user": full["user"], "context": full["context"], "items": [full["item"]] });
    // The user's recent items change with every event: the log has them, not the table.
    let by_id = serde_json::json!({
        "user": { "id": full["user"]["user_id"], "recent_items": full["user"]["recent_items"] },
        "context": full["context"],
        "items": [{ "id": full["item"]["item_id"] }],
    });
    let a = post_json(&state, "/v1/score", &explicit).await.json();
    let b = post_json(&state, "/v1/score", &by_id).await.json();
    assert_eq!(a["results"][0]["scores"], b["results"][0]["scores"]);
    assert_eq!(b["warnings"], serde_json::json!([]), "every feature came from the tables: {b}");

    // Moved away, the table is named with the flag that replaces it.
    std::fs::rename(dir.join("users.parquet"), dir.join("moved.parquet")).unwrap();
    let err = mtrec_serve::ServingModel::load(&dir.join("bundle"), &TablePaths::default()).unwrap_err();
    let message = mtrec_schema::error_chain(&err);
    assert!(message.contains("users.parquet") && message.contains("--user-features"), "{message}");
    std::fs::rename(dir.join("moved.parquet"), dir.join("users.parquet")).unwrap();
}
