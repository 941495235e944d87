//! A user task sees only user features, an item task only item features.

use mtrec_model::MultiTaskModel;

use crate::common::{configs, pipeline, Batch};

#[test]
fn user_and_item_tasks_ignore_the_other_sides() {
    for (name, cfg) in configs() {
        let model = MultiTaskModel::new(&pipeline(), &cfg, 11).unwrap();
        let base = Batch::new();
        let p = model.predict(&base.data(), &base.rows());
        let tier = model.heads.iter().position(|h| h.name == "tier").unwrap();
        let good = model.heads.iter().position(|h| h.name == "good").unwrap();
        let click = model.heads.iter().position(|h| h.name == "click").unwrap();

        // Change item and context features only: the user task (tier) must not move.
        let mut other = Batch::new();
        other.item = vec![5, 2, 2, 3, 4, 0];
        other.price = vec![-3.0, 2.0, 0.0, 1.0, 0.5, 4.0];
        other.device = vec![4, 4, 2, 3, 2, 3];
        let q = model.predict(&other.data(), &other.rows());
        assert_eq!(p.outputs[tier], q.outputs[tier], "{name}: user task moved with item/context features");
        assert_ne!(p.outputs[good], q.outputs[good], "{name}: item task ignored item features");
        assert_ne!(p.outputs[click], q.outputs[click], "{name}: pair task ignored item features");

        // Change user and context features only: the item task (good) must not move.
        let mut other = Batch::new();
        other.user = vec![0, 4, 2, 3, 3, 2];
        other.age = vec![3.0, 1.0, -2.0, 0.0, 0.7, 0.1];
        other.hist_offsets = vec![0, 1, 1, 1, 3, 4, 4];
        other.hist = vec![4, 2, 5, 3];
        other.device = vec![3, 3, 3, 3, 3, 3];
        let q = model.predict(&other.data(), &other.rows());
        assert_eq!(p.outputs[good], q.outputs[good], "{name}: item task moved with user/context features");
        assert_ne!(p.outputs[tier], q.outputs[tier], "{name}: user task ignored user features");
    }
}

#[test]
fn outputs_are_probabilities_where_they_should_be() {
    let model = MultiTaskModel::new(&pipeline(), &configs().remove(1).1, 5).unwrap();
    let b = Batch::new();
    let p = model.predict(&b.data(), &b.rows());
    assert!(p.outputs[0].iter().all(|x| (0.0..=1.0).contains(x)));
    for row in p.outputs[2].chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let gates = p.gates[0].as_ref().expect("mmoe reports gates");
    assert_eq!(gates.len(), 6 * 3);
    for row in gates.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

/// A sequence pooled by attention reads its first `max_length` ids and no more; the user task,
/// which pools the same sequence by its mean, does not see the candidate.
#[test]
fn attention_pooling_reads_the_first_ids_and_user_tasks_ignore_the_candidate() {
    for (name, cfg) in configs() {
        let model = MultiTaskModel::new(&crate::common::pipeline_with_attention(), &cfg, 11).unwrap();
        let base = Batch::new();
        let p = model.predict(&base.data(), &base.rows());
        let tier = model.heads.iter().position(|h| h.name == "tier").unwrap();
        let input = |b: &Batch| model.assemble(&b.data(), &b.rows()).input.as_vec();
        // Row 2's history is [4, 5, 2]: its third id is past max_length 2.
        let mut other = Batch::new();
        other.hist[4] = 3;
        assert_eq!(input(&base), input(&other), "{name}: an id past max_length was read");
        assert_eq!(p.outputs, model.predict(&other.data(), &other.rows()).outputs);
        // Its second id is read.
        other.hist[3] = 2;
        assert_ne!(input(&base), input(&other), "{name}: the second id was not read");
        // The candidate enters the user task nowhere, the pair task through attention too.
        let mut other = Batch::new();
        other.item = vec![5, 2, 2, 3, 4, 0];
        let q = model.predict(&other.data(), &other.rows());
        assert_eq!(p.outputs[tier], q.outputs[tier], "{name}: the user task moved with the candidate");
    }
}
