//! The benchmark's requests: from raw Census rows (one person and `items` id-only candidates),
//! or from a synthetic log (one user and context, `items` candidates by id, whose features the
//! server looks up in its item table), and that item table itself.

use std::io::{BufRead, BufReader};
use std::path::Path;

use hyper::body::Bytes;
use polars::prelude::*;
use serde_json::{json, Map, Value};

use crate::{Endpoint, Error, RequestArgs};

/// A Census row as request fields: numeric features as JSON numbers, the rest as text, null
/// values as null.
pub(crate) fn census_records(census: &Path, schema: &Path, rows: usize) -> Result<Vec<Map<String, Value>>, Error> {
    let schema: Value = serde_json::from_slice(&std::fs::read(schema)?)?;
    let csv = &schema["source"]["csv"];
    let columns: Vec<&str> = csv["columns"]
        .as_array()
        .ok_or("the schema has no source.csv.columns")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let nulls: Vec<&str> =
        csv["null_values"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let delimiter = csv["delimiter"].as_str().and_then(|d| d.chars().next()).unwrap_or(',');
    // (index in the CSV row, field name, numeric?) of every feature's source column, once.
    let mut fields: Vec<(usize, String, bool)> = Vec::new();
    for f in schema["features"].as_array().ok_or("the schema has no features")? {
        let column = f["column"].as_str().or(f["name"].as_str()).ok_or("a feature without a name")?;
        if fields.iter().any(|(_, c, _)| c == column) {
            continue;
        }
        let index = columns.iter().position(|c| *c == column).ok_or_else(|| format!("no CSV column {column:?}"))?;
        fields.push((index, column.to_owned(), f["type"] == "numeric"));
    }
    let file = std::fs::File::open(census).map_err(|e| format!("{}: {e}", census.display()))?;
    let reader: Box<dyn BufRead> = if census.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut out = Vec::with_capacity(rows);
    for line in reader.lines().take(rows) {
        let line = line?;
        let cells: Vec<&str> = line.split(delimiter).map(str::trim).collect();
        let mut record = Map::new();
        for (index, name, numeric) in &fields {
            let cell = cells.get(*index).copied().unwrap_or("");
            let value = if nulls.contains(&cell) {
                Value::Null
            } else if *numeric {
                cell.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| Value::from(cell), Value::Number)
            } else {
                Value::from(cell)
            };
            record.insert(name.clone(), value);
        }
        out.push(record);
    }
    if out.len() < rows {
        return Err(format!("{}: {} rows, {rows} needed", census.display(), out.len()).into());
    }
    Ok(out)
}

/// Request records of a synthetic log's first `rows` rows: per row, its user-side fields, its
/// context fields and its item id (field names and sides from the dataset schema `schema`).
fn synthetic_records(log: &Path, schema: &Path, rows: usize) -> Result<Vec<[Map<String, Value>; 3]>, Error> {
    let schema: Value = serde_json::from_slice(&std::fs::read(schema)?)?;
    let item_id = schema["ids"]["item"].as_str().ok_or("the schema names no item id column")?;
    let user_id = schema["ids"]["user"].as_str().ok_or("the schema names no user id column")?;
    let mut fields: Vec<(String, usize)> = vec![(user_id.to_owned(), 0), (item_id.to_owned(), 1)];
    for f in schema["features"].as_array().ok_or("the schema has no features")? {
        let column = f["column"].as_str().or(f["name"].as_str()).ok_or("a feature without a name")?;
        let side = match f["side"].as_str() {
            Some("user") => 0,
            Some("context") => 2,
            _ => continue,
        };
        if !fields.iter().any(|(c, _)| c == column) {
            fields.push((column.to_owned(), side));
        }
    }
    let columns: Vec<Expr> = fields.iter().map(|(c, _)| col(c.as_str())).collect();
    let df = LazyFrame::scan_parquet(PlRefPath::new(log.to_string_lossy().as_ref()), ScanArgsParquet::default())?
        .select(columns)
        .limit(rows as IdxSize)
        .collect()?;
    if df.height() < rows {
        return Err(format!("{}: {} rows, {rows} needed", log.display(), df.height()).into());
    }
    let cells: Vec<&Column> = fields.iter().map(|(c, _)| df.column(c)).collect::<PolarsResult<_>>()?;
    Ok((0..rows)
        .map(|r| {
            let mut sides: [Map<String, Value>; 3] = Default::default();
            for ((name, side), column) in fields.iter().zip(&cells) {
                let value = column.get(r).map_or(Value::Null, mtrec_serve::replay::json_cell);
                sides[*side].insert(name.clone(), value);
            }
            sides
        })
        .collect())
}

/// The request bodies (JSON) and the path they are posted to.
pub(crate) fn request_bodies(args: &RequestArgs) -> Result<(&'static str, Vec<Bytes>), Error> {
    let rows = args.requests * args.items;
    let records: Vec<[Map<String, Value>; 3]> = match (&args.census, &args.synthetic) {
        // Census: everything is the user's; candidates are row numbers with no feature.
        (Some(census), _) => census_records(census, &args.schema, rows)?
            .into_iter()
            .enumerate()
            .map(|(r, user)| [user, Map::from_iter([("id".to_owned(), json!(r.to_string()))]), Map::new()])
            .collect(),
        (None, Some(log)) => synthetic_records(log, &args.schema, rows)?,
        (None, None) => return Err("give --census or --synthetic".into()),
    };
    let bodies = (0..args.requests)
        .map(|k| {
            let block = &records[k * args.items..(k + 1) * args.items];
            let [user, _, context] = &block[0];
            let body = match args.endpoint {
                Endpoint::Score => json!({
                    "user": user,
                    "context": context,
                    "items": block.iter().map(|[_, item, _]| item).collect::<Vec<_>>(),
                }),
                Endpoint::Batch => json!({
                    "rows": block.iter().map(|[user, item, context]| json!({"user": user, "item": item, "context": context})).collect::<Vec<_>>(),
                }),
            };
            Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"))
        })
        .collect();
    let path = match args.endpoint {
        Endpoint::Score => "/v1/score",
        Endpoint::Batch => "/v1/score/batch",
    };
    Ok((path, bodies))
}

/// Writes the item table of a synthetic log (`--item-features` for the server): one row per
/// item id, with every item-side feature's column, as the log first shows the item.
pub(crate) fn write_item_table(log: &Path, schema: &Path, out: &Path) -> Result<usize, Error> {
    let schema: Value = serde_json::from_slice(&std::fs::read(schema)?)?;
    let item_id = schema["ids"]["item"].as_str().ok_or("the schema names no item id column")?;
    let mut columns = vec![item_id.to_owned()];
    for f in schema["features"].as_array().ok_or("the schema has no features")? {
        let column = f["column"].as_str().or(f["name"].as_str()).ok_or("a feature without a name")?;
        if f["side"] == "item" && !columns.iter().any(|c| c == column) {
            columns.push(column.to_owned());
        }
    }
    let mut df = LazyFrame::scan_parquet(PlRefPath::new(log.to_string_lossy().as_ref()), ScanArgsParquet::default())?
        .select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
        .unique_stable_generic(Some(vec![col(item_id)]), UniqueKeepStrategy::First)
        .collect()?;
    ParquetWriter::new(std::fs::File::create(out)?).finish(&mut df)?;
    Ok(df.height())
}
