//! One raw cell, whatever it came from (a Polars column at ingestion, a JSON field at serving),
//! and the canonical forms every transform reads: its category key and its number.
//!
//! Both paths call these functions, so a category or number is encoded identically in both.

use std::borrow::Cow;

/// A raw cell value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue<'a> {
    Null,
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// A value that is not a number where a number is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotANumber(pub String);

impl<'a> RawValue<'a> {
    /// Converts a JSON scalar; arrays and objects are not scalars (`None`).
    pub fn from_json(value: &'a serde_json::Value) -> Option<Self> {
        Some(match value {
            serde_json::Value::Null => RawValue::Null,
            serde_json::Value::Bool(b) => RawValue::Bool(*b),
            serde_json::Value::String(s) => RawValue::Str(s),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => RawValue::Int(i),
                None => RawValue::Float(n.as_f64()?),
            },
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => return None,
        })
    }

    pub fn is_null(&self) -> bool {
        matches!(self, RawValue::Null) || matches!(self, RawValue::Float(f) if f.is_nan())
    }

    /// The text a category is keyed by: strings as they are (but `true` and `false` in any case
    /// as `true` and `false`), integers in decimal, floats in their shortest round-trip form with
    /// integral values written as integers (`1.0` -> `"1"`), booleans as `true` and `false`. So a
    /// CSV cell `1`, a Parquet integer 1 and a JSON number 1.0 are the same category, and so are
    /// a CSV cell `True` (as pandas writes it) and a Parquet boolean. `None` for null.
    pub fn category_key(&self) -> Option<Cow<'a, str>> {
        match *self {
            RawValue::Null => None,
            RawValue::Str(s) => Some(boolean_word(s).map_or(Cow::Borrowed(s), Cow::Borrowed)),
            RawValue::Int(i) => Some(Cow::Owned(i.to_string())),
            RawValue::Float(f) if f.is_nan() => None,
            RawValue::Float(f) => Some(Cow::Owned(float_key(f))),
            RawValue::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
        }
    }

    /// Calls `f` with the category key (as [`RawValue::category_key`]) without allocating for
    /// integers: the hot path of fitting and encoding.
    pub fn with_key<R>(&self, f: impl FnOnce(Option<&str>) -> R) -> R {
        match *self {
            RawValue::Null => f(None),
            RawValue::Str(s) => f(Some(boolean_word(s).unwrap_or(s))),
            RawValue::Int(i) => f(Some(itoa::Buffer::new().format(i))),
            RawValue::Float(x) if x.is_nan() => f(None),
            RawValue::Float(x) if x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 => {
                f(Some(itoa::Buffer::new().format(x as i64)))
            }
            RawValue::Float(x) => f(Some(&format!("{x}"))),
            RawValue::Bool(b) => f(Some(if b { "true" } else { "false" })),
        }
    }

    /// The value as a number; text is parsed (surrounding whitespace ignored), booleans and the
    /// words `true` and `false` in any case are 1 and 0. `Ok(None)` for null (and NaN).
    pub fn as_number(&self) -> Result<Option<f64>, NotANumber> {
        match *self {
            RawValue::Null => Ok(None),
            RawValue::Int(i) => Ok(Some(i as f64)),
            RawValue::Float(f) if f.is_nan() => Ok(None),
            RawValue::Float(f) => Ok(Some(f)),
            RawValue::Bool(b) => Ok(Some(if b { 1.0 } else { 0.0 })),
            RawValue::Str(s) => {
                let t = s.trim();
                match t.parse::<f64>() {
                    Ok(f) if f.is_nan() => Ok(None),
                    Ok(f) => Ok(Some(f)),
                    Err(_) => match boolean_word(t) {
                        Some(word) => Ok(Some(if word == "true" { 1.0 } else { 0.0 })),
                        None => Err(NotANumber(s.to_owned())),
                    },
                }
            }
        }
    }
}

/// `"true"` or `"false"` when `s` is that word in any case (`True`, `FALSE`), else `None`.
pub fn boolean_word(s: &str) -> Option<&'static str> {
    if s.eq_ignore_ascii_case("true") {
        Some("true")
    } else if s.eq_ignore_ascii_case("false") {
        Some("false")
    } else {
        None
    }
}

/// Canonical text of a float: integral values without a fraction, others shortest round-trip.
pub fn float_key(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// Canonical text of a JSON scalar given in a schema (label values, mask values).
pub fn json_key(value: &serde_json::Value) -> Option<String> {
    RawValue::from_json(value).and_then(|v| v.category_key().map(Cow::into_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_keys_agree_across_sources() {
        assert_eq!(RawValue::Str("1").category_key().unwrap(), "1");
        assert_eq!(RawValue::Int(1).category_key().unwrap(), "1");
        assert_eq!(RawValue::Float(1.0).category_key().unwrap(), "1");
        assert_eq!(RawValue::Float(-3.0).category_key().unwrap(), "-3");
        assert_eq!(RawValue::Float(0.25).category_key().unwrap(), "0.25");
        assert_eq!(RawValue::Float(1e300).category_key().unwrap(), format!("{}", 1e300));
        assert_eq!(RawValue::Bool(true).category_key().unwrap(), "true");
        assert_eq!(RawValue::Float(f64::NAN).category_key(), None);
        for v in [RawValue::Int(-12), RawValue::Float(3.0), RawValue::Float(0.5), RawValue::Str("x"), RawValue::Null] {
            assert_eq!(v.with_key(|k| k.map(str::to_owned)), v.category_key().map(|k| k.into_owned()));
        }
        assert_eq!(RawValue::Null.category_key(), None);
        let json: serde_json::Value = serde_json::json!(2.0);
        assert_eq!(json_key(&json).unwrap(), "2");
    }

    #[test]
    fn boolean_words_in_any_case_are_booleans() {
        for (text, key, number) in [("True", "true", 1.0), ("FALSE", "false", 0.0), ("true", "true", 1.0)] {
            assert_eq!(RawValue::Str(text).category_key().unwrap(), key);
            assert_eq!(RawValue::Str(text).with_key(|k| k.map(str::to_owned)).unwrap(), key);
            assert_eq!(RawValue::Str(text).as_number(), Ok(Some(number)));
            assert_eq!(RawValue::Str(text).category_key(), RawValue::Bool(number == 1.0).category_key());
        }
        assert_eq!(RawValue::Str("Truth").category_key().unwrap(), "Truth");
    }

    #[test]
    fn numbers_parse_from_text() {
        assert_eq!(RawValue::Str(" 73 ").as_number(), Ok(Some(73.0)));
        assert_eq!(RawValue::Str("1e3").as_number(), Ok(Some(1000.0)));
        assert_eq!(RawValue::Bool(true).as_number(), Ok(Some(1.0)));
        assert_eq!(RawValue::Str("abc").as_number(), Err(NotANumber("abc".into())));
        assert_eq!(RawValue::Null.as_number(), Ok(None));
    }
}
