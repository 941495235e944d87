//! Metric names: one type for the trainer's validation, the reports and the experiment
//! summaries, so that they agree on what a metric is called, which direction is better, and
//! which metric decides for a task of each kind.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::TaskType;

/// A metric of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Area under the ROC curve.
    Auc,
    /// Per-user AUC, weighted by impressions.
    Gauc,
    /// Cross-entropy: binary, or of the true class for multiclass.
    Logloss,
    /// Expected calibration error.
    Ece,
    /// Mean predicted probability (descriptive: neither direction is better).
    MeanPredicted,
    /// NDCG@K per user.
    Ndcg,
    /// Recall@K per user.
    Recall,
    /// Mean reciprocal rank per user.
    Mrr,
    Rmse,
    Mae,
    /// Coefficient of determination.
    R2,
    /// RMSE on the label's own scale, for a regression learned through a label transform
    /// (`ln(1 + y)`): of `exp(output) − 1` against `exp(label) − 1`.
    LabelRmse,
    /// MAE on the label's own scale (see [`Metric::LabelRmse`]).
    LabelMae,
    /// R² on the label's own scale (see [`Metric::LabelRmse`]).
    LabelR2,
    Accuracy,
    /// Unweighted mean of per-class F1.
    MacroF1,
}

impl Metric {
    pub const ALL: [Metric; 16] = [
        Metric::Auc,
        Metric::Gauc,
        Metric::Logloss,
        Metric::Ece,
        Metric::MeanPredicted,
        Metric::Ndcg,
        Metric::Recall,
        Metric::Mrr,
        Metric::Rmse,
        Metric::Mae,
        Metric::R2,
        Metric::LabelRmse,
        Metric::LabelMae,
        Metric::LabelR2,
        Metric::Accuracy,
        Metric::MacroF1,
    ];

    /// The metric's name in files, configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Auc => "auc",
            Metric::Gauc => "gauc",
            Metric::Logloss => "logloss",
            Metric::Ece => "ece",
            Metric::MeanPredicted => "mean_predicted",
            Metric::Ndcg => "ndcg",
            Metric::Recall => "recall",
            Metric::Mrr => "mrr",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
            Metric::R2 => "r2",
            Metric::LabelRmse => "label_rmse",
            Metric::LabelMae => "label_mae",
            Metric::LabelR2 => "label_r2",
            Metric::Accuracy => "accuracy",
            Metric::MacroF1 => "macro_f1",
        }
    }

    /// `Some(true)` where higher is better, `Some(false)` where lower is, `None` for a
    /// descriptive metric.
    pub fn higher_is_better(self) -> Option<bool> {
        match self {
            Metric::Auc
            | Metric::Gauc
            | Metric::Ndcg
            | Metric::Recall
            | Metric::Mrr
            | Metric::R2
            | Metric::LabelR2
            | Metric::Accuracy
            | Metric::MacroF1 => Some(true),
            Metric::Logloss | Metric::Ece | Metric::Rmse | Metric::Mae | Metric::LabelRmse | Metric::LabelMae => {
                Some(false)
            }
            Metric::MeanPredicted => None,
        }
    }

    /// The metric a task of `kind` is judged by: AUC for binary tasks, RMSE for regression, and
    /// log loss for multiclass (a proper scoring rule, unlike accuracy, which ignores how the
    /// probability is spread over the other classes). A regression's RMSE is on the scale the
    /// model learns, the one its loss optimizes (for a `ln(1 + y)` label, a few extreme values
    /// would dominate an RMSE in the label's units).
    pub fn primary(kind: TaskType) -> Metric {
        match kind {
            TaskType::Binary => Metric::Auc,
            TaskType::Regression => Metric::Rmse,
            TaskType::Multiclass => Metric::Logloss,
        }
    }

    /// The metrics the trainer computes on the valid split after every epoch.
    pub fn validation(kind: TaskType) -> &'static [Metric] {
        match kind {
            TaskType::Binary => &[Metric::Auc, Metric::Logloss],
            TaskType::Regression => &[Metric::Rmse],
            TaskType::Multiclass => &[Metric::Accuracy, Metric::Logloss],
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Metrics order by name, so maps keyed by them read alphabetically, as their JSON does.
impl Ord for Metric {
    fn cmp(&self, other: &Self) -> Ordering {
        self.name().cmp(other.name())
    }
}

impl PartialOrd for Metric {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A metric name or key that mtrec does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownMetric {
    #[error("unknown metric {0:?} (metrics: {list})", list = metric_list())]
    Metric(String),
    #[error("{0:?} is not a metric key: use \"loss\" or <task>.<metric>")]
    Key(String),
}

fn metric_list() -> String {
    Metric::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
}

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| UnknownMetric::Metric(s.to_owned()))
    }
}

/// What a validation value measures: the weighted validation loss Σ λ_i L_i (`loss`), the
/// tasks' primary metrics relative to the first epoch (`tasks`), or one task's metric
/// (`<task>.<metric>`, e.g. `click.auc`). Task names cannot contain a dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MetricKey {
    Loss,
    /// The mean over tasks of each task's [`Metric::primary`] validation metric relative to its
    /// value after the first epoch: `m / m₀` where higher is better, `m₀ / m` otherwise. Higher
    /// is better and the first epoch is 1; every task counts alike, whatever the scale of its
    /// loss.
    Tasks,
    Task {
        task: String,
        metric: Metric,
    },
}

impl MetricKey {
    pub fn task(task: impl Into<String>, metric: Metric) -> Self {
        MetricKey::Task { task: task.into(), metric }
    }

    /// Whether a higher value is better (the loss and every monitored metric have a direction;
    /// a descriptive metric counts as lower-is-better, which nothing monitors).
    pub fn higher_is_better(&self) -> bool {
        match self {
            MetricKey::Loss => false,
            MetricKey::Tasks => true,
            MetricKey::Task { metric, .. } => metric.higher_is_better().unwrap_or(false),
        }
    }

    /// Whether `value` improves on `best` by more than `min_delta` in this key's direction.
    pub fn improves(&self, value: f64, best: f64, min_delta: f64) -> bool {
        if self.higher_is_better() {
            value > best + min_delta
        } else {
            value < best - min_delta
        }
    }

    /// The key as text, in three parts.
    fn parts(&self) -> [&str; 3] {
        match self {
            MetricKey::Loss => ["loss", "", ""],
            MetricKey::Tasks => ["tasks", "", ""],
            MetricKey::Task { task, metric } => [task, ".", metric.name()],
        }
    }
}

impl fmt::Display for MetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.parts().concat())
    }
}

impl FromStr for MetricKey {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "loss" => return Ok(MetricKey::Loss),
            "tasks" => return Ok(MetricKey::Tasks),
            _ => {}
        }
        let (task, metric) = s.split_once('.').ok_or_else(|| UnknownMetric::Key(s.to_owned()))?;
        if task.is_empty() {
            return Err(UnknownMetric::Key(s.to_owned()));
        }
        Ok(MetricKey::Task { task: task.to_owned(), metric: metric.parse()? })
    }
}

/// Keys order as their text does, so maps keyed by them read as their JSON does.
impl Ord for MetricKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.parts(), other.parts());
        a.iter().flat_map(|p| p.bytes()).cmp(b.iter().flat_map(|p| p.bytes()))
    }
}

impl PartialOrd for MetricKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

macro_rules! serde_as_text {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_text!(Metric);
serde_as_text!(MetricKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_metric_has_a_distinct_name() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>(), Ok(m));
            assert_eq!(serde_json::to_value(m).unwrap(), serde_json::json!(m.name()));
        }
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
    }

    #[test]
    fn keys_parse_and_print_as_loss_or_task_dot_metric() {
        assert_eq!("loss".parse::<MetricKey>(), Ok(MetricKey::Loss));
        assert_eq!("tasks".parse::<MetricKey>(), Ok(MetricKey::Tasks));
        assert_eq!(MetricKey::Tasks.to_string(), "tasks");
        assert!(MetricKey::Tasks.higher_is_better());
        let key: MetricKey = "click.auc".parse().unwrap();
        assert_eq!(key, MetricKey::task("click", Metric::Auc));
        assert_eq!(key.to_string(), "click.auc");
        assert_eq!(
            serde_json::from_value::<MetricKey>(serde_json::json!("dwell.rmse")).unwrap().to_string(),
            "dwell.rmse"
        );
        assert!(matches!("click".parse::<MetricKey>(), Err(UnknownMetric::Key(_))));
        assert!(matches!(".auc".parse::<MetricKey>(), Err(UnknownMetric::Key(_))));
        assert!(matches!("click.acc".parse::<MetricKey>(), Err(UnknownMetric::Metric(_))));
    }

    #[test]
    fn directions_and_primary_metrics() {
        assert!(MetricKey::task("click", Metric::Auc).higher_is_better());
        assert!(!MetricKey::Loss.higher_is_better());
        assert!(!MetricKey::task("dwell", Metric::Rmse).higher_is_better());
        assert!(MetricKey::task("q", Metric::Accuracy).improves(0.61, 0.6, 0.0));
        assert!(!MetricKey::Loss.improves(0.5, 0.5, 0.0));
        assert!(MetricKey::Loss.improves(0.49, 0.5, 0.0));
        assert_eq!(Metric::primary(TaskType::Multiclass), Metric::Logloss);
        for kind in [TaskType::Binary, TaskType::Regression, TaskType::Multiclass] {
            assert!(Metric::validation(kind).contains(&Metric::primary(kind)), "{kind:?}");
        }
    }

    #[test]
    fn keys_order_as_their_text() {
        let mut keys: Vec<MetricKey> =
            ["loss", "click.logloss", "click.auc", "item_quality.accuracy", "dwell.rmse", "clicks.auc"]
                .iter()
                .map(|k| k.parse().unwrap())
                .collect();
        keys.sort();
        let mut text: Vec<String> = keys.iter().map(ToString::to_string).collect();
        let sorted_text = {
            let mut t = text.clone();
            t.sort();
            t
        };
        assert_eq!(text, sorted_text);
        text.dedup();
        assert_eq!(text.len(), 6);
    }
}
