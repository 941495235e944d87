//! Metrics against golden values computed outside mtrec (scikit-learn, scipy, numpy, and a
//! DeLong reference written from Sun & Xu 2014): see `golden.py`, which generates
//! `golden/data.rs`, and `golden_clustered.py` (Obuchowski's clustered test written pair by
//! pair from the paper), which generates `golden/clustered.rs`. Plus bootstrap properties that
//! need no reference.

#[allow(dead_code)]
mod data {
    include!("golden/data.rs");
}

mod clustered {
    include!("golden/clustered.rs");
}

use clustered::*;
use data::*;
use mtrec_metrics::*;

fn close(actual: f64, expected: f64, what: &str) {
    assert!((actual - expected).abs() < 1e-9, "{what}: {actual} vs golden {expected}");
}

#[test]
fn auc_and_logloss_match_sklearn() {
    close(auc(&SCORE_A, &LABELS, None).unwrap(), AUC_A, "auc");
    close(auc(&SCORE_A, &LABELS, Some(&WEIGHTS)).unwrap(), AUC_A_WEIGHTED, "weighted auc");
    close(logloss(&SCORE_A, &LABELS, UNWEIGHTED).unwrap(), LOGLOSS_A, "logloss");
    close(logloss(&SCORE_A, &LABELS, Some(&WEIGHTS[..])).unwrap(), LOGLOSS_A_WEIGHTED, "weighted logloss");
}

#[test]
fn roc_curve_matches_sklearn_without_dropping_points() {
    let points = roc_curve(&SCORE_A, &LABELS, 1000);
    assert_eq!(points.len(), ROC_FPR.len());
    for (i, p) in points.iter().enumerate() {
        close(p.fpr, ROC_FPR[i], "fpr");
        close(p.tpr, ROC_TPR[i], "tpr");
        assert_eq!(p.threshold, ROC_THRESHOLDS[i], "threshold {i}");
    }
}

#[test]
fn gauc_matches_per_user_sklearn_average() {
    let g = gauc_by_user(&SCORE_A, &LABELS, &USERS);
    close(g.gauc.unwrap(), GAUC_A, "gauc");
    assert_eq!(g.groups_skipped, GAUC_SKIPPED);
    assert_eq!(g.groups_evaluated + g.groups_skipped, 5);
}

#[test]
fn calibration_matches_numpy_bins() {
    let c = calibration(&SCORE_A, &LABELS, UNWEIGHTED, 5).unwrap();
    close(c.mean_predicted, MEAN_PRED_A, "mean predicted");
    close(c.observed_rate, OBSERVED_RATE, "observed rate");
    close(c.ece, ECE5_A, "ece");
    for (b, bin) in c.bins.iter().enumerate() {
        assert_eq!(bin.count, REL_COUNT[b] as f64, "bin {b} count");
        match (bin.mean_predicted, bin.observed_rate) {
            (Some(p), Some(o)) => {
                close(p, REL_MEAN_PRED[b], "bin mean predicted");
                close(o, REL_OBSERVED[b], "bin observed");
            }
            _ => assert!(REL_MEAN_PRED[b].is_nan() && REL_OBSERVED[b].is_nan(), "bin {b} should be empty"),
        }
    }
}

#[test]
fn ranking_matches_reference() {
    let users = Groups::from_ids(&USERS);
    let r = ranking(&SCORE_A, &LABELS, &users, 3);
    close(r.ndcg.unwrap(), NDCG3_A, "ndcg@3");
    close(r.recall.unwrap(), RECALL3_A, "recall@3");
    close(r.mrr.unwrap(), MRR_A, "mrr");
    assert_eq!(r.users_evaluated, RANKED_USERS);
}

#[test]
fn delong_matches_midrank_reference() {
    let t = delong_test(&SCORE_A, &SCORE_B, &LABELS, 0.95).unwrap();
    close(t.auc_a, DELONG_AUC_A, "auc a");
    close(t.auc_b, DELONG_AUC_B, "auc b");
    close(t.delta, DELONG_DELTA, "delta");
    close(t.std_error, DELONG_SE, "se");
    close(t.z, DELONG_Z, "z");
    close(t.p_value, DELONG_P, "p");
    close(t.ci_low, DELONG_CI_LOW, "ci low");
    close(t.ci_high, DELONG_CI_HIGH, "ci high");
}

#[test]
fn clustered_delong_matches_obuchowski_reference() {
    let t = clustered_delong_test(&SCORE_A, &SCORE_B, &LABELS, &Groups::from_ids(&USERS), 0.95).unwrap();
    assert_eq!(t.clusters, CLUSTERED_CLUSTERS);
    close(t.clustered.delta, DELONG_DELTA, "delta");
    close(t.clustered.std_error, CLUSTERED_SE, "se");
    close(t.clustered.z, CLUSTERED_Z, "z");
    close(t.clustered.p_value, CLUSTERED_P, "p");
    close(t.clustered.ci_low, CLUSTERED_CI_LOW, "ci low");
    close(t.clustered.ci_high, CLUSTERED_CI_HIGH, "ci high");
    close(t.row_independent.std_error, CLUSTERED_ROW_INDEPENDENT_SE, "row-independent se");
    close(t.row_independent.std_error, DELONG_SE, "row-independent se against golden.py");
    close(t.design_effect.unwrap(), CLUSTERED_DESIGN_EFFECT, "design effect");
}

#[test]
fn regression_matches_sklearn() {
    let m = regression_metrics(&REG_PRED, &REG_TARGET, UNWEIGHTED).unwrap();
    close(m.rmse, RMSE, "rmse");
    close(m.mae, MAE, "mae");
    close(m.r2.unwrap(), R2, "r2");
    let w = regression_metrics(&REG_PRED, &REG_TARGET, Some(&REG_WEIGHTS[..])).unwrap();
    close(w.rmse, RMSE_WEIGHTED, "weighted rmse");
    close(w.mae, MAE_WEIGHTED, "weighted mae");
    close(w.r2.unwrap(), R2_WEIGHTED, "weighted r2");
}

#[test]
fn multiclass_matches_sklearn() {
    let m = multiclass_metrics(&MC_PROBS, 3, &MC_LABELS, UNWEIGHTED).unwrap();
    close(m.accuracy, MC_ACCURACY, "accuracy");
    close(m.macro_f1, MC_MACRO_F1, "macro f1");
    close(m.logloss, MC_LOGLOSS, "logloss");
}

#[test]
fn bootstrap_is_deterministic_and_row_and_weight_paths_agree() {
    let users = Groups::from_ids(&USERS);
    let options = BootstrapOptions { replicates: 300, seed: 11, confidence: 0.95 };
    let by_rows = |scores: &'static [f32]| {
        move |rows: &[usize]| {
            let s: Vec<f32> = rows.iter().map(|&r| scores[r]).collect();
            let y: Vec<f32> = rows.iter().map(|&r| LABELS[r]).collect();
            auc(&s, &y, None)
        }
    };
    let first = paired_cluster_bootstrap(&users, &options, by_rows(&SCORE_A), by_rows(&SCORE_B)).unwrap();
    let again = paired_cluster_bootstrap(&users, &options, by_rows(&SCORE_A), by_rows(&SCORE_B)).unwrap();
    assert_eq!(first, again);
    close(first.delta.unwrap(), DELONG_DELTA, "point delta");
    let (low, high) = (first.ci_low.unwrap(), first.ci_high.unwrap());
    assert!(low < first.delta.unwrap() && first.delta.unwrap() < high, "{low} {high}");

    // The O(n) weighted path over pre-sorted scores sees the same replicates.
    let (ranked_a, ranked_b) = (RankedScores::new(&SCORE_A), RankedScores::new(&SCORE_B));
    let weighted = paired_cluster_bootstrap_many(&users, &options, 1, |resample, out| {
        let w = resample.row_weights();
        out[0] = (ranked_a.auc(&LABELS, Some(&w[..])), ranked_b.auc(&LABELS, Some(&w[..])));
    })
    .unwrap();
    close(weighted[0].ci_low.unwrap(), low, "weighted ci low");
    close(weighted[0].ci_high.unwrap(), high, "weighted ci high");
    assert_eq!(weighted[0].p_value, first.p_value);

    let other_seed = BootstrapOptions { seed: 12, ..options };
    let different = paired_cluster_bootstrap(&users, &other_seed, by_rows(&SCORE_A), by_rows(&SCORE_B)).unwrap();
    assert_ne!(different.ci_low, first.ci_low);
}

#[test]
fn bootstrap_of_identical_models_has_zero_delta_and_p_one() {
    let users = Groups::from_ids(&USERS);
    let options = BootstrapOptions { replicates: 200, seed: 1, confidence: 0.95 };
    let metric = |rows: &[usize]| Some(rows.iter().map(|&r| f64::from(SCORE_A[r])).sum::<f64>() / rows.len() as f64);
    let r = paired_cluster_bootstrap(&users, &options, metric, metric).unwrap();
    assert_eq!((r.delta, r.ci_low, r.ci_high, r.p_value), (Some(0.0), Some(0.0), Some(0.0), Some(1.0)));
    assert_eq!(
        paired_cluster_bootstrap(&Groups::from_ids(&[]), &options, metric, metric),
        Err(BootstrapError::NoClusters)
    );
}
