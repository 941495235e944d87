//! # mtrec-schema
//!
//! The leaf crate of mtrec, shared by every other crate; it knows nothing of Polars or tensors.
//! It holds the dataset schema and the typed artifacts the stages hand each other.
//!
//! - [`spec`]: the declarative dataset schema a user writes (`schemas/*.json`), whose JSON
//!   Schema (`schemas/dataset.schema.json`) is generated from these types by [`json_schema`].
//! - [`validate`]: loading a schema with errors that name the JSON path of the problem.
//! - [`pipeline`]: the fitted feature pipeline saved as `features.json` by ingestion.
//! - [`encode`]: the encoder of raw cells and raw JSON records, used by ingestion for every cell
//!   and by serving for every request, so training and serving encode identically.
//! - [`encoded`]: an encoded split in memory ([`EncodedDataset`]), the [`Split`] names, and
//!   the encoded columns the model reads.
//! - [`metric`]: metric names ([`Metric`], [`MetricKey`]): direction and the primary metric
//!   of each task kind, shared by training, reports and experiment summaries.
//! - [`history`]: the trainer's `history.json` ([`History`]).
//! - [`shards`]: the layout of an ingest directory's encoded splits (shards and their
//!   `manifest.json`).
//! - [`fs`]: atomic writes of files and directories, used by every writer of artifacts.
//! - [`timestamp`]: event times as seconds, whichever way a log writes them.
//!
//! Id conventions of every categorical table: 0 is out-of-vocabulary, 1 is null, known
//! categories (and hash or numeric buckets) start at 2.

pub mod encode;
pub mod encoded;
pub mod error;
pub mod fs;
pub mod history;
pub mod metric;
pub mod pipeline;
pub mod shards;
pub mod spec;
pub mod timestamp;
pub mod validate;
pub mod value;

pub use encode::{split_tokens, EncodedRecord, EncodedValue, Encoder, Lookup, RecordWarning, RecordWarningKind};
pub use encoded::{EncodedDataset, FeatureColumn, Split, UnknownSplit};
pub use error::{error_chain, CellError, PipelineError, SchemaError, SchemaFileError};
pub use history::{task_pair_key, EpochRecord, GateStats, History};
pub use metric::{Metric, MetricKey, UnknownMetric};
pub use pipeline::{
    product_target, EncodedKind, FeaturePipeline, FittedFeature, FittedTask, IdMapping, NumericTransform, Scale,
    TableRef, TextRules, Transform, FIRST_ID, NULL_ID, OOV_ID, PIPELINE_FORMAT_VERSION,
};
pub use shards::{ShardEntry, ShardManifest, SplitShards, MANIFEST_FILE, SHARD_FORMAT_VERSION};
pub use spec::*;
pub use timestamp::{timestamp_seconds, TimestampUnit};
pub use validate::{load_schema, parse_schema};
pub use value::RawValue;

/// Column name prefixes of the encoded Arrow splits. Feature and task names cannot contain a
/// dot, so these never collide with a feature column (which is named after its feature).
pub mod columns {
    /// Raw user id (`id.user`), raw item id (`id.item`), timestamp (`id.timestamp`) and the row's
    /// position in the source (`id.row`).
    pub const USER_ID: &str = "id.user";
    pub const ITEM_ID: &str = "id.item";
    pub const TIMESTAMP: &str = "id.timestamp";
    pub const ROW: &str = "id.row";

    /// `label.<task>`: f32 label (class index for multiclass, 0 where masked).
    pub fn label(task: &str) -> String {
        format!("label.{task}")
    }
    /// `mask.<task>`: u8, 1 where the label counts.
    pub fn mask(task: &str) -> String {
        format!("mask.{task}")
    }
    /// `extra.<column>`: a passthrough column.
    pub fn extra(column: &str) -> String {
        format!("extra.{column}")
    }
}

/// The JSON Schema of [`DatasetSchema`], pretty-printed (the content of
/// `schemas/dataset.schema.json`).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(DatasetSchema);
    serde_json::to_string_pretty(&schema).expect("a JSON schema always serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "name": "t",
            "ids": {"user": "u", "item": "i"},
            "features": [
                {"name": "u", "side": "user", "type": "categorical"},
                {"name": "i", "side": "item", "type": "categorical", "vocabulary": {"shared": "items"}},
                {"name": "hist", "side": "user", "type": "multi_categorical", "vocabulary": {"shared": "items"}},
                {"name": "price", "side": "item", "type": "numeric", "log1p": true}
            ],
            "tasks": [
                {"name": "click", "type": "binary", "label": {"column": "click"}},
                {"name": "q", "type": "multiclass", "classes": ["a", "b"], "label": {"column": "q"}, "scope": "item"}
            ],
            "split": {"method": "random", "fractions": {"train": 0.8, "valid": 0.1, "test": 0.1}}
        })
    }

    fn error_of(patch: impl FnOnce(&mut serde_json::Value)) -> SchemaError {
        let mut v = base();
        patch(&mut v);
        parse_schema(&v.to_string()).expect_err("schema should be rejected")
    }

    #[test]
    fn base_schema_is_valid() {
        let s = parse_schema(&base().to_string()).unwrap();
        assert_eq!(s.features[3].log1p, Some(true));
        assert_eq!(s.hash(), parse_schema(&serde_json::to_string_pretty(&base()).unwrap()).unwrap().hash());
    }

    #[test]
    fn errors_name_the_json_path() {
        let e = error_of(|v| v["tasks"][1]["label"]["column"] = serde_json::json!(3));
        assert!(e.path.starts_with("tasks[1].label.column"), "{e}");
        let e = error_of(|v| v["features"][2]["name"] = serde_json::json!("u"));
        assert_eq!(e.path, "features[2].name");
        assert!(e.message.contains("duplicate feature name \"u\" (also features[0])"), "{e}");
        let e = error_of(|v| v["split"]["fractions"]["test"] = serde_json::json!(0.5));
        assert_eq!(e.to_string(), "split.fractions: must sum to 1, got 1.4");
        let e = error_of(|v| v["features"][0]["fill"] = serde_json::json!("mean"));
        assert_eq!(e.to_string(), "features[0].fill: does not apply to a categorical feature");
        let e = error_of(|v| v["features"][0]["min_cout"] = serde_json::json!(3));
        assert!(e.path.starts_with("features[0]") && e.message.contains("min_cout"), "{e}");
        let e = error_of(|v| v["tasks"][1]["classes"] = serde_json::json!(["a"]));
        assert_eq!(e.path, "tasks[1].classes");
        let e = error_of(|v| v["features"][2]["embedding_dim"] = serde_json::json!(16));
        assert_eq!(e.path, "features[2].embedding_dim");
        let e = error_of(|v| {
            v["split"] = serde_json::json!({"method": "time", "valid_from": "2026-01-20", "test_from": 5})
        });
        assert_eq!(e.path, "ids.timestamp");
        let e = error_of(|v| v["features"][3]["bucketize"] = serde_json::json!({"boundaries": [2, 1]}));
        assert_eq!(e.path, "features[3].bucketize.boundaries");
    }

    #[test]
    fn product_tasks_name_earlier_binary_tasks_of_their_scope() {
        let with_product = |product: serde_json::Value| {
            move |v: &mut serde_json::Value| {
                let tasks = v["tasks"].as_array_mut().unwrap();
                tasks.push(serde_json::json!({"name": "buy", "type": "binary", "label": {"column": "buy"},
                    "mask": {"column": "click", "in": [1]}}));
                tasks.push(product);
            }
        };
        let mut v = base();
        with_product(serde_json::json!({"name": "click_buy", "type": "binary", "product_of": ["click", "buy"]}))(
            &mut v,
        );
        let s = parse_schema(&v.to_string()).unwrap();
        assert_eq!(
            (s.tasks[3].label.as_ref(), s.tasks[3].product_of.as_slice()),
            (None, &["click".into(), "buy".into()][..])
        );

        let bad = |product: serde_json::Value| error_of(with_product(product)).to_string();
        let p = |factors: serde_json::Value| serde_json::json!({"name": "p", "type": "binary", "product_of": factors});
        assert_eq!(
            bad(p(serde_json::json!(["click", "nope"]))),
            "tasks[3].product_of[1]: \"nope\" names no task declared before this one"
        );
        assert_eq!(
            bad(p(serde_json::json!(["click", "p"]))),
            "tasks[3].product_of[1]: \"p\" names no task declared before this one"
        );
        assert_eq!(bad(p(serde_json::json!(["click", "click"]))), "tasks[3].product_of[1]: \"click\" is named twice");
        assert_eq!(bad(p(serde_json::json!(["click"]))), "tasks[3].product_of: needs at least two tasks");
        assert_eq!(
            bad(p(serde_json::json!(["click", "q"]))),
            "tasks[3].product_of[1]: \"q\" must be a binary task of the same scope (tasks[1])"
        );
        let mut regression = p(serde_json::json!(["click", "buy"]));
        regression["type"] = serde_json::json!("regression");
        assert_eq!(bad(regression), "tasks[3].type: a product_of task is binary");
        let mut labeled = p(serde_json::json!(["click", "buy"]));
        labeled["label"] = serde_json::json!({"column": "y"});
        assert!(bad(labeled).starts_with("tasks[3].label: a product_of task takes its label from its factors"));
        assert_eq!(bad(serde_json::json!({"name": "p", "type": "binary"})), "tasks[3].label: required (or product_of)");
    }

    #[test]
    fn attention_pools_a_user_sequence_against_an_item_feature_of_its_dimension() {
        let attend = |v: &mut serde_json::Value| {
            v["features"][2]["pooling"] = serde_json::json!("attention");
            v["features"][2]["attention"] = serde_json::json!({"target": "i", "max_length": 20});
        };
        let mut v = base();
        attend(&mut v);
        let s = parse_schema(&v.to_string()).unwrap();
        assert_eq!(s.features[2].attention.as_ref().map(|a| (a.target.as_str(), a.max_length)), Some(("i", 20)));

        let bad = |patch: &dyn Fn(&mut serde_json::Value)| {
            error_of(|v| {
                attend(v);
                patch(v);
            })
            .to_string()
        };
        assert_eq!(
            bad(&|v| v["features"][2]["attention"] = serde_json::Value::Null),
            "features[2].attention: required with pooling \"attention\""
        );
        assert_eq!(
            bad(&|v| v["features"][2]["pooling"] = serde_json::json!("mean")),
            "features[2].attention: applies with pooling \"attention\" only"
        );
        assert_eq!(
            bad(&|v| v["features"][2]["attention"]["max_length"] = serde_json::json!(0)),
            "features[2].attention.max_length: must be between 1 and 256"
        );
        assert_eq!(
            bad(&|v| v["features"][2]["attention"]["target"] = serde_json::json!("u")),
            "features[2].attention.target: \"u\" names no categorical item feature"
        );
        assert_eq!(
            bad(&|v| v["features"][1]["embedding_dim"] = serde_json::json!(4)),
            "features[2].attention.target: \"i\" has embedding_dim 4, the sequence 8"
        );
        assert_eq!(
            bad(&|v| v["features"][0]["attention"] = serde_json::json!({"target": "i", "max_length": 2})),
            "features[0].attention: does not apply to a categorical feature"
        );
    }

    #[test]
    fn time_cutoffs_accept_dates_and_numbers() {
        let mut v = base();
        v["ids"]["timestamp"] = serde_json::json!("ts");
        v["split"] =
            serde_json::json!({"method": "time", "valid_from": "2026-01-02", "test_from": "2026-01-03T00:00:00Z"});
        let s = parse_schema(&v.to_string()).unwrap();
        assert_eq!(s.time_cutoffs().unwrap(), (1_767_312_000.0, 1_767_398_400.0));
    }

    #[test]
    fn committed_json_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/dataset.schema.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == json_schema(),
            "{} is stale: regenerate it with `mtrec schema > schemas/dataset.schema.json`",
            path.display()
        );
    }
}
