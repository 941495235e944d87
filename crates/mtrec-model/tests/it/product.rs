//! Product tasks (ESMM): outputs, structure and training signal.

use mtrec_model::MultiTaskModel;

use crate::common::{configs, pipeline_with_product, Batch};

/// The product task predicts the product of its factors' probabilities, for every
/// architecture, and has no parameters or gate of its own.
#[test]
fn a_product_task_predicts_the_product_of_its_factors() {
    let batch = Batch::with_product();
    for (name, cfg) in configs() {
        let model = MultiTaskModel::new(&pipeline_with_product(), &cfg, 5).unwrap();
        let p = model.predict(&batch.data(), &batch.rows());
        let [click, buy, click_buy] =
            ["click", "buy", "click_buy"].map(|n| model.heads.iter().position(|h| h.name == n).unwrap());
        assert_eq!(model.heads[click_buy].factors, vec![click, buy]);
        for r in 0..batch.rows().len() {
            let want = f64::from(p.outputs[click][r]) * f64::from(p.outputs[buy][r]);
            let got = f64::from(p.outputs[click_buy][r]);
            assert!((got - want).abs() <= 1e-6, "{name}: row {r}: {got} vs {want}");
        }
        assert!(p.gates[click_buy].is_none(), "{name}: a product task has no gate");
        let names: Vec<String> = model.params.ids().map(|id| model.params.name(id).to_owned()).collect();
        assert!(!names.iter().any(|n| n.contains("click_buy")), "{name}: the product task has parameters: {names:?}");
    }
}

/// With no loss of its own (weight 0), the conversion head learns only through the product:
/// its gradient is zero without the product task's loss and non-zero with it.
#[test]
fn the_conversion_head_learns_through_the_product() {
    use dfdx::prelude::*;
    let batch = Batch::with_product();
    let cfg = configs().into_iter().find(|(n, _)| *n == "mmoe").unwrap().1;
    let mut model = MultiTaskModel::new(&pipeline_with_product(), &cfg, 5).unwrap();
    let head_buy = model.params.ids().find(|&id| model.params.name(id) == "head.buy.weight").unwrap();
    let gradient_norm = |model: &MultiTaskModel| {
        let x = model.assemble(&batch.data(), &batch.rows()).input;
        let (loss, _) = model.loss(model.forward(x.traced(Gradients::leaky())), &batch.labels, &batch.masks).unwrap();
        let mut grads = loss.backward();
        model.params.grad(&mut grads, head_buy).iter().map(|g| f64::from(*g).powi(2)).sum::<f64>()
    };
    assert!(gradient_norm(&model) > 0.0, "the product's loss reaches the conversion head");
    let product = model.heads.iter().position(|h| h.name == "click_buy").unwrap();
    model.heads[product].weight = 0.0;
    assert_eq!(gradient_norm(&model), 0.0, "without the product's loss the conversion head gets nothing");
}
