//! Assigning every row to train, valid or test.

use mtrec_schema::{DatasetSchema, Fractions, Split, SplitMethod};

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

/// Row indices of each split, in source order.
pub fn assign(schema: &DatasetSchema, table: &RawTable) -> Result<[Vec<u32>; 3], IngestError> {
    let n = table.df.height();
    let mut out: [Vec<u32>; 3] = Default::default();
    let mut push = |row: usize, s: Split| out[s.index()].push(row as u32);
    let spec = &schema.split;
    match spec.method {
        SplitMethod::Files => {
            for f in &table.files {
                let s = f.split.expect("files split tags every file");
                (f.start..f.start + f.rows).for_each(|r| push(r, s));
            }
        }
        SplitMethod::Random => {
            let fr = spec.fractions.expect("validated");
            (0..n).for_each(|r| push(r, by_fraction(unit(&(r as u64).to_le_bytes(), spec.seed), &fr)));
        }
        SplitMethod::User => {
            let fr = spec.fractions.expect("validated");
            let column = schema.ids.user.as_deref().expect("validated");
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
            let (valid_from, test_from) = schema.time_cutoffs()?;
            let column = schema.ids.timestamp.as_deref().expect("validated");
            let cells = Cells::of(table, column)?;
            for r in 0..n {
                let t = table
                    .text
                    .apply(cells.get(r))
                    .as_number()
                    .map_err(|e| table.cell_error(r, column, format!("cannot parse {:?} as a timestamp", e.0)))?
                    .ok_or_else(|| table.cell_error(r, column, "the timestamp is null"))?;
                push(
                    r,
                    if t < valid_from {
                        Split::Train
                    } else if t < test_from {
                        Split::Valid
                    } else {
                        Split::Test
                    },
                );
            }
        }
    }
    Ok(out)
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
