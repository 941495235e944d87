//! Encoded data: the artifact ingestion hands to training, prediction, evaluation and serving.
//!
//! Ingestion writes each split as an Arrow IPC file and reads it back into an
//! [`EncodedDataset`] (`mtrec_ingest::encoded`); serving builds the same [`FeatureColumn`]s
//! from a request. The model reads both through one borrowed view, so nothing downstream of
//! ingestion needs Polars or Arrow.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the three splits of an ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The split's position in [`Split::ALL`]: an index into per-split arrays.
    pub fn index(self) -> usize {
        match self {
            Split::Train => 0,
            Split::Valid => 1,
            Split::Test => 2,
        }
    }

    /// `train`, `valid` or `test`: the split's name in files, flags and configs.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A split name that is not `train`, `valid` or `test`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown split {0:?}: use train, valid or test")]
pub struct UnknownSplit(pub String);

impl FromStr for Split {
    type Err = UnknownSplit;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Split::ALL.into_iter().find(|split| split.name() == s).ok_or_else(|| UnknownSplit(s.to_owned()))
    }
}

/// One feature's encoded values.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureColumn {
    /// One id per row.
    Ids(Vec<u32>),
    /// Ids of row `r` are `values[offsets[r]..offsets[r + 1]]`.
    Lists { offsets: Vec<usize>, values: Vec<u32> },
    /// One number per row.
    Values(Vec<f32>),
}

/// An encoded split in memory. Ids have been checked against their tables' sizes when it was
/// read, so a model can index its embedding tables with them.
#[derive(Debug, Clone)]
pub struct EncodedDataset {
    pub split: Split,
    pub rows: usize,
    /// Aligned with `pipeline.features`.
    pub features: Vec<FeatureColumn>,
    /// Aligned with `pipeline.tasks`: the label per row (class index for multiclass, 0 where
    /// masked).
    pub labels: Vec<Vec<f32>>,
    /// Aligned with `pipeline.tasks`: 1 where the label counts.
    pub masks: Vec<Vec<u8>>,
    pub user_ids: Option<Vec<String>>,
    pub item_ids: Option<Vec<String>>,
    /// Each row's position in the source.
    pub row_ids: Vec<u64>,
    /// Passthrough columns (`extra.<column>`) that are numeric.
    pub extras: BTreeMap<String, Vec<f64>>,
}

impl EncodedDataset {
    /// The labels and masks of `rows`, per task.
    pub fn targets(&self, rows: &[usize]) -> (Vec<Vec<f32>>, Vec<Vec<u8>>) {
        let labels = self.labels.iter().map(|l| rows.iter().map(|&r| l[r]).collect()).collect();
        let masks = self.masks.iter().map(|m| rows.iter().map(|&r| m[r]).collect()).collect();
        (labels, masks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parse_print_and_serialize_by_name() {
        for (k, split) in Split::ALL.into_iter().enumerate() {
            assert_eq!(split.index(), k);
            assert_eq!(split.name().parse::<Split>(), Ok(split));
            assert_eq!(serde_json::to_value(split).unwrap(), serde_json::json!(split.name()));
        }
        assert_eq!(
            "tset".parse::<Split>().unwrap_err().to_string(),
            "unknown split \"tset\": use train, valid or test"
        );
    }
}
