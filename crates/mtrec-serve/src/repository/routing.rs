//! Labels and the online experiment of one model name: which version `stable` and `candidate`
//! point at, and which share of users the candidate scores. Kept in `<repository>/<name>/routing.json`
//! (written by hand or by `PUT /v1/admin/models/{name}/routing`).
//!
//! A user's arm is sticky: the user id's 64-bit xxh3 hash, seeded with the experiment's seed,
//! read as a number in [0, 1), is below `candidate_share` for the candidate arm. The same id and
//! seed give the same arm on every replica and after every restart; a new seed reshuffles users
//! for a new experiment.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The file of a model's labels and experiment, beside its versions.
pub const ROUTING_FILE: &str = "routing.json";

/// The label most requests are scored by.
pub const STABLE: &str = "stable";
/// The label an experiment routes its share of users to.
pub const CANDIDATE: &str = "candidate";

/// `routing.json`: labels and the experiment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Label → version (e.g. `{"stable": "3", "candidate": "4"}`). Without `stable`, the newest
    /// ready version serves.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Routes a share of users to `candidate`; absent: every request goes to `stable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
}

/// A sticky split of users between `stable` and `candidate`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Share of users (by user id) scored by `candidate`, in [0, 1].
    pub candidate_share: f64,
    /// Seeds the user hash.
    #[serde(default)]
    pub seed: u64,
}

/// Which arm scored a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The stable version (every request outside an experiment's candidate share).
    Stable,
    /// The experiment's candidate.
    Candidate,
    /// A request that named its version or label (`?version=` or `?label=`): outside any
    /// experiment.
    Pinned,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Stable => "stable",
            Arm::Candidate => "candidate",
            Arm::Pinned => "pinned",
        }
    }
}

impl std::fmt::Display for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Routing {
    /// Checks what serde cannot: the share's range and the label names' form.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(e) = &self.experiment {
            if !(0.0..=1.0).contains(&e.candidate_share) {
                return Err(format!("experiment.candidate_share must lie in [0, 1], got {}", e.candidate_share));
            }
        }
        for (label, version) in &self.labels {
            if label.is_empty() || version.is_empty() {
                return Err(format!("labels.{label}: labels and versions must not be empty"));
            }
        }
        Ok(())
    }
}

impl Experiment {
    /// The arm of a user: candidate when the user's bucket falls below the share.
    pub fn arm(&self, user_key: &str) -> Arm {
        if user_bucket(self.seed, user_key) < self.candidate_share {
            Arm::Candidate
        } else {
            Arm::Stable
        }
    }
}

/// A user's position in [0, 1): the top 53 bits of the seeded xxh3 hash of the id's text.
pub fn user_bucket(seed: u64, user_key: &str) -> f64 {
    let hash = xxhash_rust::xxh3::xxh3_64_with_seed(user_key.as_bytes(), seed);
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_share_is_binomial_over_many_users_and_sticky() {
        let experiment = Experiment { candidate_share: 0.1, seed: 7 };
        let n = 100_000;
        let candidates = (0..n).filter(|u| experiment.arm(&u.to_string()) == Arm::Candidate).count();
        // Binomial(1e5, 0.1): sd = sqrt(1e5 * 0.1 * 0.9) ≈ 94.9; 4.5 sd ≈ 427 (p ≈ 7e-6).
        assert!((candidates as i64 - 10_000).abs() < 427, "{candidates} candidates of {n}");
        for u in 0..1_000 {
            let key = format!("user-{u}");
            assert_eq!(experiment.arm(&key), experiment.arm(&key));
        }
        // Another seed reshuffles: about 18% of users change arm (2 × 0.1 × 0.9).
        let other = Experiment { seed: 8, ..experiment.clone() };
        let moved = (0..n).filter(|u| experiment.arm(&u.to_string()) != other.arm(&u.to_string())).count();
        assert!((moved as f64 / n as f64 - 0.18).abs() < 0.01, "{moved} moved");
    }

    #[test]
    fn shares_zero_and_one_send_everyone_one_way() {
        let none = Experiment { candidate_share: 0.0, seed: 1 };
        let all = Experiment { candidate_share: 1.0, seed: 1 };
        assert!((0..1000).all(|u| none.arm(&u.to_string()) == Arm::Stable));
        assert!((0..1000).all(|u| all.arm(&u.to_string()) == Arm::Candidate));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = Routing { experiment: Some(Experiment { candidate_share: 1.5, seed: 0 }), ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("candidate_share"));
        let json = r#"{"labels": {"stable": "1"}, "experiment": {"candidate_share": 0.1, "seed": 3}}"#;
        let routing: Routing = serde_json::from_str(json).unwrap();
        assert_eq!(routing.labels["stable"], "1");
        assert!(routing.validate().is_ok());
    }
}
