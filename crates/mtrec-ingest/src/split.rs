//! Assigning every row to train, valid or test.

use mtrec_schema::{timestamp_seconds, DatasetSchema, Fractions, Split, SplitMethod, TimestampUnit};

use crate::cells::Cells;
use crate::error::IngestError;
use crate::source::RawTable;

/// A uniform number in [0, 1) from a seeded hash: stable across runs, platforms and row order.
fn unit(bytes: &[u8], seed: u64) -> f64 {
    (xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed) >> 11) as f64 / (1u64 << 53) as f64
}

fn by_fraction(u: f64, f: &Fractions) -> Split {
    if u < f.train {
        Split::Train
    } else if u < f.train + f.valid {
        Split::Valid
    } else {
        Split::Test
    }
}

/// Assigns rows to splits batch by batch; a row's split depends on the row alone (its position,
/// its user, its time or its file), never on the batches around it.
#[derive(Debug)]
pub struct Splitter<'a> {
    schema: &'a DatasetSchema,
    /// Time split: `valid_from` and `test_from`, in seconds.
    cutoffs: Option<(f64, f64)>,
    /// Time split: the first and last timestamp seen.
    seen: (f64, f64),
}

impl<'a> Splitter<'a> {
    pub fn new(schema: &'a DatasetSchema) -> Result<Self, IngestError> {
        let cutoffs = match schema.split.method {
            SplitMethod::Time => Some(schema.time_cutoffs()?),
            _ => None,
        };
        Ok(Splitter { schema, cutoffs, seen: (f64::INFINITY, f64::NEG_INFINITY) })
    }

    /// The rows of `table` in each split, as positions in the table, in order.
    pub fn assign(&mut self, table: &RawTable) -> Result<[Vec<u32>; 3], IngestError> {
        let n = table.rows();
        let mut out: [Vec<u32>; 3] = Default::default();
        let mut push = |row: usize, s: Split| out[s.index()].push(row as u32);
        let spec = &self.schema.split;
        match spec.method {
            SplitMethod::Files => {
                let s = table.split.expect("files split tags every file");
                (0..n).for_each(|r| push(r, s));
            }
            SplitMethod::Random => {
                let fr = spec.fractions.expect("validated");
                (0..n).for_each(|r| push(r, by_fraction(unit(&table.row_id(r).to_le_bytes(), spec.seed), &fr)));
            }
            SplitMethod::User => {
                let fr = spec.fractions.expect("validated");
                let column = self.schema.ids.user.as_deref().expect("validated");
                let cells = Cells::of(table, column)?;
                for r in 0..n {
                    let key = table
                        .text
                        .apply(cells.get(r))
                        .category_key()
                        .ok_or_else(|| table.cell_error(r, column, "the user id is null"))?;
                    push(r, by_fraction(unit(key.as_bytes(), spec.seed), &fr));
                }
            }
            SplitMethod::Time => {
                let (valid_from, test_from) = self.cutoffs.expect("set for a time split");
                let ids = &self.schema.ids;
                let column = ids.timestamp.as_deref().expect("validated");
                let (unit, format) = (ids.timestamp_unit.unwrap_or_default(), ids.timestamp_format.as_deref());
                let cells = Cells::of(table, column)?;
                for r in 0..n {
                    let t = timestamp_seconds(table.text.apply(cells.get(r)), unit, format)
                        .map_err(|message| table.cell_error(r, column, message))?
                        .ok_or_else(|| table.cell_error(r, column, "the timestamp is null"))?;
                    self.seen = (self.seen.0.min(t), self.seen.1.max(t));
                    let split = if t < valid_from {
                        Split::Train
                    } else if t < test_from {
                        Split::Valid
                    } else {
                        Split::Test
                    };
                    push(r, split);
                }
            }
        }
        Ok(out)
    }

    /// Once every row is assigned, with the rows per split: what a reader should know (a time
    /// split that leaves the valid or test split empty says why). A time split that leaves the
    /// train split empty is an error that says why.
    pub fn finish(&self, rows: [u64; 3]) -> Result<Vec<String>, IngestError> {
        let mut warnings = Vec::new();
        let Some((valid_from, test_from)) = self.cutoffs else { return Ok(warnings) };
        let empty: Vec<Split> = Split::ALL.into_iter().filter(|s| rows[s.index()] == 0).collect();
        if empty.is_empty() {
            return Ok(warnings);
        }
        let unit = self.schema.ids.timestamp_unit.unwrap_or_default();
        let why = time_range_note(self.seen.0, self.seen.1, valid_from, test_from, unit);
        if empty.contains(&Split::Train) {
            return Err(IngestError::Data(format!("the time split leaves the train split empty: {why}")));
        }
        for split in empty {
            warnings.push(format!("the time split leaves the {split} split empty: {why}"));
        }
        Ok(warnings)
    }
}

/// The timestamps seen and the cut-offs, as dates, with a hint when the numbers look like
/// another unit than the schema's.
fn time_range_note(first: f64, last: f64, valid_from: f64, test_from: f64, unit: TimestampUnit) -> String {
    let date = |t: f64| {
        chrono::DateTime::from_timestamp(t.floor() as i64, 0)
            .map_or_else(|| format!("{t} s"), |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let mut note = format!(
        "timestamps run from {} to {}, valid_from is {} and test_from {}",
        date(first),
        date(last),
        date(valid_from),
        date(test_from)
    );
    // 10^11 seconds is after the year 5000: such numbers are finer units read as seconds.
    if unit == TimestampUnit::Seconds && last > 1e11 {
        note.push_str("; the timestamps look like milliseconds or finer: set ids.timestamp_unit");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_uniform_enough_and_stable() {
        let n = 100_000u64;
        let train = (0..n).filter(|r| unit(&r.to_le_bytes(), 7) < 0.6).count() as f64 / n as f64;
        assert!((train - 0.6).abs() < 0.01, "{train}");
        assert_eq!(unit(&5u64.to_le_bytes(), 7), unit(&5u64.to_le_bytes(), 7));
        assert_ne!(unit(&5u64.to_le_bytes(), 7), unit(&5u64.to_le_bytes(), 8));
    }
}
