//! Weights as safetensors, with stable names a Python user can open with the `safetensors`
//! package:
//!
//! - `embedding.<table>`: `rows x dim` table (`<table>` is the vocabulary or feature name);
//! - `<scope>.shared.…`: the scope group's shared network (`pair`, `user`, `item`), e.g.
//!   `pair.shared.bottom.0.weight` (shared-bottom), `pair.shared.experts.0.weight` (MMoE:
//!   every expert's first layer side by side, `input x experts*width`), `pair.shared.expert3.0.weight`
//!   (deeper expert layers), `pair.shared.gate1.weight` (the gate of the group's second task),
//!   `pair.shared.task0.1.bias` (single-task and soft sharing), `pair.shared.level0.task1.experts.0.weight`,
//!   `pair.shared.level0.shared.expert2.1.weight`, `pair.shared.level1.gate0.weight` and
//!   `pair.shared.level0.shared_gate.weight` (PLE: per level, each task's and the shared experts
//!   named as MMoE's, the task gates and, below the last level, the shared gate);
//! - `tower.<task>.<layer>.{weight,bias}` and `head.<task>.{weight,bias}`;
//! - `loss.log_vars` (uncertainty weighting).
//!
//! Weight matrices are `fan_in x fan_out` (`y = x W + b`).

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::ModelError;
use crate::model::MultiTaskModel;

/// Tensors by name: (shape, row-major values).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Every tensor of the model by name: (shape, values).
pub fn named_tensors(model: &MultiTaskModel) -> NamedTensors {
    let mut out = BTreeMap::new();
    for t in &model.tables.tables {
        out.insert(format!("embedding.{}", t.name), (vec![t.rows, t.dim], t.weights.clone()));
    }
    for id in model.params.ids() {
        out.insert(model.params.name(id).to_owned(), (model.params.shape(id), model.params.values(id)));
    }
    out
}

/// Serializes the weights (with optional extra tensors, e.g. optimizer state) as safetensors.
pub fn to_safetensors(
    tensors: &NamedTensors,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, ModelError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(k, (shape, v))| (k.clone(), shape.clone(), to_bytes(v))).collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|source| ModelError::Safetensors { path: k.clone(), source })
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, metadata)
        .map_err(|source| ModelError::Safetensors { path: "(all tensors)".to_owned(), source })
}

/// Reads every f32 tensor of a safetensors buffer.
pub fn from_safetensors(bytes: &[u8], origin: &str) -> Result<NamedTensors, ModelError> {
    let err = |message: String| ModelError::Weights { path: origin.to_owned(), message };
    let st = SafeTensors::deserialize(bytes)
        .map_err(|source| ModelError::Safetensors { path: origin.to_owned(), source })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(err(format!("tensor {name:?} is {:?}, expected F32", view.dtype())));
        }
        let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// Loads named tensors into a model built from the same config and pipeline. Every model
/// tensor must be present with the same shape, and no unknown tensor may be left over.
pub fn load_into(model: &mut MultiTaskModel, tensors: &NamedTensors, source: &Path) -> Result<(), ModelError> {
    let err = |message: String| ModelError::Weights { path: source.display().to_string(), message };
    let expected = named_tensors(model);
    for (name, (shape, _)) in &expected {
        let Some((got, values)) = tensors.get(name) else {
            return Err(err(format!("tensor {name:?} is missing")));
        };
        if got != shape {
            return Err(err(format!("tensor {name:?} has shape {got:?}, the model expects {shape:?}")));
        }
        if let Some(table) = name.strip_prefix("embedding.") {
            let i = model.tables.index(table).expect("named from the model");
            model.tables.tables[i].weights.copy_from_slice(values);
        } else {
            let id = model.params.find(name).expect("named from the model");
            model.params.set_values(id, values);
        }
    }
    if let Some(unknown) = tensors.keys().find(|k| !expected.contains_key(*k)) {
        return Err(err(format!("tensor {unknown:?} is not part of this model")));
    }
    Ok(())
}
