//! The named parameter store of the dense network (name -> runtime-shaped dfdx tensor) and the
//! dense Adam optimizer that walks it. dfdx 0.13's module system cannot hold runtime shapes
//! (see the crate docs, "Working with dfdx 0.13"), so parameters live here, like candle's
//! `VarMap`.

use dfdx::prelude::*;
use rand::Rng;
use rayon::prelude::*;

/// The compute device.
pub type Dev = Cpu;
/// A runtime-shaped matrix.
pub type Mat<T = NoneTape> = Tensor<(usize, usize), f32, Dev, T>;
/// A runtime-shaped vector.
pub type Vector<T = NoneTape> = Tensor<(usize,), f32, Dev, T>;
/// Gradients of one backward pass.
pub type Grads = Gradients<f32, Dev>;
/// Moves the gradient of `t` out of `grads` (no copy; zeros when `t` took no part in the
/// loss). Its entry is left empty, so each gradient is read once.
pub fn take_grad<S: Shape, T>(grads: &mut Grads, t: &Tensor<S, f32, Dev, T>) -> Result<Vec<f32>, CpuError> {
    Ok(std::mem::take(&mut **grads.get_or_alloc_mut(t)?))
}

/// The tape of a training forward pass.
pub type Taped = OwnedTape<f32, Dev>;

/// The tapes a forward pass may carry: none (inference) or an owned tape (training).
pub trait TapeKind: Tape<f32, Dev> + Merge<Self> + Merge<NoneTape> + Default {}
impl<T: Tape<f32, Dev> + Merge<T> + Merge<NoneTape> + Default> TapeKind for T {}

/// Index of a parameter in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

#[derive(Debug, Clone)]
enum Value {
    Matrix(Mat),
    Vector(Vector),
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    value: Value,
}

/// Dense parameters by name, in creation order.
#[derive(Debug, Clone)]
pub struct ParamStore {
    dev: Dev,
    entries: Vec<Entry>,
}

impl ParamStore {
    pub fn new(dev: Dev) -> Self {
        Self { dev, entries: Vec::new() }
    }

    pub fn device(&self) -> &Dev {
        &self.dev
    }

    fn push(&mut self, name: String, value: Value) -> ParamId {
        assert!(self.find(&name).is_none(), "parameter {name} defined twice");
        self.entries.push(Entry { name, value });
        ParamId(self.entries.len() - 1)
    }

    /// Adds a `rows x cols` matrix (row-major values).
    pub fn add_matrix(&mut self, name: impl Into<String>, rows: usize, cols: usize, values: Vec<f32>) -> ParamId {
        let t = self.dev.tensor_from_vec(values, (rows, cols));
        self.push(name.into(), Value::Matrix(t))
    }

    pub fn add_vector(&mut self, name: impl Into<String>, values: Vec<f32>) -> ParamId {
        let n = values.len();
        let t = self.dev.tensor_from_vec(values, (n,));
        self.push(name.into(), Value::Vector(t))
    }

    /// A Glorot-uniform `fan_in x fan_out` weight matrix and a zero bias.
    pub fn add_linear(&mut self, prefix: &str, fan_in: usize, fan_out: usize, rng: &mut impl Rng) -> Linear {
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
        let w = (0..fan_in * fan_out).map(|_| rng.gen_range(-limit..limit)).collect();
        Linear {
            w: self.add_matrix(format!("{prefix}.weight"), fan_in, fan_out, w),
            b: self.add_vector(format!("{prefix}.bias"), vec![0.0; fan_out]),
        }
    }

    pub fn matrix(&self, id: ParamId) -> &Mat {
        match &self.entries[id.0].value {
            Value::Matrix(m) => m,
            Value::Vector(_) => panic!("parameter {} is a vector", self.entries[id.0].name),
        }
    }

    pub fn vector(&self, id: ParamId) -> &Vector {
        match &self.entries[id.0].value {
            Value::Vector(v) => v,
            Value::Matrix(_) => panic!("parameter {} is a matrix", self.entries[id.0].name),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.entries.len()).map(ParamId)
    }

    pub fn name(&self, id: ParamId) -> &str {
        &self.entries[id.0].name
    }

    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.entries.iter().position(|e| e.name == name).map(ParamId)
    }

    pub fn shape(&self, id: ParamId) -> Vec<usize> {
        match &self.entries[id.0].value {
            Value::Matrix(m) => vec![m.shape().0, m.shape().1],
            Value::Vector(v) => vec![v.shape().0],
        }
    }

    pub fn numel(&self, id: ParamId) -> usize {
        self.shape(id).iter().product()
    }

    /// The values, row-major.
    pub fn values(&self, id: ParamId) -> Vec<f32> {
        // A plain copy: parameters are contiguous, and `as_vec` walks a strided index per value.
        let mut buf = vec![0.0; self.numel(id)];
        match &self.entries[id.0].value {
            Value::Matrix(m) => m.copy_into(&mut buf),
            Value::Vector(v) => v.copy_into(&mut buf),
        }
        buf
    }

    pub fn set_values(&mut self, id: ParamId, values: &[f32]) {
        assert_eq!(values.len(), self.numel(id), "set_values: wrong length for {}", self.name(id));
        match &mut self.entries[id.0].value {
            Value::Matrix(m) => m.copy_from(values),
            Value::Vector(v) => v.copy_from(values),
        }
    }

    /// The gradient of a parameter (zeros when it took no part in the loss), moved out of
    /// `grads` ([`take_grad`]: read each one once).
    pub fn grad(&self, grads: &mut Grads, id: ParamId) -> Vec<f32> {
        match &self.entries[id.0].value {
            Value::Matrix(m) => take_grad(grads, m),
            Value::Vector(v) => take_grad(grads, v),
        }
        .expect("cpu allocation")
    }
}

/// A dense layer `x W + b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    pub w: ParamId,
    pub b: ParamId,
}

impl Linear {
    pub fn fan_out(&self, store: &ParamStore) -> usize {
        store.matrix(self.w).shape().1
    }

    /// `x W + b`.
    pub fn forward<T: TapeKind>(&self, store: &ParamStore, x: Mat<T>) -> Mat<T> {
        crate::fused::linear(x, store.matrix(self.w), store.vector(self.b), false)
    }
}

/// Settings of the dense Adam optimizer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 for plain Adam.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Adam moments of every parameter of a store.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamState {
    pub step: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl AdamState {
    pub fn new(store: &ParamStore) -> Self {
        let zeros: Vec<Vec<f32>> = store.ids().map(|id| vec![0.0; store.numel(id)]).collect();
        Self { step: 0, m: zeros.clone(), v: zeros }
    }

    /// One Adam step with explicit gradients, one per parameter in store order (the trainer
    /// sums them over a step's parts or combines them over tasks first).
    pub fn update_with(&mut self, cfg: &AdamConfig, store: &mut ParamStore, grads: &[Vec<f32>]) {
        assert_eq!(grads.len(), store.len(), "one gradient per parameter");
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (cfg.beta1 as f32, cfg.beta2 as f32);
        let c1 = 1.0 - cfg.beta1.powi(t);
        let c2 = 1.0 - cfg.beta2.powi(t);
        let step_size = (cfg.lr * c2.sqrt() / c1) as f32;
        let eps = (cfg.eps * c2.sqrt()) as f32;
        let decay = (cfg.lr * cfg.weight_decay) as f32;
        for id in store.ids().collect::<Vec<_>>() {
            let g = &grads[id.0];
            let mut w = store.values(id);
            let (m, v) = (&mut self.m[id.0], &mut self.v[id.0]);
            // Element-wise, so the parallel split cannot change the result.
            const CHUNK: usize = 1 << 14;
            w.par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((w, m), v), g)| {
                    crate::cpu::clean_upper_state();
                    for i in 0..w.len() {
                        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                        w[i] -= step_size * m[i] / (v[i].sqrt() + eps) + decay * w[i];
                    }
                });
            store.set_values(id, &w);
        }
    }
}

/// Asserts that the analytic gradients of a scalar `objective` of the store and an input —
/// `input_grad` for the input, `grads` for every parameter — match central differences of
/// step 1e-2 within 2e-3 (relative above 1); inputs where `skip_input` holds (data, not
/// learned) are left out. `what` prefixes every failure. The layers' own tests share it.
#[cfg(test)]
pub(crate) fn assert_gradients_match_central_differences(
    store: &ParamStore,
    grads: &mut Grads,
    input: &[f32],
    input_grad: &[f32],
    skip_input: &dyn Fn(usize) -> bool,
    objective: &dyn Fn(&ParamStore, &[f32]) -> f64,
    what: &str,
) {
    let h = 1e-2f32;
    let close = |analytic: f32, numeric: f64, at: &str| {
        assert!(
            (f64::from(analytic) - numeric).abs() <= 2e-3 * (1.0 + numeric.abs()),
            "{what}, {at}: analytic {analytic} vs numeric {numeric}"
        );
    };
    for i in (0..input.len()).filter(|&i| !skip_input(i)) {
        let (mut up, mut down) = (input.to_vec(), input.to_vec());
        up[i] += h;
        down[i] -= h;
        let numeric = (objective(store, &up) - objective(store, &down)) / (2.0 * f64::from(h));
        close(input_grad[i], numeric, &format!("input {i}"));
    }
    for id in store.ids().collect::<Vec<_>>() {
        let analytic = store.grad(grads, id);
        let values = store.values(id);
        for i in 0..values.len() {
            let mut shifted = store.clone();
            let (mut up, mut down) = (values.clone(), values.clone());
            up[i] += h;
            down[i] -= h;
            shifted.set_values(id, &up);
            let plus = objective(&shifted, input);
            shifted.set_values(id, &down);
            let minus = objective(&shifted, input);
            close(analytic[i], (plus - minus) / (2.0 * f64::from(h)), &format!("{} [{i}]", store.name(id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_step_moves_each_weight_by_lr_against_its_gradient() {
        // With bias correction, Adam's first step is lr * g / (|g| + eps) = lr * sign(g).
        let mut store = ParamStore::new(Dev::default());
        let id = store.add_vector("w", vec![1.0, -2.0, 0.5]);
        let x = store.vector(id).clone().traced(Gradients::leaky());
        let loss = (x * store.device().tensor_from_vec(vec![3.0f32, -1.0, 0.0], (3,))).sum();
        let mut grads = loss.backward();
        let mut state = AdamState::new(&store);
        let g: Vec<Vec<f32>> = store.ids().map(|id| store.grad(&mut grads, id)).collect();
        state.update_with(&AdamConfig { lr: 0.1, ..Default::default() }, &mut store, &g);
        let w = store.values(id);
        assert!((w[0] - 0.9).abs() < 1e-6 && (w[1] + 1.9).abs() < 1e-6 && (w[2] - 0.5).abs() < 1e-6, "{w:?}");
    }
}
