//! Gradients taken apart per task: what the per-task strategies (GradNorm, PCGrad) combine and
//! what the relatedness diagnostics compare.

/// Per task with a label in the batch (`None` elsewhere): its loss, its gradients on every
/// dense parameter (in store order), and on the assembled input (for the embedding rows).
#[derive(Debug)]
pub(crate) struct TaskGradients {
    pub values: Vec<Option<f32>>,
    pub dense: Vec<Option<Vec<Vec<f32>>>>,
    pub input: Vec<Option<Vec<f32>>>,
}

impl TaskGradients {
    /// The tasks with a gradient, in task order.
    pub fn present(&self) -> Vec<usize> {
        (0..self.dense.len()).filter(|&t| self.dense[t].is_some()).collect()
    }

    /// The dense parameters (indices, ascending) that two or more tasks' gradients reach: what
    /// the tasks share, and where their gradients can conflict.
    pub fn shared_parameters(&self) -> Vec<usize> {
        let dense = &self.dense;
        let n_params = dense.iter().flatten().next().map_or(0, Vec::len);
        (0..n_params)
            .filter(|&p| dense.iter().flatten().filter(|d| d[p].iter().any(|g| *g != 0.0)).count() >= 2)
            .collect()
    }
}

/// `acc += c * g`, element by element.
pub(crate) fn add_scaled(acc: &mut [f32], g: &[f32], c: f32) {
    acc.iter_mut().zip(g).for_each(|(a, g)| *a += c * g);
}
