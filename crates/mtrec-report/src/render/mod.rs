//! Rendering reports as Markdown and as one self-contained HTML file with inline SVG.
//!
//! Both renderers work on a [`View`]: an eval report is a one-model view, an A/B report a
//! two-model view with comparisons, so every section renders for both kinds.

mod html;
mod markdown;
mod svg;

pub use html::render_html;
pub use markdown::render_markdown;

use mtrec_schema::{History, Metric};

use crate::report::{AbReport, EvalReport, ExpertUsage, ReportedModel, TaskComparison, TaskEval, Verdict, VerdictTest};

/// A report of either kind, for the renderers.
#[derive(Debug, Clone, Copy)]
pub enum ReportRef<'a> {
    Eval(&'a EvalReport),
    Ab(&'a AbReport),
}

impl<'a> From<&'a EvalReport> for ReportRef<'a> {
    fn from(r: &'a EvalReport) -> Self {
        ReportRef::Eval(r)
    }
}

impl<'a> From<&'a AbReport> for ReportRef<'a> {
    fn from(r: &'a AbReport) -> Self {
        ReportRef::Ab(r)
    }
}

/// Colours of model A and model B in every chart.
pub(crate) const MODEL_COLORS: [&str; 2] = ["#2f6db5", "#d9731a"];

/// One model's slice of a view.
pub(crate) struct ModelView<'a> {
    pub info: &'a ReportedModel,
    pub label: &'static str,
    pub experts: &'a [ExpertUsage],
    pub history: Option<&'a History>,
}

pub(crate) struct TaskView<'a> {
    /// One evaluation per model, in model order.
    pub evals: Vec<&'a TaskEval>,
    pub comparison: Option<&'a TaskComparison>,
}

pub(crate) struct View<'a> {
    pub title: String,
    pub rows: usize,
    pub models: Vec<ModelView<'a>>,
    pub baseline: Option<&'a ReportedModel>,
    pub tasks: Vec<TaskView<'a>>,
    pub seesaw: Option<(bool, &'a [String], &'a [String])>,
    pub alpha: f64,
    pub ranking_k: usize,
}

impl<'a> View<'a> {
    pub(crate) fn new(report: ReportRef<'a>) -> View<'a> {
        match report {
            ReportRef::Eval(r) => View {
                title: format!("Evaluation: {}", r.model.name),
                rows: r.rows,
                models: vec![ModelView {
                    info: &r.model,
                    label: "model",
                    experts: &r.expert_usage,
                    history: r.history.as_ref(),
                }],
                baseline: None,
                tasks: r.tasks.iter().map(|t| TaskView { evals: vec![t], comparison: None }).collect(),
                seesaw: None,
                alpha: r.options.alpha,
                ranking_k: r.options.ranking_k,
            },
            ReportRef::Ab(r) => View {
                title: format!("A/B: {} vs {}", r.model_a.name, r.model_b.name),
                rows: r.rows,
                models: vec![
                    ModelView {
                        info: &r.model_a,
                        label: "A",
                        experts: &r.expert_usage.a,
                        history: r.training.a.as_ref(),
                    },
                    ModelView {
                        info: &r.model_b,
                        label: "B",
                        experts: &r.expert_usage.b,
                        history: r.training.b.as_ref(),
                    },
                ],
                baseline: r.baseline.as_ref(),
                tasks: r.tasks.iter().map(|t| TaskView { evals: vec![&t.a, &t.b], comparison: Some(t) }).collect(),
                seesaw: Some((r.seesaw, &r.improved_tasks, &r.degraded_tasks)),
                alpha: r.options.alpha,
                ranking_k: r.options.ranking_k,
            },
        }
    }
}

/// One row of the verdict table, the same in every rendering: the task's primary metric for A
/// and B, the delta, the interval and p-value of the test behind the verdict (DeLong's for
/// AUC, else the bootstrap's), and the verdict.
pub(crate) struct VerdictRow<'a> {
    pub task: &'a str,
    pub metric: Metric,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub delta: Option<f64>,
    pub ci: (Option<f64>, Option<f64>),
    pub p: Option<f64>,
    pub test: VerdictTest,
    pub verdict: Verdict,
}

impl View<'_> {
    /// The verdict table's rows (none for a one-model view).
    pub(crate) fn verdict_rows(&self) -> Vec<VerdictRow<'_>> {
        self.tasks
            .iter()
            .filter_map(|t| t.comparison)
            .map(|c| {
                let m = c.metrics.iter().find(|m| m.metric == c.primary_metric);
                let ci = match (&c.delong, m) {
                    (Some(d), _) if c.verdict_test == VerdictTest::Delong => (d.ci_low, d.ci_high),
                    (_, Some(m)) => (m.ci_low, m.ci_high),
                    _ => (None, None),
                };
                VerdictRow {
                    task: &c.task,
                    metric: c.primary_metric,
                    a: m.and_then(|m| m.a),
                    b: m.and_then(|m| m.b),
                    delta: m.and_then(|m| m.delta),
                    ci,
                    p: c.verdict_p_value,
                    test: c.verdict_test,
                    verdict: c.verdict,
                }
            })
            .collect()
    }
}

/// A metric's label: NDCG and recall with their cut-off `k`.
pub(crate) fn metric_label(metric: Metric, k: usize) -> String {
    match metric {
        Metric::Ndcg | Metric::Recall => format!("{metric}@{k}"),
        _ => metric.to_string(),
    }
}

/// A metric value with four decimals; an em dash when undefined.
pub(crate) fn fmt_value(v: Option<f64>) -> String {
    match v {
        Some(x) if x != 0.0 && x.abs() < 1e-3 => format!("{x:.2e}"),
        Some(x) => format!("{x:.4}"),
        None => "—".to_owned(),
    }
}

/// A signed delta.
pub(crate) fn fmt_delta(v: Option<f64>) -> String {
    match v {
        Some(x) if x != 0.0 && x.abs() < 1e-3 => format!("{x:+.2e}"),
        Some(x) => format!("{x:+.4}"),
        None => "—".to_owned(),
    }
}

/// A p-value: three decimals, scientific below 0.001.
pub(crate) fn fmt_p(v: Option<f64>) -> String {
    match v {
        Some(p) if p < 1e-3 => format!("{p:.1e}"),
        Some(p) => format!("{p:.3}"),
        None => "—".to_owned(),
    }
}

/// A percentage with sign.
pub(crate) fn fmt_gain(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |g| format!("{:+.2}%", 100.0 * g))
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_escapes() {
        assert_eq!(fmt_value(None), "—");
        assert_eq!(fmt_value(Some(0.71234)), "0.7123");
        assert_eq!(fmt_delta(Some(0.01)), "+0.0100");
        assert_eq!(fmt_p(Some(0.0001)), "1.0e-4");
        assert_eq!(fmt_gain(Some(0.0123)), "+1.23%");
        assert_eq!(escape_html("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
