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

impl FeatureColumn {
    /// Appends `other`'s rows (of the same kind; a mismatch is a bug of the caller).
    fn append(&mut self, other: FeatureColumn) {
        match (self, other) {
            (FeatureColumn::Ids(a), FeatureColumn::Ids(b)) => a.extend(b),
            (FeatureColumn::Values(a), FeatureColumn::Values(b)) => a.extend(b),
            (FeatureColumn::Lists { offsets, values }, FeatureColumn::Lists { offsets: o, values: v }) => {
                let base = values.len();
                offsets.extend(o.iter().skip(1).map(|x| x + base));
                values.extend(v);
            }
            _ => panic!("appending encoded columns of different kinds"),
        }
    }
}

impl EncodedDataset {
    /// Appends `other`'s rows: one dataset of two shards of the same split and pipeline.
    pub fn append(&mut self, other: EncodedDataset) {
        self.rows += other.rows;
        for (a, b) in self.features.iter_mut().zip(other.features) {
            a.append(b);
        }
        for (a, b) in self.labels.iter_mut().zip(other.labels) {
            a.extend(b);
        }
        for (a, b) in self.masks.iter_mut().zip(other.masks) {
            a.extend(b);
        }
        for (a, b) in [(&mut self.user_ids, other.user_ids), (&mut self.item_ids, other.item_ids)] {
            if let (Some(a), Some(b)) = (a.as_mut(), b) {
                a.extend(b);
            }
        }
        self.row_ids.extend(other.row_ids);
        for (name, values) in other.extras {
            self.extras.entry(name).or_default().extend(values);
        }
    }

    /// The rows at `positions`, in that order.
    pub fn take(&self, positions: &[usize]) -> EncodedDataset {
        let features = self
            .features
            .iter()
            .map(|f| match f {
                FeatureColumn::Ids(ids) => FeatureColumn::Ids(positions.iter().map(|&r| ids[r]).collect()),
                FeatureColumn::Values(v) => FeatureColumn::Values(positions.iter().map(|&r| v[r]).collect()),
                FeatureColumn::Lists { offsets, values } => {
                    let mut out = FeatureColumn::Lists { offsets: vec![0], values: Vec::new() };
                    if let FeatureColumn::Lists { offsets: o, values: v } = &mut out {
                        for &r in positions {
                            v.extend_from_slice(&values[offsets[r]..offsets[r + 1]]);
                            o.push(v.len());
                        }
                    }
                    out
                }
            })
            .collect();
        let pick = |column: &Vec<String>| positions.iter().map(|&r| column[r].clone()).collect();
        EncodedDataset {
            split: self.split,
            rows: positions.len(),
            features,
            labels: self.labels.iter().map(|l| positions.iter().map(|&r| l[r]).collect()).collect(),
            masks: self.masks.iter().map(|m| positions.iter().map(|&r| m[r]).collect()).collect(),
            user_ids: self.user_ids.as_ref().map(pick),
            item_ids: self.item_ids.as_ref().map(pick),
            row_ids: positions.iter().map(|&r| self.row_ids[r]).collect(),
            extras: self.extras.iter().map(|(k, v)| (k.clone(), positions.iter().map(|&r| v[r]).collect())).collect(),
        }
    }

    /// The positions of the rows in the order of their row ids (their order in the source).
    pub fn source_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows).collect();
        order.sort_unstable_by_key(|&r| self.row_ids[r]);
        order
    }

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

    fn part(rows: &[u64], lists: &[&[u32]]) -> EncodedDataset {
        let mut offsets = vec![0];
        let mut values = Vec::new();
        for l in lists {
            values.extend_from_slice(l);
            offsets.push(values.len());
        }
        EncodedDataset {
            split: Split::Train,
            rows: rows.len(),
            features: vec![
                FeatureColumn::Ids(rows.iter().map(|&r| r as u32 + 2).collect()),
                FeatureColumn::Lists { offsets, values },
            ],
            labels: vec![rows.iter().map(|&r| r as f32).collect()],
            masks: vec![vec![1; rows.len()]],
            user_ids: Some(rows.iter().map(|r| format!("u{r}")).collect()),
            item_ids: None,
            row_ids: rows.to_vec(),
            extras: BTreeMap::from([("x".to_owned(), rows.iter().map(|&r| r as f64).collect())]),
        }
    }

    #[test]
    fn appended_parts_read_as_one_and_sort_back_to_source_order() {
        let mut all = part(&[7, 2], &[&[5], &[]]);
        all.append(part(&[0, 9, 4], &[&[6, 7], &[8], &[]]));
        assert_eq!(all.rows, 5);
        assert_eq!(all.row_ids, [7, 2, 0, 9, 4]);
        assert_eq!(all.features[0], FeatureColumn::Ids(vec![9, 4, 2, 11, 6]));
        assert_eq!(all.features[1], FeatureColumn::Lists { offsets: vec![0, 1, 1, 3, 4, 4], values: vec![5, 6, 7, 8] });
        assert_eq!(all.user_ids.as_ref().unwrap()[3], "u9");
        assert_eq!(all.extras["x"], [7.0, 2.0, 0.0, 9.0, 4.0]);
        assert_eq!(all.source_order(), [2, 1, 4, 0, 3]);
        let first = all.take(&all.source_order()[..2]);
        assert_eq!(first.row_ids, [0, 2]);
        assert_eq!(first.features[1], FeatureColumn::Lists { offsets: vec![0, 2, 2], values: vec![6, 7] });
        assert_eq!((first.labels[0].as_slice(), first.extras["x"].as_slice()), (&[0.0, 2.0][..], &[0.0, 2.0][..]));
    }

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
