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

use crate::report::{
    AbReport, ArmSummary, EvalReport, ExpertUsage, OnlineExperiment, ReportedModel, TaskComparison, TaskEval, Verdict,
    VerdictTest,
};

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
    /// The A/B report's verdict rule.
    pub verdict_rule: Option<&'a str>,
    pub alpha: f64,
    pub ranking_k: usize,
    pub online: Option<&'a OnlineExperiment>,
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
                verdict_rule: None,
                alpha: r.options.alpha,
                ranking_k: r.options.ranking_k,
                online: None,
            },
            ReportRef::Ab(r) => View {
                title: match r.online {
                    Some(_) => format!("Online A/B: {} vs {}", r.model_a.name, r.model_b.name),
                    None => format!("A/B: {} vs {}", r.model_a.name, r.model_b.name),
                },
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
                verdict_rule: Some(&r.verdict_rule),
                alpha: r.options.alpha,
                ranking_k: r.options.ranking_k,
                online: r.online.as_ref(),
            },
        }
    }
}

/// The columns of the online experiment's arms table, the same in every rendering.
pub(crate) const ARM_COLUMNS: [&str; 6] = ["arm", "versions", "users", "requests", "exposures", "rows with outcomes"];

/// One arm's cells of that table (unescaped).
pub(crate) fn arm_cells(arm: &ArmSummary) -> [String; 6] {
    [
        arm.arm.clone(),
        arm.versions.join(", "),
        arm.users.to_string(),
        arm.requests.to_string(),
        arm.exposures.to_string(),
        arm.rows.to_string(),
    ]
}

/// The online experiment in sentences, the same in every rendering: the sample-ratio check first
/// (a mismatch voids the comparison), then what was left out.
pub(crate) fn online_notes(online: &OnlineExperiment) -> (bool, Vec<String>) {
    let mut notes = Vec::new();
    match &online.sample_ratio {
        Some(s) => notes.push(format!(
            "Sample ratio: {} stable and {} candidate users, candidate share {:.4} against {:.4} configured; χ² {:.2}, \
             p {}. {}",
            s.counts[0],
            s.counts[1],
            s.observed_share_b,
            s.expected_share_b,
            s.chi_square,
            fmt_p(Some(s.p_value)),
            if online.sample_ratio_mismatch {
                format!(
                    "Sample ratio mismatch (p < {}): users were not split as configured, so the comparison below is \
                     not to be trusted until the cause (routing, logging, outcome joins) is found.",
                    online.srm_alpha
                )
            } else {
                format!("No sample ratio mismatch (p ≥ {}).", online.srm_alpha)
            }
        )),
        None => notes.push("Sample ratio: not checked (no users, or no configured share in (0, 1)).".to_owned()),
    }
    notes.push(format!(
        "Left out: {} exposures without an outcome, {} outcomes without an exposure, {} exposures outside the \
         experiment (pinned versions, no user id).",
        online.unmatched_exposures, online.unmatched_outcomes, online.excluded_exposures
    ));
    (online.sample_ratio_mismatch, notes)
}

/// One row of the verdict table, the same in every rendering (HTML, Markdown and the
/// quickstart's terminal table): the task's primary metric for A and B, the delta, the
/// interval, p-value and adjusted p-value of the test behind the verdict, the test and why,
/// the design effect, the minimum detectable effect, the verdict, and the note when DeLong's
/// row-independent test disagrees with the clustered tests.
#[derive(Debug, Clone)]
pub struct VerdictRow<'a> {
    pub task: &'a str,
    pub metric: Metric,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub delta: Option<f64>,
    pub ci: (Option<f64>, Option<f64>),
    pub p: Option<f64>,
    /// Benjamini–Hochberg adjusted over the tasks.
    pub q: Option<f64>,
    pub test: VerdictTest,
    pub reason: &'a str,
    pub design_effect: Option<f64>,
    pub min_detectable_effect: Option<f64>,
    pub verdict: Verdict,
    pub disagreement: Option<&'a str>,
}

/// The verdict table of an A/B report, one row per task.
pub fn verdict_rows(report: &AbReport) -> Vec<VerdictRow<'_>> {
    report.tasks.iter().map(verdict_row).collect()
}

fn verdict_row(c: &TaskComparison) -> VerdictRow<'_> {
    let m = c.metrics.iter().find(|m| m.metric == c.primary_metric);
    VerdictRow {
        task: &c.task,
        metric: c.primary_metric,
        a: m.and_then(|m| m.a),
        b: m.and_then(|m| m.b),
        delta: m.and_then(|m| m.delta),
        ci: (c.verdict_ci_low, c.verdict_ci_high),
        p: c.verdict_p_value,
        q: c.verdict_q_value,
        test: c.verdict_test,
        reason: &c.verdict_reason,
        design_effect: c.design_effect,
        min_detectable_effect: c.min_detectable_effect,
        verdict: c.verdict,
        disagreement: c.disagreement.as_deref(),
    }
}

impl View<'_> {
    /// The verdict table's rows (none for a one-model view).
    pub(crate) fn verdict_rows(&self) -> Vec<VerdictRow<'_>> {
        self.tasks.iter().filter_map(|t| t.comparison).map(verdict_row).collect()
    }
}

/// A design effect: two decimals; an em dash when undefined.
pub(crate) fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |x| format!("{x:.2}"))
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
