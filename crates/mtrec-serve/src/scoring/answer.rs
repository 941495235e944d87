//! A scored JSON request, task by task: the model's output columns, written out as the answer's
//! JSON ([`crate::api::ScoreResponse`]'s exact bytes) and as an exposure record without building
//! a map per pair. The answer of a 100-item request is a few columns instead of 100 maps with a
//! copy of every task name, and its JSON is written in one buffer sized up front.

use mtrec_model::Head;
use mtrec_schema::{RawValue, TaskType};
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

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
                mean: head
                    .residual_variance
                    .filter(|_| head.label_log1p)
                    .map(|_| outputs.iter().filter_map(|&o| head.label_mean(o)).collect()),
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
        // About 40 bytes a task and 30 a pair besides: one allocation for most answers.
        let mut bytes = Vec::with_capacity(256 + self.len() * (32 + 40 * self.tasks.len()));
        serde_json::to_writer(&mut bytes, self)?;
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

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut answer = serializer.serialize_struct("ScoreResponse", 3 + usize::from(self.arm.is_some()))?;
        answer.serialize_field("model", &self.model)?;
        if let Some(arm) = &self.arm {
            answer.serialize_field("arm", arm)?;
        }
        answer.serialize_field("results", &Results(self))?;
        answer.serialize_field("warnings", &self.warnings)?;
        answer.end()
    }
}

struct Results<'a>(&'a Answer<'a>);

impl Serialize for Results<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let answer = self.0;
        let mut results = serializer.serialize_seq(Some(answer.len()))?;
        for r in 0..answer.len() {
            results.serialize_element(&Pair { answer, r })?;
        }
        results.end()
    }
}

/// One pair of the answer, written as [`PairScores`].
struct Pair<'a> {
    answer: &'a Answer<'a>,
    r: usize,
}

impl Serialize for Pair<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (item_id, user_id) = (self.answer.item_ids[self.r], self.answer.user_ids.get(self.r).copied().flatten());
        let mut pair = serializer.serialize_struct("PairScores", 1 + item_id.iter().len() + user_id.iter().len())?;
        if let Some(id) = item_id {
            pair.serialize_field("item_id", id)?;
        }
        if let Some(id) = user_id {
            pair.serialize_field("user_id", id)?;
        }
        pair.serialize_field("scores", &Scores(self))?;
        pair.end()
    }
}

struct Scores<'a>(&'a Pair<'a>);

impl Serialize for Scores<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Pair { answer, r } = *self.0;
        let mut scores = serializer.serialize_map(Some(answer.tasks.len()))?;
        for task in &answer.tasks {
            scores.serialize_entry(&task.name, &Output { task, r })?;
        }
        scores.end()
    }
}

/// One task's output of one pair, written as [`TaskOutput`].
struct Output<'a> {
    task: &'a TaskColumn,
    r: usize,
}

impl Serialize for Output<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.r;
        match &self.task.values {
            TaskValues::Binary(p) => {
                let mut output = serializer.serialize_struct("Binary", 1)?;
                output.serialize_field("probability", &p[r])?;
                output.end()
            }
            TaskValues::Regression { value, mean, log1p_value } => {
                let fields = 1 + usize::from(mean.is_some()) + usize::from(log1p_value.is_some());
                let mut output = serializer.serialize_struct("Regression", fields)?;
                output.serialize_field("value", &value[r])?;
                if let Some(mean) = mean {
                    output.serialize_field("mean", &mean[r])?;
                }
                if let Some(log1p) = log1p_value {
                    output.serialize_field("log1p_value", &log1p[r])?;
                }
                output.end()
            }
            TaskValues::Multiclass { classes, probabilities, top } => {
                let k = classes.len();
                let mut output = serializer.serialize_struct("Multiclass", 2)?;
                output.serialize_field(
                    "probabilities",
                    &ClassProbabilities(classes, &probabilities[r * k..(r + 1) * k]),
                )?;
                output.serialize_field("top_class", &classes[top[r]])?;
                output.end()
            }
        }
    }
}

struct ClassProbabilities<'a>(&'a [String], &'a [f32]);

impl Serialize for ClassProbabilities<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (class, p) in self.0.iter().zip(self.1) {
            map.serialize_entry(class, p)?;
        }
        map.end()
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
        let ids = [json!(1.0), json!("i2")];
        let users = [json!(7)];
        let model = ModelRef { name: "m".to_owned(), version: "v1".to_owned() };
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
            tasks: tasks(),
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
