//! Tests of the generator: the documented columns, determinism, calibration of the true
//! probabilities, task correlation, and the atomic write.

use std::fs::File;

use super::*;
use crate::constants::{QUALITY_LABELS, SECONDS_PER_DAY, START_EPOCH};
use crate::random::dot;
use crate::world::{Users, World};

fn cfg(rows: usize) -> SyntheticConfig {
    SyntheticConfig { rows, ..SyntheticConfig::default() }
}

fn f64s(df: &DataFrame, name: &str) -> Vec<f64> {
    df.column(name).unwrap().f64().unwrap().no_null_iter().collect()
}

fn i64s(df: &DataFrame, name: &str) -> Vec<i64> {
    df.column(name).unwrap().i64().unwrap().no_null_iter().collect()
}

fn strs(df: &DataFrame, name: &str) -> Vec<String> {
    df.column(name).unwrap().str().unwrap().no_null_iter().map(str::to_owned).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// Rank-based AUC (Mann-Whitney U) with average ranks for tied scores.
fn auc(scores: &[f64], labels: &[i64]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut pos) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] == 1 {
                rank_sum += avg_rank;
                pos += 1.0;
            }
        }
        i = j + 1;
    }
    let neg = scores.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[test]
fn auc_helper_matches_hand_computed_values() {
    assert_eq!(auc(&[0.1, 0.2, 0.3, 0.4], &[0, 0, 1, 1]), 1.0);
    assert_eq!(auc(&[0.1, 0.2, 0.3, 0.4], &[1, 1, 0, 0]), 0.0);
    // Pairs (pos, neg): (0.4,0.1) win, (0.4,0.3) win, (0.2,0.1) win, (0.2,0.3) loss.
    assert_eq!(auc(&[0.1, 0.2, 0.3, 0.4], &[0, 1, 0, 1]), 0.75);
    assert_eq!(auc(&[0.5, 0.5], &[0, 1]), 0.5);
}

#[test]
fn schema_has_the_documented_columns_and_dtypes() {
    let df = generate(&cfg(2_000)).unwrap();
    let expected = [
        ("user_id", DataType::String),
        ("item_id", DataType::String),
        ("timestamp", DataType::Int64),
        ("age_bucket", DataType::String),
        ("region", DataType::String),
        ("activity", DataType::String),
        ("account_age_days", DataType::Float64),
        ("category", DataType::String),
        ("price", DataType::Float64),
        ("hour", DataType::Int64),
        ("device", DataType::String),
        ("position", DataType::Int64),
        ("recent_items", DataType::String),
        ("click", DataType::Int64),
        ("convert", DataType::Int64),
        ("would_convert", DataType::Int64),
        ("dwell_time", DataType::Float64),
        ("high_value", DataType::Int64),
        ("item_quality", DataType::String),
        ("p_click", DataType::Float64),
        ("p_convert", DataType::Float64),
        ("expected_log_dwell", DataType::Float64),
        ("p_high_value", DataType::Float64),
        ("p_quality_low", DataType::Float64),
        ("p_quality_mid", DataType::Float64),
        ("p_quality_high", DataType::Float64),
    ];
    let got: Vec<(String, DataType)> = df.columns().iter().map(|c| (c.name().to_string(), c.dtype().clone())).collect();
    let want: Vec<(String, DataType)> = expected.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
    assert_eq!(got, want);
    assert_eq!(df.height(), 2_000);
    // Only account_age_days and dwell_time may hold nulls.
    for c in df.columns() {
        if !matches!(c.name().as_str(), "account_age_days" | "dwell_time") {
            assert_eq!(c.null_count(), 0, "{} has nulls", c.name());
        }
    }
}

#[test]
fn same_seed_gives_identical_frames_and_other_seed_differs() {
    let a = generate(&cfg(20_000)).unwrap();
    let b = generate(&cfg(20_000)).unwrap();
    assert!(a.equals_missing(&b));
    let c = generate(&SyntheticConfig { seed: 43, ..cfg(20_000) }).unwrap();
    assert!(!a.equals_missing(&c));
}

#[test]
fn changing_rows_keeps_the_user_and_item_populations() {
    let small = generate(&cfg(5_000)).unwrap();
    let large = generate(&cfg(50_000)).unwrap();
    // Attributes of every user / item seen in both frames must agree.
    let attrs = |df: &DataFrame, key: &str, cols: &[&str]| {
        let keys = strs(df, key);
        let values: Vec<Vec<String>> = cols
            .iter()
            .map(|c| {
                let col = df.column(c).unwrap().cast(&DataType::String).unwrap();
                col.str().unwrap().iter().map(|v| v.unwrap_or("null").to_owned()).collect()
            })
            .collect();
        let mut map = std::collections::HashMap::new();
        for (r, k) in keys.into_iter().enumerate() {
            let row: Vec<String> = values.iter().map(|v| v[r].clone()).collect();
            map.insert(k, row);
        }
        map
    };
    let user_cols = ["age_bucket", "region", "activity", "account_age_days", "p_high_value"];
    let item_cols = ["category", "price", "p_quality_low", "p_quality_high"];
    for (key, cols) in [("user_id", &user_cols[..]), ("item_id", &item_cols[..])] {
        let a = attrs(&small, key, cols);
        let b = attrs(&large, key, cols);
        let mut shared = 0;
        for (k, row) in &a {
            if let Some(other) = b.get(k) {
                assert_eq!(row, other, "{key} {k} changed with rows");
                shared += 1;
            }
        }
        assert!(shared > 100, "too few shared {key}s: {shared}");
    }
    let u0_age = |df: &DataFrame| {
        let users = strs(df, "user_id");
        let ages = strs(df, "age_bucket");
        users.iter().position(|u| u == "u0").map(|r| ages[r].clone())
    };
    assert_eq!(u0_age(&small), u0_age(&large));
    assert!(u0_age(&large).is_some());
    // The whole population, including users no event picked, ignores `rows`.
    let population = |rows| {
        let cfg = cfg(rows);
        let world = World::new(&cfg);
        let users = Users::new(&cfg, &world);
        (users.latent, users.age, users.account_age_days)
    };
    assert_eq!(population(10), population(100_000));
}

#[test]
fn w1_and_w2_have_cosine_task_correlation() {
    for r in [-1.0, -0.3, 0.0, 0.5, 0.9, 1.0] {
        let world = World::new(&SyntheticConfig { task_correlation: r, ..cfg(1) });
        let cos = dot(&world.w1, &world.w2);
        assert!((cos - r).abs() < 1e-12, "cos {cos} != {r}");
        assert!((dot(&world.w1, &world.w1) - 1.0).abs() < 1e-12);
        assert!((dot(&world.w2, &world.w2) - 1.0).abs() < 1e-12);
    }
}

/// |mean(label) − mean(p)| within 4 standard errors of the Bernoulli draws.
fn assert_calibrated(labels: &[i64], probs: &[f64], what: &str) {
    let n = labels.len() as f64;
    let rate = labels.iter().sum::<i64>() as f64 / n;
    let expected = mean(probs);
    let se = probs.iter().map(|p| p * (1.0 - p)).sum::<f64>().sqrt() / n;
    assert!((rate - expected).abs() < 4.0 * se, "{what}: rate {rate} vs mean p {expected} (se {se})");
}

#[test]
fn default_world_rates_calibration_and_bayes_auc() {
    let df = generate(&SyntheticConfig::default()).unwrap();
    assert_eq!(df.height(), 200_000);
    let click = i64s(&df, "click");
    let p_click = f64s(&df, "p_click");
    assert_calibrated(&click, &p_click, "click");
    let click_rate = mean(&click.iter().map(|&c| c as f64).collect::<Vec<_>>());
    assert!((0.10..=0.20).contains(&click_rate), "click rate {click_rate}");

    let high_value = i64s(&df, "high_value");
    assert_calibrated(&high_value, &f64s(&df, "p_high_value"), "high_value");

    // Conversions are drawn on clicked rows only.
    let convert = i64s(&df, "convert");
    let p_convert = f64s(&df, "p_convert");
    let (conv_clicked, p_conv_clicked): (Vec<i64>, Vec<f64>) =
        click.iter().zip(convert.iter().zip(&p_convert)).filter(|(c, _)| **c == 1).map(|(_, (v, p))| (*v, *p)).unzip();
    assert_calibrated(&conv_clicked, &p_conv_clicked, "convert | click");
    assert!(click.iter().zip(&convert).all(|(c, v)| *c == 1 || *v == 0));
    // The counterfactual conversion is the observed one where clicked, and is drawn from
    // p_convert on the other impressions.
    let would = i64s(&df, "would_convert");
    assert!(click.iter().zip(convert.iter().zip(&would)).all(|(c, (v, w))| *c == 0 || v == w));
    let (would_unclicked, p_unclicked): (Vec<i64>, Vec<f64>) =
        click.iter().zip(would.iter().zip(&p_convert)).filter(|(c, _)| **c == 0).map(|(_, (w, p))| (*w, *p)).unzip();
    assert_calibrated(&would_unclicked, &p_unclicked, "would_convert | no click");

    let dwell = df.column("dwell_time").unwrap().f64().unwrap().clone();
    for (c, d) in click.iter().zip(dwell.iter()) {
        assert_eq!(*c == 1, d.is_some(), "dwell_time must be null exactly when click = 0");
    }

    // Quality: each class's frequency matches its mean probability.
    let quality = strs(&df, "item_quality");
    for (k, name) in QUALITY_LABELS.iter().enumerate() {
        let hits: Vec<i64> = quality.iter().map(|q| i64::from(q == name)).collect();
        let col = ["p_quality_low", "p_quality_mid", "p_quality_high"][k];
        assert_calibrated(&hits, &f64s(&df, col), col);
    }

    let bayes_auc = auc(&p_click, &click);
    assert!((0.70..=0.85).contains(&bayes_auc), "Bayes AUC {bayes_auc}");

    let nulls = df.column("account_age_days").unwrap().null_count();
    assert!(nulls > 0, "account_age_days must exercise nulls");
    let ts = i64s(&df, "timestamp");
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "timestamps must be sorted");
    assert!(ts[0] >= START_EPOCH && *ts.last().unwrap() < START_EPOCH + 30 * SECONDS_PER_DAY);
    let hour = i64s(&df, "hour");
    assert!(ts.iter().zip(&hour).all(|(t, h)| (t - START_EPOCH) / 3_600 % 24 == *h));
    let position = i64s(&df, "position");
    assert!(position.iter().all(|p| (1..=10).contains(p)));
}

#[test]
fn task_correlation_controls_click_conversion_affinity_correlation() {
    // expected_log_dwell is linear in the click affinity and logit(p_convert) in the
    // conversion affinity (plus a price term), so their correlation tracks R.
    let corr_for = |r: f64| {
        let df = generate(&SyntheticConfig { task_correlation: r, ..cfg(30_000) }).unwrap();
        let s1 = f64s(&df, "expected_log_dwell");
        let logit: Vec<f64> = f64s(&df, "p_convert").iter().map(|p| (p / (1.0 - p)).ln()).collect();
        pearson(&s1, &logit)
    };
    let corrs: Vec<f64> = [-1.0, 0.0, 0.5, 1.0].iter().map(|&r| corr_for(r)).collect();
    assert!(corrs.windows(2).all(|w| w[0] < w[1]), "not increasing: {corrs:?}");
    assert!(corrs[0] < -0.5 && corrs[1].abs() < 0.3 && corrs[3] > 0.5, "{corrs:?}");
    // Bernoulli probabilities themselves follow along.
    let p_corr = |r: f64| {
        let df = generate(&SyntheticConfig { task_correlation: r, ..cfg(30_000) }).unwrap();
        pearson(&f64s(&df, "p_click"), &f64s(&df, "p_convert"))
    };
    assert!(p_corr(0.0) < p_corr(1.0));
}

#[test]
fn invalid_configs_name_the_field() {
    let cases: [(SyntheticConfig, &str); 7] = [
        (SyntheticConfig { users: 0, ..cfg(10) }, "users"),
        (SyntheticConfig { items: 0, ..cfg(10) }, "items"),
        (cfg(0), "rows"),
        (SyntheticConfig { latent_dim: 1, ..cfg(10) }, "latent_dim"),
        (SyntheticConfig { task_correlation: 1.5, ..cfg(10) }, "task_correlation"),
        (SyntheticConfig { task_correlation: -1.01, ..cfg(10) }, "task_correlation"),
        (SyntheticConfig { task_correlation: f64::NAN, ..cfg(10) }, "task_correlation"),
    ];
    for (bad, name) in cases {
        match generate(&bad) {
            Err(SynthError::InvalidConfig { field, message }) => {
                assert_eq!(field, name, "{message}");
                let shown = SynthError::InvalidConfig { field, message }.to_string();
                assert!(shown.contains(name), "{shown}");
            }
            other => panic!("expected InvalidConfig for {name}, got {other:?}"),
        }
    }
    assert!(SyntheticConfig::default().validate().is_ok());
}

#[test]
fn recent_items_are_the_users_earlier_clicks_most_recent_first() {
    let df = generate(&SyntheticConfig { users: 200, items: 300, ..cfg(30_000) }).unwrap();
    let users = strs(&df, "user_id");
    let items = strs(&df, "item_id");
    let recent = strs(&df, "recent_items");
    let click = i64s(&df, "click");
    let mut clicked: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    let mut non_empty = 0;
    for r in 0..df.height() {
        let history = clicked.entry(users[r].as_str()).or_default();
        let want: Vec<&str> = history.iter().rev().take(5).copied().collect();
        let got: Vec<&str> = if recent[r].is_empty() { Vec::new() } else { recent[r].split('|').collect() };
        assert_eq!(got, want, "row {r}");
        non_empty += usize::from(!got.is_empty());
        if click[r] == 1 {
            history.push(items[r].as_str());
        }
    }
    assert!(non_empty > df.height() / 2, "recent_items is mostly empty");
}

#[test]
fn write_parquet_round_trips_and_leaves_no_temp_file() {
    let mut df = generate(&cfg(1_000)).unwrap();
    let dir = std::env::temp_dir().join(format!("mtrec-synth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.parquet");
    write_parquet(&mut df, &path).unwrap();
    let back = ParquetReader::new(File::open(&path).unwrap()).finish().unwrap();
    assert!(df.equals_missing(&back));
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "temp file left behind");
    // Missing directories are made; under a regular file, none can be.
    let nested = dir.join("a/b/log.parquet");
    write_parquet(&mut df, &nested).unwrap();
    assert!(nested.exists());
    std::fs::remove_dir_all(dir.join("a")).unwrap();
    let err = write_parquet(&mut df, &path.join("x.parquet")).unwrap_err();
    assert!(matches!(err, SynthError::Io { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_log_written_chunk_by_chunk_is_the_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunked.parquet");
    let config = cfg(5_000);
    let written = std::sync::atomic::AtomicUsize::new(0);
    let progress = |rows: usize| {
        written.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
    };
    write_chunked(&config, &path, 777, &progress).unwrap();
    assert_eq!(written.into_inner(), 5_000);
    let back = ParquetReader::new(File::open(&path).unwrap()).finish().unwrap();
    let whole = generate(&config).unwrap();
    assert!(back.equals_missing(&whole), "the same rows whatever the chunks");
    let ts = i64s(&back, "timestamp");
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "sorted by time across chunks");
}

#[test]
fn another_events_seed_draws_new_events_in_the_same_world() {
    let base = SyntheticConfig { rows: 2_000, ..SyntheticConfig::default() };
    let live = SyntheticConfig { events_seed: Some(7), ..base.clone() };
    let (a, b) = (generate(&base).unwrap(), generate(&live).unwrap());
    // The same users keep their attributes and the same items their price level...
    let by_id = |df: &DataFrame, id: &str, column: &str| -> std::collections::BTreeMap<String, String> {
        let ids = df.column(id).unwrap();
        let values = df.column(column).unwrap();
        (0..df.height())
            .map(|r| (ids.get(r).unwrap().str_value().into_owned(), values.get(r).unwrap().str_value().into_owned()))
            .collect()
    };
    let (ua, ub) = (by_id(&a, "user_id", "region"), by_id(&b, "user_id", "region"));
    let shared: Vec<&String> = ua.keys().filter(|u| ub.contains_key(*u)).collect();
    assert!(shared.len() > 100);
    assert!(shared.iter().all(|u| ua[*u] == ub[*u]));
    let (ia, ib) = (by_id(&a, "item_id", "category"), by_id(&b, "item_id", "category"));
    assert!(ia.keys().filter(|i| ib.contains_key(*i)).all(|i| ia[i] == ib[i]));
    // ... but the events differ.
    let pairs = |df: &DataFrame| -> Vec<(String, String)> {
        let (u, i) = (df.column("user_id").unwrap(), df.column("item_id").unwrap());
        (0..df.height())
            .map(|r| (u.get(r).unwrap().str_value().into_owned(), i.get(r).unwrap().str_value().into_owned()))
            .collect()
    };
    let same = pairs(&a).iter().zip(pairs(&b).iter()).filter(|(x, y)| x == y).count();
    assert!(same < 100, "{same} of 2,000 events are the same");
}

/// With a history effect, a candidate of the category of one of the user's recent clicks is
/// clicked more often than in the same world without it; the other rows much less so.
#[test]
fn the_history_effect_favours_candidates_like_recent_clicks() {
    let rate = |history_effect: f64| -> (f64, f64) {
        let df = generate(&SyntheticConfig { history_effect, ..cfg(30_000) }).unwrap();
        let items = df.column("item_id").unwrap().str().unwrap().clone();
        let categories = df.column("category").unwrap().str().unwrap().clone();
        let recent = df.column("recent_items").unwrap().str().unwrap().clone();
        let click = i64s(&df, "click");
        let category_of: std::collections::HashMap<String, String> =
            items.iter().zip(categories.iter()).filter_map(|(i, c)| Some((i?.to_owned(), c?.to_owned()))).collect();
        let (mut like, mut other) = ((0.0, 0.0), (0.0, 0.0));
        for (r, &clicked) in click.iter().enumerate() {
            let category = categories.get(r).unwrap();
            let recent = recent.get(r).unwrap_or("");
            let similar = recent
                .split('|')
                .filter(|i| !i.is_empty())
                .any(|i| category_of.get(i).map(String::as_str) == Some(category));
            let bucket = if similar { &mut like } else { &mut other };
            bucket.0 += clicked as f64;
            bucket.1 += 1.0;
        }
        (like.0 / like.1, other.0 / other.1)
    };
    let (like_without, other_without) = rate(0.0);
    let (like_with, other_with) = rate(3.0);
    assert!(
        like_with > like_without + 0.05,
        "like a recent click: {like_with} with the effect, {like_without} without"
    );
    assert!(
        like_with - like_without > 2.0 * (other_with - other_without),
        "other rows: {other_with} vs {other_without}"
    );
}
