//! A scored JSON request, task by task: the model's output columns, written out as the answer's
//! JSON ([`crate::api::ScoreResponse`]'s exact bytes) and as an exposure record without building
//! a map per pair. The answer of a 100-item request is a few columns instead of 100 maps with a
//! copy of every task name, and its JSON is written in one buffer, sized from its first pair.

use mtrec_model::Head;
use mtrec_schema::{RawValue, TaskType};
use serde_json::ser::{CompactFormatter, Formatter};

use crate::api::{ApiWarning, ModelRef, PairScores, ScoreResponse, TaskOutput};
use crate::exposure::{output_column, Exposure};
use crate::repository::Arm;

/// One requested task's outputs for every row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskColumn {
    pub(crate) name: String,
    pub(crate) values: TaskValues,
}

/// A task's outputs, one entry per row (`classes.len()` per row for multiclass).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskValues {
    Binary(Vec<f32>),
    Regression {
        value: Vec<f64>,
        mean: Option<Vec<f64>>,
        log1p_value: Option<Vec<f32>>,
    },
    /// `classes` sorted by name (the answer's order), `probabilities` row by row in that order,
    /// `top` each row's most probable class (an index into `classes`).
    Multiclass {
        classes: Vec<String>,
        probabilities: Vec<f32>,
        top: Vec<usize>,
    },
}

impl TaskColumn {
    /// `head`'s outputs (`rows x head.outputs`, the packed model's layout) as the answer reports them.
    pub(crate) fn new(head: &Head, outputs: &[f32]) -> Self {
        let values = match head.kind {
            TaskType::Binary => TaskValues::Binary(outputs.to_vec()),
            TaskType::Regression => TaskValues::Regression {
                value: outputs.iter().map(|&o| head.to_label_units(o)).collect(),
                // `label_mean` is known for every row or for none: the head decides.
                mean: outputs.iter().map(|&o| head.label_mean(o)).collect(),
                log1p_value: head.label_log1p.then(|| outputs.to_vec()),
            },
            TaskType::Multiclass => {
                let k = head.classes.len();
                let mut order: Vec<usize> = (0..k).collect();
                order.sort_by(|&a, &b| head.classes[a].cmp(&head.classes[b]));
                let rank: Vec<usize> = (0..k).map(|c| order.iter().position(|&o| o == c).unwrap_or(c)).collect();
                let rows = outputs.chunks_exact(k.max(1));
                TaskValues::Multiclass {
                    classes: order.iter().map(|&c| head.classes[c].clone()).collect(),
                    probabilities: rows.clone().flat_map(|row| order.iter().map(move |&c| row[c])).collect(),
                    top: rows.map(|row| rank[mtrec_metrics::predicted_class(row)]).collect(),
                }
            }
        };
        Self { name: head.name.clone(), values }
    }

    /// Row `r`'s output as the API type.
    fn output(&self, r: usize) -> TaskOutput {
        match &self.values {
            TaskValues::Binary(p) => TaskOutput::Binary { probability: p[r] },
            TaskValues::Regression { value, mean, log1p_value } => TaskOutput::Regression {
                value: value[r],
                mean: mean.as_ref().map(|m| m[r]),
                log1p_value: log1p_value.as_ref().map(|l| l[r]),
            },
            TaskValues::Multiclass { classes, probabilities, top } => {
                let k = classes.len();
                TaskOutput::Multiclass {
                    probabilities: classes
                        .iter()
                        .cloned()
                        .zip(probabilities[r * k..(r + 1) * k].iter().copied())
                        .collect(),
                    top_class: classes[top[r]].clone(),
                }
            }
        }
    }

    /// Whether every output is finite (the load-time self-test).
    pub(crate) fn all_finite(&self) -> bool {
        match &self.values {
            TaskValues::Binary(p) => p.iter().all(|v| v.is_finite()),
            TaskValues::Regression { value, .. } => value.iter().all(|v| v.is_finite()),
            TaskValues::Multiclass { probabilities, .. } => probabilities.iter().all(|v| v.is_finite()),
        }
    }

    /// The exposure log's columns of this task (see [`crate::exposure`]): name and values in row order.
    fn exposure_columns(&self, rows: usize) -> Vec<(String, Vec<f64>)> {
        match &self.values {
            TaskValues::Binary(p) => {
                vec![(output_column("binary", &self.name, None), p.iter().map(|&v| f64::from(v)).collect())]
            }
            TaskValues::Regression { value, .. } => {
                vec![(output_column("regression", &self.name, None), value.clone())]
            }
            TaskValues::Multiclass { classes, probabilities, .. } => {
                let k = classes.len();
                classes
                    .iter()
                    .enumerate()
                    .map(|(c, class)| {
                        let values = (0..rows).map(|r| f64::from(probabilities[r * k + c])).collect();
                        (output_column("multiclass", &self.name, Some(class)), values)
                    })
                    .collect()
            }
        }
    }
}

/// A scored `/v1/score` or JSON `/v1/score/batch` request; ids are borrowed from the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<'r> {
    pub model: ModelRef,
    pub arm: Option<Arm>,
    /// Per row, the item's id as sent (none when the item had none).
    pub(crate) item_ids: Vec<Option<&'r serde_json::Value>>,
    /// Per row, the user's id (batches only; empty for `/v1/score`).
    pub(crate) user_ids: Vec<Option<&'r serde_json::Value>>,
    /// The requested tasks, sorted by name (the order of each pair's `scores`).
    pub(crate) tasks: Vec<TaskColumn>,
    pub warnings: Vec<ApiWarning>,
}

impl<'r> Answer<'r> {
    /// How many pairs (rows) were scored.
    pub fn len(&self) -> usize {
        self.item_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.item_ids.is_empty()
    }

    /// The answer as the API's response type (a map per pair: for tests and library callers;
    /// the server writes [`Answer::to_json`] instead).
    pub fn to_response(&self) -> ScoreResponse {
        let results = (0..self.len())
            .map(|r| PairScores {
                item_id: self.item_ids[r].cloned(),
                user_id: self.user_ids.get(r).copied().flatten().cloned(),
                scores: self.tasks.iter().map(|t| (t.name.clone(), t.output(r))).collect(),
            })
            .collect();
        ScoreResponse { model: self.model.clone(), arm: self.arm, results, warnings: self.warnings.clone() }
    }

    /// The answer's JSON: the bytes `serde_json::to_vec(&self.to_response())` would give.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(1024);
        self.write_json(&mut bytes)?;
        Ok(bytes)
    }

    /// The exposure record of this answer (the item ids keyed as categories, as the log keeps them).
    pub(crate) fn exposure(&self, time_ms: i64, arm: Arm, user_id: Option<String>) -> Exposure {
        let item_ids = self
            .item_ids
            .iter()
            .map(|id| id.and_then(RawValue::from_json).and_then(|id| id.category_key().map(|k| k.into_owned())))
            .collect();
        Exposure {
            time_ms,
            model: self.model.name.clone(),
            version: self.model.version.clone(),
            arm,
            user_id,
            item_ids,
            outputs: self.tasks.iter().flat_map(|t| t.exposure_columns(self.len())).collect(),
        }
    }
}

/// `"name":`, escaped as JSON: the key of a task or a class, written once per answer.
fn json_key(name: &str) -> Vec<u8> {
    let mut key = json_string(name);
    key.push(b':');
    key
}

fn json_string(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() + 2);
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut bytes, text);
    bytes
}

/// A number as serde_json writes it: its shortest form, `null` when not finite.
fn write_f32(out: &mut Vec<u8>, value: f32) {
    if value.is_finite() {
        let _ = CompactFormatter.write_f32(out, value);
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        let _ = CompactFormatter.write_f64(out, value);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A task's keys as JSON, escaped once per answer: the task's, and a multiclass task's classes
/// (as keys and as `top_class` values).
struct TaskKeys {
    task: Vec<u8>,
    class_keys: Vec<Vec<u8>>,
    class_names: Vec<Vec<u8>>,
}

impl TaskKeys {
    fn new(task: &TaskColumn) -> Self {
        let classes: &[String] = match &task.values {
            TaskValues::Multiclass { classes, .. } => classes,
            _ => &[],
        };
        Self {
            task: json_key(&task.name),
            class_keys: classes.iter().map(|c| json_key(c)).collect(),
            class_names: classes.iter().map(|c| json_string(c)).collect(),
        }
    }
}

impl TaskColumn {
    /// Row `r`'s output, written as [`TaskOutput`]'s JSON.
    fn write_json(&self, keys: &TaskKeys, r: usize, out: &mut Vec<u8>) {
        match &self.values {
            TaskValues::Binary(p) => {
                out.extend_from_slice(br#"{"probability":"#);
                write_f32(out, p[r]);
            }
            TaskValues::Regression { value, mean, log1p_value } => {
                out.extend_from_slice(br#"{"value":"#);
                write_f64(out, value[r]);
                if let Some(mean) = mean {
                    out.extend_from_slice(br#","mean":"#);
                    write_f64(out, mean[r]);
                }
                if let Some(log1p) = log1p_value {
                    out.extend_from_slice(br#","log1p_value":"#);
                    write_f32(out, log1p[r]);
                }
            }
            TaskValues::Multiclass { classes, probabilities, top } => {
                let k = classes.len();
                out.extend_from_slice(br#"{"probabilities":{"#);
                for (c, p) in probabilities[r * k..(r + 1) * k].iter().enumerate() {
                    if c > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&keys.class_keys[c]);
                    write_f32(out, *p);
                }
                out.extend_from_slice(br#"},"top_class":"#);
                out.extend_from_slice(&keys.class_names[top[r]]);
            }
        }
        out.push(b'}');
    }
}

impl Answer<'_> {
    /// Writes the answer's JSON: [`ScoreResponse`]'s fields in its order, the numbers and
    /// strings formatted by serde_json, the keys escaped once per answer rather than per pair.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(br#"{"model":"#);
        serde_json::to_writer(&mut *out, &self.model)?;
        if let Some(arm) = &self.arm {
            out.extend_from_slice(br#","arm":"#);
            serde_json::to_writer(&mut *out, arm)?;
        }
        out.extend_from_slice(br#","results":["#);
        let keys: Vec<TaskKeys> = self.tasks.iter().map(TaskKeys::new).collect();
        let start = out.len();
        for r in 0..self.len() {
            if r == 1 {
                // The other pairs take about as many bytes as the first: one allocation for all.
                out.reserve((self.len() - 1) * (out.len() - start + 16) + 256);
            }
            if r > 0 {
                out.push(b',');
            }
            out.push(b'{');
            if let Some(id) = self.item_ids[r] {
                out.extend_from_slice(br#""item_id":"#);
                serde_json::to_writer(&mut *out, id)?;
                out.push(b',');
            }
            if let Some(id) = self.user_ids.get(r).copied().flatten() {
                out.extend_from_slice(br#""user_id":"#);
                serde_json::to_writer(&mut *out, id)?;
                out.push(b',');
            }
            out.extend_from_slice(br#""scores":{"#);
            for (t, (task, keys)) in self.tasks.iter().zip(&keys).enumerate() {
                if t > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&keys.task);
                task.write_json(keys, r, out);
            }
            out.extend_from_slice(b"}}");
        }
        out.extend_from_slice(br#"],"warnings":"#);
        serde_json::to_writer(&mut *out, &self.warnings)?;
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mtrec_schema::Scope;
    use serde_json::json;

    use super::*;

    fn head(name: &str, kind: TaskType, classes: &[&str]) -> Head {
        Head {
            name: name.to_owned(),
            kind,
            scope: Scope::Pair,
            outputs: classes.len().max(1),
            weight: 1.0,
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            label_log1p: false,
            residual_variance: None,
            factors: Vec::new(),
        }
    }

    /// Every kind of output, three rows (tasks sorted by name, as the server orders them).
    fn tasks() -> Vec<TaskColumn> {
        let dwell =
            Head { label_log1p: true, residual_variance: Some(0.5), ..head("dwell", TaskType::Regression, &[]) };
        let genre = head("genre", TaskType::Multiclass, &["rock", "jazz", "blues"]);
        vec![
            TaskColumn::new(&head("click", TaskType::Binary, &[]), &[0.25, f32::NAN, 1e-9]),
            TaskColumn::new(&dwell, &[0.0, 1.5, -0.25]),
            TaskColumn::new(&genre, &[0.2, 0.5, 0.3, 0.6, 0.1, 0.3, 0.1, 0.1, 0.8]),
            TaskColumn::new(&head("price", TaskType::Regression, &[]), &[3.0, -1.0, 12.5]),
        ]
    }

    #[test]
    fn the_json_is_the_response_types_json_byte_for_byte() {
        let ids = [json!(1.0), json!("i\"2\u{1}\n")];
        let users = [json!(7)];
        let model = ModelRef { name: "m\"".to_owned(), version: "v1".to_owned() };
        // Names that JSON must escape sort after the others' (the answer keeps tasks by name).
        let odd = head("zz\"task\\", TaskType::Multiclass, &["b\"q", "\u{e9}\t"]);
        let warning = ApiWarning {
            field: "items[].x".to_owned(),
            kind: crate::api::WarningKind::Missing,
            count: 2,
            indices: vec![0, 2],
        };
        let score = Answer {
            model: model.clone(),
            arm: None,
            item_ids: vec![Some(&ids[0]), None, Some(&ids[1])],
            user_ids: Vec::new(),
            tasks: [tasks(), vec![TaskColumn::new(&odd, &[0.5, 0.5, f32::INFINITY, 1.0, 0.0, 0.0])]].concat(),
            warnings: vec![warning],
        };
        let batch = Answer {
            arm: Some(Arm::Candidate),
            user_ids: vec![Some(&users[0]), Some(&users[0]), None],
            warnings: Vec::new(),
            ..score.clone()
        };
        for answer in [score, batch] {
            let json = answer.to_json().unwrap();
            assert_eq!(String::from_utf8(json).unwrap(), serde_json::to_string(&answer.to_response()).unwrap());
        }
    }

    #[test]
    fn outputs_are_reported_in_the_labels_units_with_classes_by_name() {
        let answer = Answer {
            model: ModelRef { name: "m".to_owned(), version: "v".to_owned() },
            arm: None,
            item_ids: vec![None; 3],
            user_ids: Vec::new(),
            tasks: tasks(),
            warnings: Vec::new(),
        };
        let response: serde_json::Value = serde_json::from_slice(&answer.to_json().unwrap()).unwrap();
        let second = &response["results"][1]["scores"];
        assert_eq!(second["click"]["probability"], json!(null), "a non-finite output is null");
        assert!((second["dwell"]["value"].as_f64().unwrap() - 1.5f64.exp_m1()).abs() < 1e-12);
        assert!((second["dwell"]["mean"].as_f64().unwrap() - 1.75f64.exp_m1()).abs() < 1e-12);
        assert_eq!(second["dwell"]["log1p_value"], json!(1.5));
        assert_eq!(second["price"], json!({"value": -1.0}));
        let genre = &second["genre"];
        assert_eq!(genre["top_class"], json!("rock"));
        let classes: Vec<&String> = genre["probabilities"].as_object().unwrap().keys().collect();
        assert_eq!(classes, ["blues", "jazz", "rock"]);
        assert_eq!(genre["probabilities"]["blues"], json!(0.3), "an f32 is written in its shortest form");
        assert_eq!(response["results"][2]["scores"]["genre"]["top_class"], json!("blues"));
    }

    #[test]
    fn the_exposure_record_keys_items_as_categories_and_has_a_column_per_output() {
        let ids = [json!(1.0), json!("i2")];
        let answer = Answer {
            model: ModelRef { name: "m".to_owned(), version: "v".to_owned() },
            arm: Some(Arm::Stable),
            item_ids: vec![Some(&ids[0]), None, Some(&ids[1])],
            user_ids: Vec::new(),
            tasks: tasks(),
            warnings: Vec::new(),
        };
        let record = answer.exposure(5, Arm::Stable, Some("u".to_owned()));
        assert_eq!(record.item_ids, [Some("1".to_owned()), None, Some("i2".to_owned())]);
        let names: Vec<&str> = record.outputs.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "binary.click",
                "regression.dwell",
                "multiclass.genre.blues",
                "multiclass.genre.jazz",
                "multiclass.genre.rock",
                "regression.price"
            ]
        );
        assert_eq!(record.outputs[0].1[0], 0.25);
        assert_eq!(record.outputs[2].1, [f64::from(0.3f32), f64::from(0.3f32), f64::from(0.8f32)]);
        assert_eq!(record.outputs[5].1, [3.0, -1.0, 12.5]);
    }
}
