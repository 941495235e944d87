//! Train/serve parity: every row of the test split scored through the router equals the
//! model's own scores of the encoded rows (what `mtrec predict` writes), to 1e-6, as JSON and
//! as Arrow.

use std::io::Cursor;

use mtrec_ingest::encoded::{load_pipeline, load_split};
use mtrec_model::infer::{columns, prediction_columns, PredictionValues};
use mtrec_schema::{Split, TaskType};
use polars::prelude::*;

use crate::common::{fixture, pair_record, post_json, send, state};

/// Absolute below 1, relative above: regression values in the label's units can be large.
const TOLERANCE: f64 = 1e-6;

/// The bundle's scores of the encoded test split, as `mtrec predict` writes them: the row's ids
/// and every task's prediction columns.
fn predicted() -> DataFrame {
    crate::common::off_runtime(predicted_here)
}

fn predicted_here() -> DataFrame {
    let fx = fixture();
    let bundle = mtrec_model::bundle::load(&fx.bundle).unwrap();
    let test = load_split(&fx.ingest, Split::Test, &bundle.pipeline).unwrap();
    let predictions = mtrec_model::predict_all(&bundle.model, &test, 128);
    let tasks: Vec<usize> = (0..bundle.model.heads.len()).collect();
    let mut out = vec![
        Column::new("id.user".into(), test.user_ids.clone().unwrap()),
        Column::new("id.item".into(), test.item_ids.clone().unwrap()),
    ];
    for (name, values) in prediction_columns(&bundle.model, &predictions.outputs, &tasks, test.rows) {
        out.push(match values {
            PredictionValues::Numbers(v) => Column::new(name.into(), v),
            PredictionValues::LabelUnits(v) => Column::new(name.into(), v),
            PredictionValues::Classes(v) => Column::new(name.into(), v),
        });
    }
    DataFrame::new(test.rows, out).unwrap()
}

/// A numeric column (f32 outputs, f64 values in a label's units) as f64.
fn number_column(df: &DataFrame, name: &str) -> Vec<f64> {
    let column = df.column(name).unwrap_or_else(|e| panic!("column {name}: {e}"));
    column.cast(&DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect()
}

fn assert_close(what: &str, served: f64, predicted: f64) {
    let tolerance = TOLERANCE * predicted.abs().max(1.0);
    assert!((served - predicted).abs() <= tolerance, "{what}: served {served}, predict {predicted}");
}

#[tokio::test]
async fn json_batch_scores_equal_predict_on_every_test_row() {
    let fx = fixture();
    let state = state();
    let model = state.model().unwrap();
    let expected = predicted();
    let pipeline = load_pipeline(&fx.ingest).unwrap();
    let test = load_split(&fx.ingest, Split::Test, &pipeline).unwrap();
    assert!(test.rows > 100, "the test split is too small to mean much: {}", test.rows);
    let rows: Vec<serde_json::Value> = test.row_ids.iter().map(|&r| pair_record(&model, &fx.raw, r as usize)).collect();
    let answer = post_json(&state, "/v1/score/batch", &serde_json::json!({ "rows": rows })).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let body = answer.json();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), test.rows);
    let mut compared = 0;
    for head in &model.bundle.model.heads {
        match head.kind {
            TaskType::Multiclass => {
                for class in &head.classes {
                    let column = number_column(&expected, &columns::prob(&head.name, class));
                    for (r, result) in results.iter().enumerate() {
                        let served = result["scores"][&head.name]["probabilities"][class].as_f64().unwrap();
                        assert_close(&format!("row {r} {}.{class}", head.name), served, column[r]);
                        compared += 1;
                    }
                }
            }
            TaskType::Binary => {
                let column = number_column(&expected, &columns::pred(&head.name));
                for (r, result) in results.iter().enumerate() {
                    let served = result["scores"][&head.name]["probability"].as_f64().unwrap();
                    assert_close(&format!("row {r} {}", head.name), served, column[r]);
                    compared += 1;
                }
            }
            TaskType::Regression => {
                assert!(head.label_log1p && head.residual_variance.is_some(), "{}: a log1p label", head.name);
                let fields = [
                    ("value", columns::pred(&head.name)),
                    ("log1p_value", columns::pred_log1p(&head.name)),
                    ("mean", columns::pred_mean(&head.name)),
                ];
                for (field, name) in fields {
                    let column = number_column(&expected, &name);
                    for (r, result) in results.iter().enumerate() {
                        let served = result["scores"][&head.name][field].as_f64().unwrap();
                        assert_close(&format!("row {r} {}.{field}", head.name), served, column[r]);
                        compared += 1;
                    }
                }
            }
        }
    }
    assert_eq!(compared, test.rows * 10, "6 tasks: one with 3 classes, one regression with 3 fields");
}

#[tokio::test]
async fn one_user_requests_equal_predict() {
    let fx = fixture();
    let state = state();
    let model = state.model().unwrap();
    let expected = predicted();
    let click = number_column(&expected, "pred.click");
    let high_value = number_column(&expected, "pred.high_value");
    let pipeline = load_pipeline(&fx.ingest).unwrap();
    let test = load_split(&fx.ingest, Split::Test, &pipeline).unwrap();
    // /v1/score takes one context for all items: one request per row, for the first 40 rows.
    for (r, &raw_row) in test.row_ids.iter().enumerate().take(40) {
        let pair = pair_record(&model, &fx.raw, raw_row as usize);
        let request = serde_json::json!({ "user": pair["user"], "context": pair["context"], "items": [pair["item"]] });
        let answer = post_json(&state, "/v1/score", &request).await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
        let scores = &answer.json()["results"][0]["scores"];
        assert_close(&format!("row {r} click"), scores["click"]["probability"].as_f64().unwrap(), click[r]);
        assert_close(
            &format!("row {r} high_value"),
            scores["high_value"]["probability"].as_f64().unwrap(),
            high_value[r],
        );
    }
}

#[tokio::test]
async fn arrow_batch_scores_equal_predict() {
    let fx = fixture();
    let state = state();
    let expected = predicted();
    let pipeline = load_pipeline(&fx.ingest).unwrap();
    let test = load_split(&fx.ingest, Split::Test, &pipeline).unwrap();
    let idx = IdxCa::from_vec("idx".into(), test.row_ids.iter().map(|&r| r as IdxSize).collect());
    let mut rows = fx.raw.take(&idx).unwrap();
    let mut body = Vec::new();
    IpcStreamWriter::new(&mut body).finish(&mut rows).unwrap();
    let answer = send(
        &state,
        "POST",
        "/v1/score/batch?tasks=click,dwell,item_quality",
        Some(mtrec_serve::api::ARROW_STREAM),
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.content_type, mtrec_serve::api::ARROW_STREAM);
    assert!(answer.headers.contains_key("x-mtrec-model-version"));
    let served = IpcStreamReader::new(Cursor::new(answer.body)).finish().unwrap();
    assert_eq!(served.height(), test.rows);
    let names: Vec<String> = served.get_column_names().iter().map(|n| n.to_string()).collect();
    assert_eq!(
        names,
        [
            "id.user",
            "id.item",
            "pred.click",
            "pred.dwell",
            "pred.dwell.log1p",
            "pred.dwell.mean",
            "pred.item_quality",
            "prob.item_quality.low",
            "prob.item_quality.mid",
            "prob.item_quality.high"
        ]
    );
    let numbers = [
        "pred.click",
        "pred.dwell",
        "pred.dwell.log1p",
        "pred.dwell.mean",
        "prob.item_quality.low",
        "prob.item_quality.mid",
        "prob.item_quality.high",
    ];
    for column in numbers {
        for (r, (s, p)) in number_column(&served, column).into_iter().zip(number_column(&expected, column)).enumerate()
        {
            assert_close(&format!("row {r} {column}"), s, p);
        }
    }
    let top = |df: &DataFrame| -> Vec<String> {
        df.column("pred.item_quality")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|v| v.unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(top(&served), top(&expected));
    let ids = |df: &DataFrame, c: &str| -> Vec<String> {
        df.column(c).unwrap().str().unwrap().iter().map(|v| v.unwrap_or_default().to_owned()).collect()
    };
    assert_eq!(ids(&served, "id.user"), ids(&expected, "id.user"));
    assert_eq!(ids(&served, "id.item"), ids(&expected, "id.item"));
}
