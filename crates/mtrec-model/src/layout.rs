//! Where each feature sits in the model's input row, and which columns each scope sees.
//!
//! The row is laid out side by side: user features, then item features, then context
//! features; within a side, embeddings (in pipeline order) and then numeric values. A `user`
//! task therefore reads a prefix of the row and an `item` task the block after it.

use std::ops::Range;

use mtrec_schema::{FeaturePipeline, Pooling, Scope, Side, Transform};

use crate::error::ModelError;

/// One feature's place in the input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Index in `pipeline.features`.
    pub feature: usize,
    pub offset: usize,
    pub width: usize,
    pub source: SlotSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SlotSource {
    /// Rows of embedding table `table`; lists are pooled.
    Embedding { table: usize, pooling: Option<Pooling> },
    /// A list's first `length` ids, one row of table `table` each (zeros past the list's end),
    /// then `length` mask columns (1 where a position holds an id): `length x (dim + 1)`
    /// columns, pooled in the forward pass by attention against the embedding of feature
    /// `target` ([`crate::attention`]).
    Sequence { table: usize, length: usize, target: usize },
    /// The numeric value itself.
    Value,
}

/// The input row layout.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLayout {
    pub slots: Vec<Slot>,
    pub width: usize,
    user: Range<usize>,
    item: Range<usize>,
}

impl InputLayout {
    /// `table_of(feature)` gives the embedding table index of a feature with one.
    pub fn new(pipeline: &FeaturePipeline, table_of: impl Fn(usize) -> Option<usize>) -> Self {
        let mut slots = Vec::new();
        let mut offset = 0;
        let mut ranges = Vec::new();
        for side in [Side::User, Side::Item, Side::Context] {
            let start = offset;
            for pass_embeddings in [true, false] {
                for (i, f) in pipeline.features.iter().enumerate() {
                    if f.side != side {
                        continue;
                    }
                    let (width, source) = match (&f.transform, f.embedding_dim(), table_of(i)) {
                        (Transform::Numeric { .. }, _, _) => (1, SlotSource::Value),
                        (Transform::MultiCategorical { attention: Some(a), .. }, Some(d), Some(t)) => {
                            let target = pipeline
                                .features
                                .iter()
                                .position(|g| g.name == a.target)
                                .expect("validated: the attention target is a feature");
                            (a.max_length * (d + 1), SlotSource::Sequence { table: t, length: a.max_length, target })
                        }
                        (Transform::MultiCategorical { pooling, .. }, Some(d), Some(t)) => {
                            (d, SlotSource::Embedding { table: t, pooling: Some(*pooling) })
                        }
                        (_, Some(d), Some(t)) => (d, SlotSource::Embedding { table: t, pooling: None }),
                        _ => unreachable!("every categorical feature has a table"),
                    };
                    if matches!(source, SlotSource::Embedding { .. } | SlotSource::Sequence { .. }) == pass_embeddings {
                        slots.push(Slot { feature: i, offset, width, source });
                        offset += width;
                    }
                }
            }
            ranges.push(start..offset);
        }
        Self { slots, width: offset, user: ranges[0].clone(), item: ranges[1].clone() }
    }

    #[cfg(test)]
    pub(crate) fn from_slots(slots: Vec<Slot>, width: usize) -> Self {
        Self { slots, width, user: 0..0, item: 0..0 }
    }

    /// Column ranges of every (user-side, item-side) pair of embedding slots of equal width:
    /// the operands of the user-item dot interactions.
    pub fn user_item_pairs(&self) -> Vec<(Range<usize>, Range<usize>)> {
        let emb = |r: &Range<usize>| -> Vec<Range<usize>> {
            self.slots
                .iter()
                .filter(|s| matches!(s.source, SlotSource::Embedding { .. }) && r.contains(&s.offset))
                .map(|s| s.offset..s.offset + s.width)
                .collect()
        };
        let (users, items) = (emb(&self.user), emb(&self.item));
        let mut out = Vec::new();
        for u in &users {
            for i in &items {
                if u.len() == i.len() {
                    out.push((u.clone(), i.clone()));
                }
            }
        }
        out
    }

    /// The columns a task of `scope` sees.
    pub fn scope_range(&self, scope: Scope) -> Range<usize> {
        match scope {
            Scope::Pair => 0..self.width,
            Scope::User => self.user.clone(),
            Scope::Item => self.item.clone(),
        }
    }

    /// Fails when a scope that has tasks sees no feature.
    pub fn check_scope(&self, scope: Scope, task: &str) -> Result<(), ModelError> {
        if self.scope_range(scope).is_empty() {
            return Err(ModelError::Config(format!(
                "task {task:?} has scope {scope:?} but the pipeline has no feature on that side"
            )));
        }
        Ok(())
    }
}
