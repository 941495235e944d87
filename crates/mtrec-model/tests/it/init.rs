//! Output biases start at each task's prior on the training labels.

use mtrec_model::{ModelConfig, MultiTaskModel};

use crate::common::pipeline;

#[test]
fn output_biases_start_at_the_label_priors_of_labeled_rows() {
    let mut model = MultiTaskModel::new(&pipeline(), &ModelConfig::default(), 1).unwrap();
    // Tasks in pipeline order: click (binary), dwell (regression), tier (3 classes), good
    // (binary). The last row of each task is masked and must not count.
    let labels = vec![
        vec![1.0, 0.0, 0.0, 0.0, 1.0],
        vec![2.0, 4.0, 0.0, 0.0, 100.0],
        vec![0.0, 2.0, 2.0, 0.0, 1.0],
        vec![1.0, 1.0, 1.0, 1.0, 1.0],
    ];
    let masks = vec![vec![1, 1, 1, 1, 0], vec![1, 1, 0, 0, 0], vec![1, 1, 1, 0, 0], vec![0; 5]];
    model.init_output_biases(&labels, &masks);
    let bias = |task: &str| model.params.values(model.params.find(&format!("head.{task}.bias")).unwrap());
    let close = |got: &[f32], want: &[f64]| {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?} against {want:?}");
        }
    };
    close(&bias("click"), &[(0.25f64 / 0.75).ln()]);
    close(&bias("dwell"), &[3.0]);
    // Add-one smoothed class frequencies: counts (1, 0, 2) + 1 over 3 + 3 rows.
    close(&bias("tier"), &[(2.0f64 / 6.0).ln(), (1.0f64 / 6.0).ln(), (3.0f64 / 6.0).ln()]);
    // No labeled row: left at zero.
    close(&bias("good"), &[0.0]);
}

#[test]
fn a_class_out_of_range_is_left_out_of_the_multiclass_prior() {
    let mut model = MultiTaskModel::new(&pipeline(), &ModelConfig::default(), 1).unwrap();
    let labels = vec![vec![0.0; 3], vec![0.0; 3], vec![0.0, 7.0, 2.0], vec![0.0; 3]];
    let masks = vec![vec![1; 3]; 4];
    model.init_output_biases(&labels, &masks);
    let tier = model.params.values(model.params.find("head.tier.bias").unwrap());
    // Counts (1, 0, 1) + 1 over the 5 that remain: class 7 counts nowhere.
    let want = [(2.0f64 / 5.0).ln(), (1.0f64 / 5.0).ln(), (2.0f64 / 5.0).ln()];
    for (g, w) in tier.iter().zip(want) {
        assert!((f64::from(*g) - w).abs() < 1e-6, "{tier:?}");
    }
}
