//! Event times: the unit of numeric timestamps, and reading a timestamp cell as seconds since
//! the Unix epoch, whichever way a log writes it.
//!
//! A typed number (a Parquet or Arrow integer or float column) is already in seconds when it
//! gets here: ingestion converts numeric timestamp columns from [`TimestampUnit`] as it reads
//! them, and date-time columns to seconds. A text cell (CSV) holds either a number in the
//! schema's unit, or a date-time: RFC 3339 / ISO 8601 with or without a fraction and an offset
//! (`2026-01-01T00:00:00Z`, `2026-01-01T00:00:00.123+02:00`), a space instead of the `T`, no
//! offset (read as UTC), or a date alone (`2026-01-01`, midnight UTC), or the schema's explicit
//! `timestamp_format`.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::value::RawValue;

/// The unit of numeric timestamps (`ids.timestamp_unit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    #[default]
    Seconds,
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

impl TimestampUnit {
    /// How many of this unit make a second.
    pub fn per_second(self) -> f64 {
        match self {
            TimestampUnit::Seconds => 1.0,
            TimestampUnit::Milliseconds => 1e3,
            TimestampUnit::Microseconds => 1e6,
            TimestampUnit::Nanoseconds => 1e9,
        }
    }
}

/// Seconds since the Unix epoch of one timestamp cell (`None` for a null); see the module docs
/// for what a cell may hold. The error says what was found and what is accepted.
pub fn timestamp_seconds(
    value: RawValue<'_>,
    unit: TimestampUnit,
    format: Option<&str>,
) -> Result<Option<f64>, String> {
    match value {
        RawValue::Null => Ok(None),
        RawValue::Int(i) => Ok(Some(i as f64)),
        RawValue::Float(f) if f.is_nan() => Ok(None),
        RawValue::Float(f) => Ok(Some(f)),
        RawValue::Bool(b) => Err(format!("cannot read the boolean {b} as a timestamp")),
        RawValue::Str(s) => {
            let text = s.trim();
            if let Ok(x) = text.parse::<f64>() {
                return Ok((!x.is_nan()).then(|| x / unit.per_second()));
            }
            if let Some(format) = format {
                return parse_with_format(text, format).map(Some).ok_or_else(|| {
                    format!("cannot parse {s:?} as a timestamp of the format {format:?} (ids.timestamp_format)")
                });
            }
            parse_date_time(text).map(Some).ok_or_else(|| {
                format!(
                    "cannot parse {s:?} as a timestamp: expected a number (in {}, ids.timestamp_unit), an RFC 3339 \
                     date-time, YYYY-MM-DD HH:MM:SS, or YYYY-MM-DD (or set ids.timestamp_format)",
                    unit_name(unit)
                )
            })
        }
    }
}

fn unit_name(unit: TimestampUnit) -> &'static str {
    match unit {
        TimestampUnit::Seconds => "seconds",
        TimestampUnit::Milliseconds => "milliseconds",
        TimestampUnit::Microseconds => "microseconds",
        TimestampUnit::Nanoseconds => "nanoseconds",
    }
}

/// Seconds (with their fraction) of a date-time written in one of the default forms.
fn parse_date_time(text: &str) -> Option<f64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(seconds(t.timestamp(), t.timestamp_subsec_nanos()));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(seconds(t.timestamp(), t.timestamp_subsec_nanos()));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            let t = t.and_utc();
            return Some(seconds(t.timestamp(), t.timestamp_subsec_nanos()));
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp() as f64)
}

/// Seconds of a date-time in an explicit `format` (chrono's strftime syntax): with an offset
/// when the format has one, UTC otherwise, a date alone at midnight.
fn parse_with_format(text: &str, format: &str) -> Option<f64> {
    if let Ok(t) = DateTime::parse_from_str(text, format) {
        return Some(seconds(t.timestamp(), t.timestamp_subsec_nanos()));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
        let t = t.and_utc();
        return Some(seconds(t.timestamp(), t.timestamp_subsec_nanos()));
    }
    let date = NaiveDate::parse_from_str(text, format).ok()?;
    Some(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp() as f64)
}

fn seconds(whole: i64, nanos: u32) -> f64 {
    whole as f64 + f64::from(nanos) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW_YEAR: f64 = 1_767_225_600.0; // 2026-01-01T00:00:00Z

    fn read(text: &str) -> Result<Option<f64>, String> {
        timestamp_seconds(RawValue::Str(text), TimestampUnit::Seconds, None)
    }

    #[test]
    fn date_times_as_logs_write_them() {
        for text in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T02:00:00+02:00",
            "2026-01-01 00:00:00",
            "2026-01-01T00:00:00",
            "2026-01-01",
            " 1767225600 ",
            "2025-12-31 19:00:00-05:00",
        ] {
            assert_eq!(read(text), Ok(Some(NEW_YEAR)), "{text}");
        }
        assert_eq!(read("2026-01-01T00:00:00.123Z"), Ok(Some(NEW_YEAR + 0.123)));
        assert_eq!(read("2026-01-01 00:00:00.5"), Ok(Some(NEW_YEAR + 0.5)));
        let err = read("01/02/2026").unwrap_err();
        assert!(
            err.contains("cannot parse \"01/02/2026\" as a timestamp") && err.contains("timestamp_format"),
            "{err}"
        );
    }

    #[test]
    fn numbers_in_the_schema_unit_and_explicit_formats() {
        let ms = timestamp_seconds(RawValue::Str("1767225600123"), TimestampUnit::Milliseconds, None);
        assert_eq!(ms, Ok(Some(NEW_YEAR + 0.123)));
        // Typed numbers were converted when the column was read.
        assert_eq!(
            timestamp_seconds(RawValue::Int(1_767_225_600), TimestampUnit::Milliseconds, None),
            Ok(Some(NEW_YEAR))
        );
        let day_first =
            timestamp_seconds(RawValue::Str("01/01/2026 00:00"), TimestampUnit::Seconds, Some("%d/%m/%Y %H:%M"));
        assert_eq!(day_first, Ok(Some(NEW_YEAR)));
        let date_only = timestamp_seconds(RawValue::Str("01.01.2026"), TimestampUnit::Seconds, Some("%d.%m.%Y"));
        assert_eq!(date_only, Ok(Some(NEW_YEAR)));
        assert_eq!(timestamp_seconds(RawValue::Null, TimestampUnit::Seconds, None), Ok(None));
        assert!(timestamp_seconds(RawValue::Bool(true), TimestampUnit::Seconds, None).is_err());
    }
}
