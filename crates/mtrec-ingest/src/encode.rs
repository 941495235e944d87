//! Encoding the rows of one split through the fitted pipeline into an Arrow-ready DataFrame.
//! Every cell goes through [`mtrec_schema::Encoder`], the same code that encodes a JSON record
//! at serving time.

use std::collections::HashMap;

use mtrec_schema::{columns, EncodedKind, EncodedValue, Encoder, Lookup, RawValue, Transform};
use polars::prelude::*;
use rayon::prelude::*;

use crate::cells::Cells;
use crate::error::IngestError;
use crate::source::RawTable;

/// Counts gathered while encoding one feature of one split.
#[derive(Debug, Default, Clone, Copy)]
pub struct FeatureCounts {
    pub rows: usize,
    pub null_rows: usize,
    /// Categorical values (tokens for multi-categorical) looked up, and how many were OOV.
    pub values: usize,
    pub oov: usize,
    /// Numbers that were infinite or beyond `f32`'s range, encoded like nulls.
    pub non_finite: usize,
}

/// Counts gathered while encoding one task of one split.
#[derive(Debug, Default, Clone)]
pub struct TaskCounts {
    pub labeled: usize,
    pub label_sum: f64,
    /// Multiclass: labeled rows per class.
    pub per_class: Vec<usize>,
}

/// What the report needs of an encoded split.
#[derive(Debug, Clone, Default)]
pub struct SplitSummary {
    pub rows: usize,
    pub features: Vec<FeatureCounts>,
    pub tasks: Vec<TaskCounts>,
}

impl SplitSummary {
    /// The counts of a split of no rows.
    pub fn empty(pipeline: &mtrec_schema::FeaturePipeline) -> Self {
        SplitSummary {
            rows: 0,
            features: vec![FeatureCounts::default(); pipeline.features.len()],
            tasks: pipeline
                .tasks
                .iter()
                .map(|t| TaskCounts { per_class: vec![0; t.classes.len()], ..Default::default() })
                .collect(),
        }
    }

    /// Adds the counts of another chunk of the same split.
    pub fn add(&mut self, other: SplitSummary) {
        self.rows += other.rows;
        for (a, b) in self.features.iter_mut().zip(other.features) {
            a.rows += b.rows;
            a.null_rows += b.null_rows;
            a.values += b.values;
            a.oov += b.oov;
            a.non_finite += b.non_finite;
        }
        for (a, b) in self.tasks.iter_mut().zip(other.tasks) {
            a.labeled += b.labeled;
            a.label_sum += b.label_sum;
            for (x, y) in a.per_class.iter_mut().zip(b.per_class) {
                *x += y;
            }
        }
    }
}

/// One encoded split.
#[derive(Debug)]
pub struct EncodedSplit {
    pub df: DataFrame,
    pub summary: SplitSummary,
}

fn cell_err(table: &RawTable, row: usize, e: mtrec_schema::CellError) -> IngestError {
    table.cell_error(row, &e.column, e.message)
}

/// Encodes feature `f` over `rows`. With `null_rows`, also pushes there, per row, whether its
/// cell read as null (a null, a null value of the schema, NaN), which serving needs to look such
/// features up in its feature tables.
pub(crate) fn encode_feature(
    encoder: &Encoder,
    table: &RawTable,
    cells: &Cells,
    f: usize,
    rows: &[u32],
    mut null_rows: Option<&mut Vec<bool>>,
) -> Result<(Column, FeatureCounts), IngestError> {
    let feature = &encoder.pipeline().features[f];
    let name = PlSmallStr::from(feature.name.as_str());
    let mut counts = FeatureCounts { rows: rows.len(), ..Default::default() };
    let mut tally = |counts: &mut FeatureCounts, lookup: Lookup, n_values: usize| {
        if let Some(null_rows) = null_rows.as_deref_mut() {
            null_rows.push(lookup == Lookup::Null);
        }
        match lookup {
            Lookup::Null => counts.null_rows += 1,
            Lookup::Oov => counts.oov += 1,
            Lookup::NonFinite => counts.non_finite += 1,
            Lookup::Known => {}
        }
        counts.values += n_values;
    };
    let column: Column = match feature.encoded_kind() {
        EncodedKind::Id => {
            let mut ids = Vec::with_capacity(rows.len());
            for &r in rows {
                let (v, lookup) =
                    encoder.encode_scalar(f, cells.get(r as usize)).map_err(|e| cell_err(table, r as usize, e))?;
                let EncodedValue::Id(id) = v else { unreachable!("an id feature encodes to an id") };
                let counted =
                    usize::from(matches!(feature.transform, Transform::Categorical { .. }) && lookup != Lookup::Null);
                tally(&mut counts, lookup, counted);
                ids.push(id);
            }
            Series::new(name, ids).into()
        }
        EncodedKind::Value => {
            let mut values = Vec::with_capacity(rows.len());
            for &r in rows {
                let (v, lookup) =
                    encoder.encode_scalar(f, cells.get(r as usize)).map_err(|e| cell_err(table, r as usize, e))?;
                tally(&mut counts, lookup, 0);
                let EncodedValue::Value(x) = v else { unreachable!("a numeric feature encodes to a value") };
                values.push(x);
            }
            Series::new(name, values).into()
        }
        EncodedKind::IdList => {
            let mut builder =
                ListPrimitiveChunkedBuilder::<UInt32Type>::new(name, rows.len(), rows.len() * 4, DataType::UInt32);
            for &r in rows {
                let r = r as usize;
                let (ids, lookup) = if cells.is_list() {
                    match cells.tokens(r) {
                        None => (vec![mtrec_schema::NULL_ID], Lookup::Null),
                        Some(tokens) => {
                            let raw: Vec<RawValue<'_>> = tokens
                                .iter()
                                .map(|t| t.as_deref().map_or(RawValue::Null, |s| encoder.pipeline().text.cell(s)))
                                .collect();
                            encoder.encode_tokens(f, raw.into_iter())
                        }
                    }
                } else {
                    let (v, lookup) = encoder.encode_scalar(f, cells.get(r)).map_err(|e| cell_err(table, r, e))?;
                    let EncodedValue::Ids(ids) = v else { unreachable!("a multi-categorical feature encodes to ids") };
                    (ids, lookup)
                };
                // Out-of-vocabulary is counted per token here, not per row.
                let oov_tokens = ids.iter().filter(|&&id| id == mtrec_schema::OOV_ID).count();
                if lookup == Lookup::Null {
                    tally(&mut counts, Lookup::Null, 0);
                } else {
                    tally(&mut counts, Lookup::Known, ids.len());
                    counts.oov += oov_tokens;
                }
                builder.append_slice(&ids);
            }
            builder.finish().into_series().into()
        }
    };
    Ok((column, counts))
}

/// Encodes the rows `rows` (positions in `table`, in order) into one split's frame.
pub fn encode_split(
    encoder: &Encoder,
    table: &RawTable,
    cells: &HashMap<String, Cells>,
    rows: &[u32],
) -> Result<EncodedSplit, IngestError> {
    let pipeline = encoder.pipeline();
    let encoded: Vec<(Column, FeatureCounts)> = (0..pipeline.features.len())
        .into_par_iter()
        .map(|f| encode_feature(encoder, table, &cells[&pipeline.features[f].column], f, rows, None))
        .collect::<Result<_, _>>()?;
    let mut out_columns: Vec<Column> = Vec::new();
    let mut feature_counts = Vec::new();
    for (c, n) in encoded {
        out_columns.push(c);
        feature_counts.push(n);
    }

    // Tasks read from columns are encoded in parallel; a product task then combines its
    // factors, which come before it.
    let mut targets: Vec<(Vec<f32>, Vec<u8>)> = (0..pipeline.tasks.len())
        .into_par_iter()
        .map(|t| match pipeline.tasks[t].label {
            Some(_) => encode_task(encoder, table, cells, t, rows),
            None => Ok((Vec::new(), Vec::new())),
        })
        .collect::<Result<_, _>>()?;
    for t in 0..pipeline.tasks.len() {
        let factors = pipeline.factors(t);
        if !factors.is_empty() {
            targets[t] = (0..rows.len())
                .map(|r| mtrec_schema::product_target(factors.iter().map(|&f| (targets[f].0[r], targets[f].1[r]))))
                .unzip();
        }
    }
    let mut task_counts = Vec::new();
    for (task, (labels, masks)) in pipeline.tasks.iter().zip(targets) {
        task_counts.push(task_counts_of(task.classes.len(), &labels, &masks));
        out_columns.push(Series::new(columns::label(&task.name).into(), labels).into());
        out_columns.push(Series::new(columns::mask(&task.name).into(), masks).into());
    }

    for (name, column) in [(columns::USER_ID, &pipeline.ids.user), (columns::ITEM_ID, &pipeline.ids.item)] {
        if let Some(column) = column {
            let c = &cells[column];
            let ids: StringChunked = rows
                .iter()
                .map(|&r| pipeline.text.apply(c.get(r as usize)).category_key())
                .collect::<Vec<_>>()
                .iter()
                .map(|k| k.as_deref())
                .collect();
            out_columns.push(ids.with_name(name.into()).into_series().into());
        }
    }
    if let Some(column) = &pipeline.ids.timestamp {
        let c = &cells[column];
        let (unit, format) =
            (pipeline.ids.timestamp_unit.unwrap_or_default(), pipeline.ids.timestamp_format.as_deref());
        let mut ts = Vec::with_capacity(rows.len());
        for &r in rows {
            let v = mtrec_schema::timestamp_seconds(pipeline.text.apply(c.get(r as usize)), unit, format)
                .map_err(|message| table.cell_error(r as usize, column, message))?;
            ts.push(v);
        }
        out_columns.push(Series::new(columns::TIMESTAMP.into(), ts).into());
    }
    let row_ids: Vec<u64> = rows.iter().map(|&r| table.row_id(r as usize)).collect();
    out_columns.push(Series::new(columns::ROW.into(), row_ids).into());

    if !pipeline.passthrough.is_empty() {
        let idx = IdxCa::from_vec("idx".into(), rows.iter().map(|&r| r as IdxSize).collect());
        for column in &pipeline.passthrough {
            let polars = |source| IngestError::Polars { what: format!("passthrough column {column:?}"), source };
            let s = table.df.column(column).map_err(polars)?.as_materialized_series();
            let taken = s.take(&idx).map_err(polars)?;
            out_columns.push(taken.with_name(columns::extra(column).into()).into());
        }
    }
    let df = DataFrame::new(rows.len(), out_columns)
        .map_err(|source| IngestError::Polars { what: "assembling the encoded columns".to_owned(), source })?;
    Ok(EncodedSplit { df, summary: SplitSummary { rows: rows.len(), features: feature_counts, tasks: task_counts } })
}

/// The labels and masks of task `t` (which has a label column) over `rows`.
fn encode_task(
    encoder: &Encoder,
    table: &RawTable,
    cells: &HashMap<String, Cells>,
    t: usize,
    rows: &[u32],
) -> Result<(Vec<f32>, Vec<u8>), IngestError> {
    let task = &encoder.pipeline().tasks[t];
    let label_cells = &cells[&task.label.as_ref().expect("a task read from a column").column];
    let mask_cells = task.mask.as_ref().map(|m| &cells[&m.column]);
    let mut labels = Vec::with_capacity(rows.len());
    let mut masks = Vec::with_capacity(rows.len());
    for &r in rows {
        let r = r as usize;
        let label = encoder.label(t, label_cells.get(r)).map_err(|e| cell_err(table, r, e))?;
        let holds = match mask_cells {
            Some(c) => encoder.mask_holds(t, c.get(r)).map_err(|e| cell_err(table, r, e))?,
            None => true,
        };
        let (y, m) = match label {
            Some(y) if holds => (y, 1u8),
            _ => (0.0, 0u8),
        };
        labels.push(y);
        masks.push(m);
    }
    Ok((labels, masks))
}

/// A task's labeled rows, their label sum and (multiclass) rows per class.
fn task_counts_of(classes: usize, labels: &[f32], masks: &[u8]) -> TaskCounts {
    let mut counts = TaskCounts { per_class: vec![0; classes], ..Default::default() };
    for (&y, _) in labels.iter().zip(masks).filter(|(_, &m)| m != 0) {
        counts.labeled += 1;
        counts.label_sum += f64::from(y);
        if let Some(c) = counts.per_class.get_mut(y as usize) {
            *c += 1;
        }
    }
    counts
}
