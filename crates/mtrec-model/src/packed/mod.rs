//! The model packed for inference: what prediction, evaluation, validation and serving score
//! with.
//!
//! Training's forward pass ([`MultiTaskModel::forward`]) runs on dfdx's tape: every call
//! copies each weight matrix out of its tensor, and every step allocates tensors. A
//! [`PackedModel`] copies the dense weights once, when it is built, and then computes the same
//! function over plain buffers: on CPUs with AVX-512 or AVX2, layers wider than one vector
//! multiply with weights packed once for the crate's own kernels (`panels`), adding the bias and
//! applying the ReLU as they store; other layers use faer's products, then bias and ReLU in one
//! pass; all on the calling thread, with scratch buffers reused per thread. A call is split into blocks of rows that run in
//! parallel on rayon's pool, unless other calls already keep every thread busy (then larger
//! blocks make larger, more efficient products). A row's outputs do not depend on the other
//! rows of its block, bit for bit (a test checks it), so neither the split nor what runs beside
//! a call changes an answer: validation during training stays deterministic. The embedding
//! tables are not copied: a packed model scores with the model it was built from.
//!
//! Rows that share their user and context (a request's candidates) share the first layers'
//! products over those columns, and a group that sees no candidate runs once per distinct
//! row (`reuse`).
//!
//! - `dense`: packed layers, softmax mixtures and scratch buffers;
//! - `input`: a group's input (its columns, dot products, pooled sequences);
//! - `network`: the sharing architectures, expert banks and cross networks;
//! - `panels`: weights packed for the SIMD kernels, and the kernels;
//! - `reuse`: what a request's rows share, computed once.
//!
//! Tests check it against the training forward for every architecture and head kind.

mod dense;
mod input;
mod network;
// The crate's one use of `unsafe`: SIMD intrinsics over raw pointers (see the module).
#[allow(unsafe_code)]
mod panels;
mod reuse;

use mtrec_schema::{Scope, TaskType};
use rayon::prelude::*;

use self::dense::{give, side_by_side, take, Chain, Dense};
use self::input::{GroupInput, Sequence};
use self::network::{cross, cross_layers, Cross, Hidden, Shared};
use self::reuse::{distinct_rows, pick_rows, ColumnSplit, FirstInput};
use crate::config::CrossStructure;
use crate::embedding::{BatchIds, FeatureData};
use crate::model::{MultiTaskModel, Predictions};

/// Rows per block of a batch: blocks run in parallel; fewer rows would make the products
/// less efficient than the parallelism gains.
const BLOCK_ROWS: usize = 64;

/// Rows per block when every thread of the pool is already scoring another call.
const BUSY_BLOCK_ROWS: usize = 512;

/// Calls of [`PackedModel::predict`] in progress (in this process), while it is held.
struct InFlight(usize);

static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl InFlight {
    fn enter() -> Self {
        Self(IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// Calls that were in progress when this one entered.
    fn others(&self) -> usize {
        self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One scope group of the model, packed.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    input: GroupInput,
    /// Which of the input's columns a request's candidates share.
    columns: ColumnSplit,
    /// Whether the first layers hold their parts for `columns` (not under a stacked cross
    /// network, which mixes every column first).
    split_first: bool,
    cross: Option<(Vec<Cross>, CrossStructure)>,
    shared: Shared,
    /// Indices of the group's tasks among the model's heads.
    tasks: Vec<usize>,
    towers: Vec<Chain>,
    outputs: Vec<Dense>,
}

/// A model's dense network with its weights packed for inference (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedModel {
    groups: Vec<Group>,
    /// Per head: its kind, its outputs and (for a product task) its factors.
    heads: Vec<(TaskType, usize, Vec<usize>)>,
    /// The assembled input's width and the model's parameter count, to check that it scores
    /// with the model it was built from.
    width: usize,
    parameters: usize,
    /// Whether rows reuse what they share (module `reuse`): on unless turned off.
    reuse: bool,
}

impl PackedModel {
    /// Copies `model`'s dense weights; later changes to `model`'s parameters are not seen.
    pub fn new(model: &MultiTaskModel) -> Self {
        let store = &model.params;
        let item = model.layout.scope_range(Scope::Item);
        let groups = model
            .groups
            .iter()
            .map(|g| {
                let input = GroupInput {
                    columns: model.layout.scope_range(g.scope),
                    dots: g.dots.clone(),
                    sequences: g.sequences.iter().map(|s| Sequence::new(store, s)).collect(),
                };
                let columns = ColumnSplit::new(&input.candidate_free(&item));
                let cross = g.cross.as_ref().map(|(net, structure)| (cross_layers(store, net), *structure));
                let mut shared = Shared::new(store, &g.sharing);
                let split_first = columns.is_useful() && !matches!(cross, Some((_, CrossStructure::Stacked)));
                if split_first {
                    shared.first_layers_mut().into_iter().for_each(|layer| columns.split(layer));
                }
                Group {
                    input,
                    columns,
                    split_first,
                    cross,
                    shared,
                    tasks: g.tasks.clone(),
                    towers: g.towers.iter().map(|t| Chain::new(store, &t.layers)).collect(),
                    outputs: g.outputs.iter().map(|o| Dense::new(store, o)).collect(),
                }
            })
            .collect();
        let heads = model.heads.iter().map(|h| (h.kind, h.outputs, h.factors.clone())).collect();
        Self { groups, heads, width: model.layout.width, parameters: model.parameter_count(), reuse: true }
    }

    /// Turns the reuse of what rows share on or off (on by default; the outputs agree to
    /// rounding either way): off, every row is computed in full, as a plain forward pass.
    pub fn with_reuse(self, reuse: bool) -> Self {
        Self { reuse, ..self }
    }

    /// Task outputs of `rows` of `data`, as [`MultiTaskModel::predict`] gives them:
    /// probabilities for binary tasks, values for regression, class probabilities for
    /// multiclass, and the gates' weights. `model` is the model this was built from.
    pub fn predict(&self, model: &MultiTaskModel, data: &[FeatureData<'_>], rows: &[usize]) -> Predictions {
        assert!(
            model.layout.width == self.width && model.parameter_count() == self.parameters,
            "a packed model scores with the model it was built from"
        );
        // Blocks of rows keep idle cores busy; when other calls already fill the pool, one
        // block per call does the same work with larger products.
        let calls = InFlight::enter();
        let blocks = match calls.others() + 1 >= rayon::current_num_threads() {
            true => rows.len().div_ceil(BUSY_BLOCK_ROWS),
            false => rows.len().div_ceil(BLOCK_ROWS),
        };
        // Balanced blocks (sizes differ by one at most).
        let blocks = blocks.max(1);
        let parts: Vec<Predictions> = (0..blocks)
            .into_par_iter()
            .map(|b| self.predict_block(model, data, &rows[b * rows.len() / blocks..(b + 1) * rows.len() / blocks]))
            .collect();
        let mut parts = parts.into_iter();
        let mut all = parts.next().expect("at least one block");
        for p in parts {
            all.rows += p.rows;
            all.outputs.iter_mut().zip(p.outputs).for_each(|(a, o)| a.extend(o));
            for (a, g) in all.gates.iter_mut().zip(p.gates) {
                if let (Some(a), Some(g)) = (a.as_mut(), g) {
                    a.extend(g);
                }
            }
        }
        all
    }

    fn predict_block(&self, model: &MultiTaskModel, data: &[FeatureData<'_>], rows: &[usize]) -> Predictions {
        let n = rows.len();
        let ids = BatchIds::new(&model.layout, data, rows);
        let mut x = take(n * self.width);
        model.tables.gather(&model.layout, data, rows, &ids, &mut x);
        let (logits, gates) = self.logits(&x, n);
        give(x);
        let outputs = self
            .heads
            .iter()
            .zip(logits)
            .map(|((kind, outputs, _), mut z)| {
                match kind {
                    TaskType::Binary => z.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
                    TaskType::Regression => {}
                    TaskType::Multiclass => dense::softmax_rows(&mut z, *outputs),
                }
                z
            })
            .collect();
        Predictions { rows: n, outputs, gates }
    }

    /// Every task's raw output (logits for binary and multiclass), `n x outputs`, and the
    /// gates' weights, for the `n` assembled rows of `x`.
    fn logits(&self, x: &[f32], n: usize) -> (Vec<Vec<f32>>, Vec<Option<Vec<f32>>>) {
        let mut logits: Vec<Vec<f32>> = vec![Vec::new(); self.heads.len()];
        let mut gates: Vec<Option<Vec<f32>>> = vec![None; self.heads.len()];
        for group in &self.groups {
            let input = group.input.read(x, self.width, n);
            let width = group.input.width();
            // A group whose input is all shared runs once per distinct row.
            if self.reuse && group.columns.rest.is_empty() && n > 1 {
                let (unique, of_row) = distinct_rows(&input, width, n, &group.columns.shared);
                if unique.len() < n {
                    let once = pick_rows(&input, width, &unique);
                    give(input);
                    let (outs, group_gates) = self.group_logits(group, once, unique.len());
                    for (k, (out, g)) in outs.into_iter().zip(group_gates).enumerate() {
                        let t = group.tasks[k];
                        logits[t] = expand(&out, &of_row);
                        gates[t] = g.map(|g| expand(&g, &of_row));
                    }
                    continue;
                }
            }
            let (outs, group_gates) = self.group_logits(group, input, n);
            for (k, (out, g)) in outs.into_iter().zip(group_gates).enumerate() {
                logits[group.tasks[k]] = out;
                gates[group.tasks[k]] = g;
            }
        }
        // Product tasks, after their factors (which come earlier in task order).
        for (t, (_, _, factors)) in self.heads.iter().enumerate().filter(|(_, h)| !h.2.is_empty()) {
            let mut product = logits[factors[0]].clone();
            for &f in &factors[1..] {
                product.iter_mut().zip(&logits[f]).for_each(|(p, &z)| *p = product_logit(*p, z));
            }
            logits[t] = product;
        }
        (logits, gates)
    }
}

impl PackedModel {
    /// The logits and gates of `group`'s tasks for the `n` rows of its `input`.
    fn group_logits(&self, group: &Group, input: Vec<f32>, n: usize) -> Hidden {
        let width = group.input.width();
        let (input, crossed) = match &group.cross {
            None => (input, None),
            Some((layers, CrossStructure::Stacked)) => {
                let crossed = cross(layers, &input, n);
                give(input);
                (crossed, None)
            }
            Some((layers, _)) => {
                let crossed = cross(layers, &input, n);
                (input, Some(crossed))
            }
        };
        let first = match self.reuse && group.split_first {
            true => FirstInput::split(&input, width, n, &group.columns),
            false => FirstInput::whole(&input, n),
        };
        let (hidden, gates) = group.shared.forward(&first, group.tasks.len());
        drop(first);
        give(input);
        let mut logits = Vec::with_capacity(hidden.len());
        for (k, h) in hidden.into_iter().enumerate() {
            let h = match &crossed {
                None => h,
                Some(c) => {
                    let joined = side_by_side(&h, h.len() / n.max(1), c, width, n);
                    give(h);
                    joined
                }
            };
            let h = group.towers[k].apply(h, n);
            logits.push(group.outputs[k].apply(&h, n, false));
            give(h);
        }
        if let Some(c) = crossed {
            give(c);
        }
        (logits, gates)
    }
}

/// Per row, the row `of_row[r]` of `values` (rows of equal width).
fn expand(values: &[f32], of_row: &[usize]) -> Vec<f32> {
    let distinct = of_row.iter().max().map_or(0, |&u| u + 1);
    let width = values.len() / distinct.max(1);
    of_row.iter().flat_map(|&u| values[u * width..(u + 1) * width].iter().copied()).collect()
}

/// The logit of `σ(a) σ(b)` (module `product`'s formula, on numbers).
fn product_logit(a: f32, b: f32) -> f32 {
    let ln_sigmoid = |z: f32| -(z.max(0.0) - z + (1.0 + (-z.abs()).exp()).ln());
    let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
    let one_minus_p = sigmoid(-a) + sigmoid(a) * sigmoid(-b);
    ln_sigmoid(a) + ln_sigmoid(b) - one_minus_p.clamp(f32::MIN_POSITIVE, f32::MAX).ln()
}
