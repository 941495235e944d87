//! Hive-style partition folders (`date=2026-01-01/country=de/part-0.parquet`), as Spark,
//! DataFusion and Polars write them: each `key=value` folder below the input's base directory
//! is a column of constant value for the rows of the files inside it.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;

/// The value Hive writes for a null partition value.
const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The `key=value` folders of `file` below `base`, outermost first, values percent-decoded.
pub fn partitions(file: &Path, base: &Path) -> Vec<(String, String)> {
    let Ok(relative) = file.strip_prefix(base) else { return Vec::new() };
    let mut folders: Vec<_> = relative.components().collect();
    folders.pop(); // the file itself
    folders
        .iter()
        .filter_map(|c| {
            let text = c.as_os_str().to_str()?;
            let (key, value) = text.split_once('=')?;
            (!key.is_empty()).then(|| (key.to_owned(), percent_decode(value)))
        })
        .collect()
}

/// Spark escapes characters such as `/`, `=` and `%` in partition values as `%XX`.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .flatten();
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The dtype of each partition key over all files: integers if every value is one, else
/// floats if every value is one, else text (as Polars infers Hive partitions).
pub(crate) fn partition_dtypes<'a>(
    files: impl IntoIterator<Item = &'a [(String, String)]>,
) -> BTreeMap<String, DataType> {
    let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for partitions in files {
        for (key, value) in partitions {
            values.entry(key).or_default().push(value);
        }
    }
    values
        .into_iter()
        .map(|(key, values)| {
            let values: Vec<&str> = values.into_iter().filter(|v| *v != NULL_PARTITION).collect();
            let dtype = if values.iter().all(|v| v.parse::<i64>().is_ok()) {
                DataType::Int64
            } else if values.iter().all(|v| v.parse::<f64>().is_ok()) {
                DataType::Float64
            } else {
                DataType::String
            };
            (key.to_owned(), dtype)
        })
        .collect()
}

/// A column of `rows` copies of a partition value, in the key's dtype.
pub(crate) fn partition_column(key: &str, value: &str, dtype: &DataType, rows: usize) -> PolarsResult<Column> {
    let name: PlSmallStr = key.into();
    if value == NULL_PARTITION {
        return Ok(Column::full_null(name, rows, dtype));
    }
    let text = Column::new_scalar(name, Scalar::new(DataType::String, AnyValue::StringOwned(value.into())), rows);
    text.cast(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_folders_below_the_base_become_typed_columns() {
        let base = Path::new("/logs");
        let a = partitions(Path::new("/logs/date=2026-01-01/hour=3/part-0.parquet"), base);
        let b = partitions(Path::new("/logs/date=2026-01-02/hour=__HIVE_DEFAULT_PARTITION__/x.parquet"), base);
        assert_eq!(a, [("date".to_owned(), "2026-01-01".to_owned()), ("hour".to_owned(), "3".to_owned())]);
        assert!(partitions(Path::new("/elsewhere/date=1/x.parquet"), base).is_empty());
        let dtypes = partition_dtypes([a.as_slice(), b.as_slice()]);
        assert_eq!(dtypes["date"], DataType::String);
        assert_eq!(dtypes["hour"], DataType::Int64);
        let hour = partition_column("hour", "3", &dtypes["hour"], 2).unwrap();
        assert_eq!(hour.i64().unwrap().get(1), Some(3));
        assert_eq!(partition_column("hour", NULL_PARTITION, &DataType::Int64, 2).unwrap().null_count(), 2);
    }

    #[test]
    fn escaped_values_are_decoded() {
        assert_eq!(percent_decode("a%2Fb%3Dc"), "a/b=c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
