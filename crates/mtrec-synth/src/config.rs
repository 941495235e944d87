//! The settings of a synthetic world.

use crate::error::SynthError;

/// Settings of the synthetic world; plain data so it can travel with every artifact.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of distinct users.
    pub users: usize,
    /// Number of distinct items.
    pub items: usize,
    /// Number of events (rows) in the log.
    pub rows: usize,
    /// Seed of every random stream.
    pub seed: u64,
    /// Seed of the event streams only (default: `seed`): another value draws new events in the
    /// same world of users and items, e.g. live traffic for models trained on the first log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_seed: Option<u64>,
    /// Cosine similarity of the click and conversion directions, in `[-1, 1]`.
    pub task_correlation: f64,
    /// Dimension of the user and item latent vectors, at least 2.
    pub latent_dim: usize,
    /// How much a user's recent clicks steer the next one: the click logit gains
    /// `history_effect · max_j cos(v, v_j)` over the latent vectors `v_j` of the user's recent
    /// clicks (0 without any), so a candidate like one just clicked is likelier to be clicked,
    /// whatever the user's long-term taste: what target attention over the history can see and
    /// a mean of it cannot. 0 (the default) leaves the world as it was.
    #[serde(skip_serializing_if = "is_zero")]
    pub history_effect: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            users: 2_000,
            items: 1_000,
            rows: 200_000,
            seed: 42,
            events_seed: None,
            task_correlation: 0.5,
            latent_dim: 8,
            history_effect: 0.0,
        }
    }
}

impl SyntheticConfig {
    /// The seed of the event streams.
    pub(crate) fn events_seed(&self) -> u64 {
        self.events_seed.unwrap_or(self.seed)
    }

    /// Checks every field, naming the first one that is out of range.
    pub fn validate(&self) -> Result<(), SynthError> {
        let invalid = |field: &'static str, message: String| Err(SynthError::InvalidConfig { field, message });
        if self.users < 1 {
            return invalid("users", format!("must be at least 1, got {}", self.users));
        }
        if self.items < 1 {
            return invalid("items", format!("must be at least 1, got {}", self.items));
        }
        if self.rows < 1 {
            return invalid("rows", format!("must be at least 1, got {}", self.rows));
        }
        if self.latent_dim < 2 {
            return invalid(
                "latent_dim",
                format!("must be at least 2 (w2 needs a direction orthogonal to w1), got {}", self.latent_dim),
            );
        }
        // `contains` is false for NaN, so NaN is rejected too.
        if !(self.history_effect.is_finite() && self.history_effect.abs() <= 10.0) {
            return invalid("history_effect", format!("must be in [-10, 10], got {}", self.history_effect));
        }
        if !(-1.0..=1.0).contains(&self.task_correlation) {
            return invalid("task_correlation", format!("must be in [-1, 1], got {}", self.task_correlation));
        }
        Ok(())
    }
}
