//! A tiny pipeline and batch covering every feature and head kind.

use mtrec_model::FeatureData;
use mtrec_schema::FeaturePipeline;

pub fn pipeline() -> FeaturePipeline {
    serde_json::from_value(serde_json::json!({
        "format_version": 1, "dataset": "tiny", "schema_hash": "h",
        "ids": {}, "text": {"trim_whitespace": false, "null_values": []},
        "features": [
            {"name": "user", "column": "user", "side": "user", "transform": {"type": "categorical", "ids": {"kind": "vocabulary", "vocabulary": "user"}, "embedding_dim": 3}},
            {"name": "age", "column": "age", "side": "user", "transform": {"type": "numeric", "numeric": {"fill": 0.0, "clip": [null, null], "log1p": false}, "scale": {"kind": "none"}}},
            {"name": "hist", "column": "hist", "side": "user", "transform": {"type": "multi_categorical", "separator": "|", "ids": {"kind": "vocabulary", "vocabulary": "items"}, "embedding_dim": 2, "pooling": "mean"}},
            {"name": "item", "column": "item", "side": "item", "transform": {"type": "categorical", "ids": {"kind": "vocabulary", "vocabulary": "items"}, "embedding_dim": 2}},
            {"name": "price", "column": "price", "side": "item", "transform": {"type": "numeric", "numeric": {"fill": 0.0, "clip": [null, null], "log1p": false}, "scale": {"kind": "none"}}},
            {"name": "device", "column": "device", "side": "context", "transform": {"type": "categorical", "ids": {"kind": "hashing", "buckets": 3, "seed": 0}, "embedding_dim": 2}}
        ],
        "vocabularies": {"user": ["a", "b", "c"], "items": ["x", "y", "z", "w"]},
        "tasks": [
            {"name": "click", "kind": "binary", "scope": "pair", "weight": 1.0, "label": {"column": "click"}},
            {"name": "dwell", "kind": "regression", "scope": "pair", "weight": 0.5, "label": {"column": "dwell"}},
            {"name": "tier", "kind": "multiclass", "classes": ["lo", "mid", "hi"], "scope": "user", "weight": 1.0, "label": {"column": "tier"}},
            {"name": "good", "kind": "binary", "scope": "item", "weight": 0.7, "label": {"column": "good"}}
        ]
    }))
    .expect("a valid pipeline")
}

/// [`pipeline`] with ESMM's tasks added: `buy` (a conversion, labeled where clicked, with no
/// loss of its own) and `click_buy`, the product of `click` and `buy`.
pub fn pipeline_with_product() -> FeaturePipeline {
    let mut pipeline = pipeline();
    let mut buy = pipeline.tasks[0].clone();
    buy.name = "buy".into();
    buy.weight = 0.0;
    let mut click_buy = buy.clone();
    click_buy.name = "click_buy".into();
    click_buy.weight = 1.0;
    click_buy.label = None;
    click_buy.product_of = vec!["click".into(), "buy".into()];
    pipeline.tasks.extend([buy, click_buy]);
    pipeline
}

/// [`pipeline`] with the history `hist` pooled by attention against the candidate `item`, over
/// its first 2 ids (row 2 of [`Batch`] holds 3).
pub fn pipeline_with_attention() -> FeaturePipeline {
    let mut pipeline = pipeline();
    let hist = pipeline.features.iter_mut().find(|f| f.name == "hist").unwrap();
    let mtrec_schema::Transform::MultiCategorical { pooling, attention, .. } = &mut hist.transform else {
        panic!("hist is multi-categorical")
    };
    *pooling = mtrec_schema::Pooling::Attention;
    *attention = Some(mtrec_schema::AttentionSpec { target: "item".into(), max_length: 2 });
    pipeline
}

/// Columns of a batch of 6 rows.
pub struct Batch {
    pub user: Vec<u32>,
    pub age: Vec<f32>,
    pub hist_offsets: Vec<usize>,
    pub hist: Vec<u32>,
    pub item: Vec<u32>,
    pub price: Vec<f32>,
    pub device: Vec<u32>,
    pub labels: Vec<Vec<f32>>,
    pub masks: Vec<Vec<u8>>,
}

impl Batch {
    pub fn new() -> Self {
        Self {
            user: vec![2, 3, 4, 2, 0, 1],
            age: vec![0.5, -1.0, 0.2, 1.5, 0.0, -0.3],
            hist_offsets: vec![0, 2, 2, 5, 6, 6, 7],
            hist: vec![2, 3, 4, 5, 2, 3, 5],
            item: vec![2, 3, 5, 4, 0, 2],
            price: vec![1.0, -0.5, 0.3, 0.0, 2.0, -1.2],
            device: vec![2, 3, 4, 2, 3, 4],
            labels: vec![
                vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
                vec![2.0, 0.0, 0.5, 0.0, 0.0, -1.0],
                vec![0.0, 2.0, 1.0, 1.0, 0.0, 2.0],
                vec![1.0, 1.0, 0.0, 0.0, 1.0, 0.0],
            ],
            // dwell is masked where there is no click; tier misses one label.
            masks: vec![vec![1; 6], vec![1, 0, 1, 0, 0, 1], vec![1, 1, 1, 0, 1, 1], vec![1; 6]],
        }
    }

    /// [`Batch::new`] with the targets of [`pipeline_with_product`]'s two added tasks.
    pub fn with_product() -> Self {
        let mut batch = Self::new();
        let click = (batch.labels[0].clone(), batch.masks[0].clone());
        let buy = vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let buy_mask: Vec<u8> = click.0.iter().map(|&c| u8::from(c == 1.0)).collect();
        let (product, product_mask): (Vec<f32>, Vec<u8>) =
            (0..6).map(|r| mtrec_schema::product_target([(click.0[r], click.1[r]), (buy[r], buy_mask[r])])).unzip();
        batch.labels.extend([buy, product]);
        batch.masks.extend([buy_mask, product_mask]);
        batch
    }

    pub fn data(&self) -> Vec<FeatureData<'_>> {
        vec![
            FeatureData::Ids(&self.user),
            FeatureData::Values(&self.age),
            FeatureData::Lists { offsets: &self.hist_offsets, values: &self.hist },
            FeatureData::Ids(&self.item),
            FeatureData::Values(&self.price),
            FeatureData::Ids(&self.device),
        ]
    }

    pub fn rows(&self) -> Vec<usize> {
        (0..self.user.len()).collect()
    }
}

pub fn configs() -> Vec<(&'static str, mtrec_model::ModelConfig)> {
    use mtrec_model::{
        ArchitectureConfig as A, CrossConfig, CrossStructure, LossWeighting, ModelConfig, RegressionLoss,
    };
    let base = ModelConfig { tower_layers: vec![3], ..Default::default() };
    vec![
        ("shared_bottom", ModelConfig { architecture: A::SharedBottom { layers: vec![5] }, ..base.clone() }),
        ("mmoe", ModelConfig { architecture: A::Mmoe { experts: 3, expert_layers: vec![4] }, ..base.clone() }),
        ("mmoe_deep", ModelConfig { architecture: A::Mmoe { experts: 2, expert_layers: vec![4, 3] }, ..base.clone() }),
        ("single_task", ModelConfig { architecture: A::SingleTask { layers: vec![4] }, ..base.clone() }),
        (
            "cgc",
            ModelConfig {
                architecture: A::Ple { shared_experts: 2, task_experts: 1, expert_layers: vec![4], levels: 1 },
                ..base.clone()
            },
        ),
        (
            "ple",
            ModelConfig {
                architecture: A::Ple { shared_experts: 3, task_experts: 2, expert_layers: vec![5, 4], levels: 2 },
                ..base.clone()
            },
        ),
        (
            // A large α, so that Ω's share of every gradient is well above the check's tolerance.
            "soft_sharing",
            ModelConfig { architecture: A::SoftSharing { layers: vec![4, 3], alpha: 0.5 }, ..base.clone() },
        ),
        (
            "mmoe_cross_stacked",
            ModelConfig {
                architecture: A::Mmoe { experts: 2, expert_layers: vec![4] },
                cross: Some(CrossConfig { layers: 2, rank: None, structure: CrossStructure::Stacked }),
                ..base.clone()
            },
        ),
        (
            "mmoe_cross_experts",
            ModelConfig {
                architecture: A::Mmoe { experts: 2, expert_layers: vec![4, 3] },
                cross: Some(CrossConfig { layers: 2, rank: None, structure: CrossStructure::Experts }),
                ..base.clone()
            },
        ),
        (
            "ple_cross_experts_low_rank",
            ModelConfig {
                architecture: A::Ple { shared_experts: 2, task_experts: 1, expert_layers: vec![4], levels: 2 },
                cross: Some(CrossConfig { layers: 1, rank: Some(2), structure: CrossStructure::Experts }),
                ..base.clone()
            },
        ),
        (
            "shared_bottom_cross_parallel_low_rank",
            ModelConfig {
                architecture: A::SharedBottom { layers: vec![4] },
                cross: Some(CrossConfig { layers: 2, rank: Some(2), structure: CrossStructure::Parallel }),
                ..base.clone()
            },
        ),
        (
            "uncertainty_huber",
            ModelConfig {
                architecture: A::SharedBottom { layers: vec![4] },
                loss_weighting: LossWeighting::Uncertainty,
                regression_loss: RegressionLoss::Huber { delta: 0.5 },
                ..base
            },
        ),
    ]
}
