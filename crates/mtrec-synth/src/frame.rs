//! The events as a Polars frame, one column per field of the log.

use polars::prelude::*;

use crate::constants::*;
use crate::error::SynthError;
use crate::events::Events;
use crate::world::{Items, Users};

pub(crate) fn str_col<'a>(name: &str, values: impl Iterator<Item = &'a str>) -> Column {
    StringChunked::from_iter_values(name.into(), values).into_column()
}

pub(crate) fn i64_col(name: &str, values: Vec<i64>) -> Column {
    Int64Chunked::from_vec(name.into(), values).into_column()
}

pub(crate) fn f64_col(name: &str, values: Vec<f64>) -> Column {
    Float64Chunked::from_vec(name.into(), values).into_column()
}

pub(crate) fn opt_f64_col(name: &str, values: impl Iterator<Item = Option<f64>>) -> Column {
    Float64Chunked::from_iter_options(name.into(), values).into_column()
}

pub(crate) fn into_frame(ev: Events, users: &Users, items: &Items) -> Result<DataFrame, SynthError> {
    let n = ev.user.len();
    let Events {
        user,
        item,
        timestamp,
        hour,
        device,
        position,
        recent_buf,
        recent_end,
        click,
        convert,
        would_convert,
        dwell_time,
        high_value,
        quality,
        p_click,
        p_convert,
        expected_log_dwell,
    } = ev;
    let recent = (0..n).map(|r| {
        let start = if r == 0 { 0 } else { recent_end[r - 1] };
        &recent_buf[start..recent_end[r]]
    });
    let user_f64 = |values: &[f64]| -> Vec<f64> { user.iter().map(|&u| values[u]).collect() };
    let quality_col = |k: usize| -> Vec<f64> { item.iter().map(|&i| items.p_quality[i][k]).collect() };
    let columns = vec![
        str_col("user_id", user.iter().map(|&u| users.ids[u].as_str())),
        str_col("item_id", item.iter().map(|&i| items.ids[i].as_str())),
        i64_col("timestamp", timestamp),
        str_col("age_bucket", user.iter().map(|&u| AGE_BUCKETS[users.age[u] as usize])),
        str_col("region", user.iter().map(|&u| REGIONS[users.region[u] as usize])),
        str_col("activity", user.iter().map(|&u| ACTIVITIES[users.activity[u] as usize])),
        opt_f64_col("account_age_days", user.iter().map(|&u| users.account_age_days[u])),
        str_col("category", item.iter().map(|&i| CATEGORY_NAMES[items.category[i] as usize])),
        f64_col("price", item.iter().map(|&i| items.price[i]).collect()),
        i64_col("hour", hour),
        str_col("device", device.iter().map(|&d| DEVICES[d as usize])),
        i64_col("position", position),
        str_col("recent_items", recent),
        i64_col("click", click),
        i64_col("convert", convert),
        i64_col("would_convert", would_convert),
        opt_f64_col("dwell_time", dwell_time.into_iter()),
        i64_col("high_value", high_value),
        str_col("item_quality", quality.iter().map(|&q| QUALITY_LABELS[q as usize])),
        f64_col("p_click", p_click),
        f64_col("p_convert", p_convert),
        f64_col("expected_log_dwell", expected_log_dwell),
        f64_col("p_high_value", user_f64(&users.p_high_value)),
        f64_col("p_quality_low", quality_col(0)),
        f64_col("p_quality_mid", quality_col(1)),
        f64_col("p_quality_high", quality_col(2)),
    ];
    Ok(DataFrame::new(n, columns)?)
}
