//! One self-contained HTML page: inline CSS and SVG, no JavaScript, no external resources.

use std::fmt::Write;

use mtrec_schema::{EpochRecord, MetricKey};

use super::svg::{heat_color, Plot};
use super::{
    arm_cells, escape_html as esc, fmt_delta, fmt_gain, fmt_p, fmt_ratio, fmt_value, metric_label, online_notes,
    ModelView, ReportRef, TaskView, View, ARM_COLUMNS, MODEL_COLORS,
};
use crate::report::{MetricComparison, Verdict};

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:32px 0 10px;border-bottom:2px solid #dde1e8;padding-bottom:4px}
h3{font-size:16px;margin:18px 0 8px}
.meta{color:#5b6475;font-size:14px}
section.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:14px 18px;margin:14px 0}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid #e6e8ee;text-align:right}
th{background:#f0f2f6;font-weight:600}td:first-child,th:first-child{text-align:left}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600}
.b_better{background:#dcf3e3;color:#17663a}.b_worse{background:#fbe0de;color:#9b1c1c}.no_significant_difference{background:#eceef2;color:#4a5160}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.banner.warn{background:#fff4d6;border:1px solid #f0c44c}.banner.ok{background:#e8f4ec;border:1px solid #9fd3b0}
.charts{display:flex;flex-wrap:wrap;gap:14px}
svg.chart{background:#fff;border:1px solid #eceef2;border-radius:6px}
svg .grid{stroke:#e9ebf0;stroke-width:1}svg .frame{fill:none;stroke:#9aa3b2}
svg .tick{font-size:11px;fill:#5b6475}svg .axis-title{font-size:12px;fill:#333a48}
svg .legend{font-size:12px;fill:#333a48}svg .cell-text{font-size:11px}svg .label{font-size:12px;fill:#333a48}
.models td,.models th{text-align:left}
"#;

/// Renders a report as one self-contained HTML page.
pub fn render_html<'a>(report: impl Into<ReportRef<'a>>) -> String {
    let view = View::new(report.into());
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body><main>",
        esc(&view.title)
    );
    let _ = write!(h, "<h1>{}</h1><div class=\"meta\">{} rows evaluated</div>", esc(&view.title), view.rows);
    models_table(&mut h, &view);
    if let Some(online) = view.online {
        h.push_str("<h2>Online experiment</h2><section class=\"card\"><table><tr>");
        for column in ARM_COLUMNS {
            let _ = write!(h, "<th>{column}</th>");
        }
        h.push_str("</tr>");
        for arm in &online.arms {
            h.push_str("<tr>");
            for cell in arm_cells(arm) {
                let _ = write!(h, "<td>{}</td>", esc(&cell));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
        let (mismatch, notes) = online_notes(online);
        for (i, note) in notes.iter().enumerate() {
            let class = if i == 0 && mismatch { "banner warn" } else { "meta" };
            let _ = write!(h, "<div class=\"{class}\">{}</div>", esc(note));
        }
        h.push_str("</section>");
    }
    if let Some((seesaw, improved, degraded)) = view.seesaw {
        if seesaw {
            let _ = write!(
                h,
                "<div class=\"banner warn\">Seesaw: B improves {} but degrades {} (α = {}).</div>",
                esc(&improved.join(", ")),
                esc(&degraded.join(", ")),
                view.alpha
            );
        } else {
            h.push_str(
                "<div class=\"banner ok\">No seesaw: no task improves while another degrades significantly.</div>",
            );
        }
        summary_table(&mut h, &view);
    }
    for task in &view.tasks {
        task_section(&mut h, &view, task);
    }
    experts_section(&mut h, &view);
    relatedness_section(&mut h, &view);
    training_section(&mut h, &view);
    h.push_str("</main></body></html>\n");
    h
}

fn models_table(h: &mut String, view: &View<'_>) {
    h.push_str("<section class=\"card\"><h3>Models</h3><table class=\"models\"><tr><th></th><th>name</th><th>description</th></tr>");
    for m in &view.models {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.label,
            esc(&m.info.name),
            esc(&m.info.description)
        );
    }
    if let Some(base) = view.baseline {
        let _ = write!(h, "<tr><td>baseline</td><td>{}</td><td>{}</td></tr>", esc(&base.name), esc(&base.description));
    }
    h.push_str("</table></section>");
}

fn badge(v: Verdict) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", v.as_str())
}

fn summary_table(h: &mut String, view: &View<'_>) {
    h.push_str("<section class=\"card\"><h3>Verdicts</h3><table><tr><th>task</th><th>primary metric</th><th>A</th><th>B</th><th>Δ (B−A)</th><th>95% CI</th><th>p</th><th>q (BH)</th><th>test</th><th>design effect</th><th>MDE</th><th>verdict</th></tr>");
    let rows = view.verdict_rows();
    for row in &rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>[{}, {}]</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(row.task),
            row.metric,
            fmt_value(row.a),
            fmt_value(row.b),
            fmt_delta(row.delta),
            fmt_delta(row.ci.0),
            fmt_delta(row.ci.1),
            fmt_p(row.p),
            fmt_p(row.q),
            row.test.as_str(),
            fmt_ratio(row.design_effect),
            fmt_value(row.min_detectable_effect),
            badge(row.verdict)
        );
    }
    h.push_str("</table>");
    if let Some(rule) = view.verdict_rule {
        let _ = write!(h, "<p class=\"meta\">{}</p>", esc(rule));
    }
    h.push_str("<ul class=\"meta\">");
    for row in &rows {
        let _ = write!(h, "<li>{}: {}.", esc(row.task), esc(row.reason));
        if let Some(note) = row.disagreement {
            let _ = write!(h, " <strong>{}</strong>", esc(note));
        }
        h.push_str("</li>");
    }
    h.push_str("</ul></section>");
}

fn task_section(h: &mut String, view: &View<'_>, task: &TaskView<'_>) {
    let first = task.evals[0];
    let _ = write!(
        h,
        "<section class=\"card\"><h2>{}</h2><div class=\"meta\">{} · scope {} · evaluated {} · {} units · {} labeled rows, {} masked</div>",
        esc(&first.task),
        first.kind,
        serde_json::to_value(first.scope).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        serde_json::to_value(first.evaluated).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        first.units,
        first.labeled_rows,
        first.masked_rows
    );
    match task.comparison {
        Some(c) => {
            h.push_str(
                "<table><tr><th>metric</th><th>A</th><th>B</th><th>Δ (B−A)</th><th>bootstrap CI</th><th>p</th></tr>",
            );
            for m in &c.metrics {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>[{}, {}]</td><td>{}</td></tr>",
                    metric_label(m.metric, view.ranking_k),
                    fmt_value(m.a),
                    fmt_value(m.b),
                    fmt_delta(m.delta),
                    fmt_delta(m.ci_low),
                    fmt_delta(m.ci_high),
                    fmt_p(m.p_value)
                );
            }
            h.push_str("</table>");
            for (label, test) in
                [("DeLong clustered by user", &c.clustered_delong), ("DeLong with units independent", &c.delong)]
            {
                if let Some(d) = test {
                    let _ = write!(
                        h,
                        "<p class=\"meta\">{label}: ΔAUC {} (SE {}), CI [{}, {}], z {}, p {}.</p>",
                        fmt_delta(d.delta),
                        fmt_value(d.std_error),
                        fmt_delta(d.ci_low),
                        fmt_delta(d.ci_high),
                        fmt_value(d.z),
                        fmt_p(d.p_value)
                    );
                }
            }
            let _ = write!(
                h,
                "<p class=\"meta\">Verdict {} by {} on {} (p {}, q {}); design effect {}; {} clusters.</p>",
                badge(c.verdict),
                c.verdict_test.as_str(),
                c.primary_metric,
                fmt_p(c.verdict_p_value),
                fmt_p(c.verdict_q_value),
                fmt_ratio(c.design_effect),
                c.clusters
            );
            if let Some(g) = &c.multitask_gain {
                let _ = write!(
                    h,
                    "<p class=\"meta\">Multi-task gain on {} over the single-task baseline ({}): A {}, B {}.</p>",
                    g.metric,
                    fmt_value(g.baseline),
                    fmt_gain(g.a_gain),
                    fmt_gain(g.b_gain)
                );
            }
        }
        None => {
            h.push_str("<table><tr><th>metric</th><th>value</th></tr>");
            for (name, v) in &first.metrics {
                let _ =
                    write!(h, "<tr><td>{}</td><td>{}</td></tr>", metric_label(*name, view.ranking_k), fmt_value(*v));
            }
            h.push_str("</table>");
        }
    }
    h.push_str("<div class=\"charts\">");
    if first.kind == "binary" {
        h.push_str(&roc_chart(view, task));
        h.push_str(&reliability_chart(view, task));
    }
    if let Some(c) = task.comparison {
        h.push_str(&delta_chart(&c.metrics, &c.task, view.ranking_k));
    }
    h.push_str("</div></section>");
}

fn model_legend<'a>(view: &'a View<'_>) -> Vec<(&'a str, &'static str)> {
    view.models.iter().zip(MODEL_COLORS).map(|(m, c)| (m.info.name.as_str(), c)).collect()
}

fn roc_chart(view: &View<'_>, task: &TaskView<'_>) -> String {
    let mut plot = Plot::new(380.0, 340.0, (0.0, 1.0), (0.0, 1.0));
    plot.axes("false positive rate", "true positive rate");
    plot.line(&[(0.0, 0.0), (1.0, 1.0)], "#a0a7b4", true);
    for (eval, color) in task.evals.iter().zip(MODEL_COLORS) {
        let points: Vec<(f64, f64)> = eval.roc.iter().map(|p| (p.fpr, p.tpr)).collect();
        plot.line(&points, color, false);
    }
    plot.legend(&model_legend(view));
    plot.finish(&format!("ROC: {}", task.evals[0].task), "roc")
}

fn reliability_chart(view: &View<'_>, task: &TaskView<'_>) -> String {
    let mut plot = Plot::new(380.0, 340.0, (0.0, 1.0), (0.0, 1.0));
    plot.axes("mean predicted probability", "observed positive rate");
    plot.line(&[(0.0, 0.0), (1.0, 1.0)], "#a0a7b4", true);
    for (eval, color) in task.evals.iter().zip(MODEL_COLORS) {
        let Some(cal) = &eval.calibration else { continue };
        let total: f64 = cal.bins.iter().map(|b| b.count).sum();
        let points: Vec<(f64, f64)> =
            cal.bins.iter().filter_map(|b| Some((b.mean_predicted?, b.observed_rate?))).collect();
        plot.line(&points, color, false);
        for b in &cal.bins {
            if let (Some(x), Some(y)) = (b.mean_predicted, b.observed_rate) {
                // Area grows with the bin's share of rows.
                let radius = 2.5 + 6.0 * (b.count / total).sqrt();
                let tip =
                    format!("[{:.2}, {:.2}): {} rows, predicted {x:.3}, observed {y:.3}", b.lower, b.upper, b.count);
                plot.point(x, y, radius, color, &tip);
            }
        }
    }
    plot.legend(&model_legend(view));
    plot.finish(&format!("Reliability: {}", task.evals[0].task), "reliability")
}

/// A line series: label, colour, (x, y) points.
struct Series<'a> {
    label: String,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// One row of the delta chart, in percent of |A|.
struct DeltaRow<'a> {
    label: String,
    delta: Option<f64>,
    low: Option<f64>,
    high: Option<f64>,
    color: &'a str,
}

/// Relative deltas `(B - A) / |A|` in percent with their CI whiskers, one row per metric,
/// so metrics on different scales share an axis.
fn delta_chart(metrics: &[MetricComparison], task: &str, k: usize) -> String {
    let relative = |x: Option<f64>, a: Option<f64>| -> Option<f64> {
        let (x, a) = (x?, a?);
        (a != 0.0).then(|| 100.0 * x / a.abs())
    };
    let rows: Vec<DeltaRow<'_>> = metrics
        .iter()
        .map(|m| {
            let color = match (m.higher_is_better, m.delta) {
                (Some(h), Some(d)) if d != 0.0 && (d > 0.0) == h => "#2e9e5b",
                (Some(_), Some(d)) if d != 0.0 => "#d0443a",
                _ => "#9aa3b2",
            };
            DeltaRow {
                label: metric_label(m.metric, k),
                delta: relative(m.delta, m.a),
                low: relative(m.ci_low, m.a),
                high: relative(m.ci_high, m.a),
                color,
            }
        })
        .collect();
    // One metric with a tiny A (an ECE near 0, say) can have a huge relative change and flatten
    // every other bar: the axis then stops at 3x the second-largest row, and the rows beyond
    // it are clipped at the edge with their value written there.
    let mut magnitudes: Vec<f64> = rows
        .iter()
        .map(|r| {
            [r.delta, r.low, r.high].into_iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |a, v| a.max(v.abs()))
        })
        .collect();
    magnitudes.sort_by(|a, b| b.total_cmp(a));
    let largest = magnitudes.first().copied().unwrap_or(0.0);
    let second = magnitudes.get(1).copied().unwrap_or(largest);
    let extent = if second > 0.0 && largest > 3.0 * second { 3.0 * second } else { largest }.max(1e-6) * 1.15;
    let clip = |v: f64| v.clamp(-extent, extent);
    let row_height = 26.0;
    let height = 34.0 + 44.0 + row_height * rows.len() as f64;
    let mut plot = Plot::new(420.0, height, (-extent, extent), (0.0, rows.len() as f64)).categorical_y(118.0);
    plot.axes("relative change (B − A) / |A|, %", "");
    let zero = plot.x(0.0);
    let mut svg = format!(
        r##"<line x1="{zero:.1}" y1="{:.1}" x2="{zero:.1}" y2="{:.1}" stroke="#5b6475" stroke-width="1.2"/>"##,
        plot.y(rows.len() as f64),
        plot.y(0.0)
    );
    for (i, DeltaRow { label, delta, low, high, color }) in rows.iter().enumerate() {
        let center = plot.y(rows.len() as f64 - i as f64 - 0.5);
        let _ = write!(
            svg,
            r#"<text x="110" y="{:.1}" class="label" text-anchor="end">{}</text>"#,
            center + 4.0,
            esc(label)
        );
        if let Some(d) = delta {
            let (x0, x1) = (zero.min(plot.x(clip(*d))), zero.max(plot.x(clip(*d))));
            let _ = write!(
                svg,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.75"><title>{} {:+.3}%</title></rect>"#,
                center - 8.0,
                (x1 - x0).max(1.0),
                16.0,
                esc(label),
                d
            );
            if d.abs() > extent {
                // Written over the bar's clipped end, so the true value stays readable.
                let (x, text_anchor) = if *d > 0.0 { (x1 - 3.0, "end") } else { (x0 + 3.0, "start") };
                let _ = write!(
                    svg,
                    r##"<text x="{x:.1}" y="{:.1}" class="label" text-anchor="{text_anchor}" fill="#fff">{:+.0}% (clipped)</text>"##,
                    center + 4.0,
                    d
                );
            }
        }
        if let (Some(lo), Some(hi)) = (low, high) {
            let (xl, xh) = (plot.x(clip(*lo)), plot.x(clip(*hi)));
            let _ = write!(
                svg,
                r##"<g stroke="#1d2330" stroke-width="1.4"><line x1="{xl:.1}" y1="{center:.1}" x2="{xh:.1}" y2="{center:.1}"/><line x1="{xl:.1}" y1="{:.1}" x2="{xl:.1}" y2="{:.1}"/><line x1="{xh:.1}" y1="{:.1}" x2="{xh:.1}" y2="{:.1}"/></g>"##,
                center - 5.0,
                center + 5.0,
                center - 5.0,
                center + 5.0
            );
        }
    }
    plot.raw(&svg);
    plot.legend(&[("improvement", "#2e9e5b"), ("degradation", "#d0443a"), ("neutral", "#9aa3b2")]);
    plot.finish(&format!("Deltas with bootstrap CIs: {task}"), "deltas")
}

fn gate_heatmap(model: &ModelView<'_>) -> String {
    let experts = model.experts.iter().map(|e| e.mean_weight.len()).max().unwrap_or(0);
    let (cell_w, cell_h, left, top) = (58.0, 30.0, 120.0, 44.0);
    let width = (left + cell_w * experts as f64 + 20.0).max(420.0);
    let height = top + cell_h * model.experts.len() as f64 + 16.0;
    let max = model.experts.iter().flat_map(|e| e.mean_weight.iter().copied()).fold(0.0f64, f64::max).max(1e-12);
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<text x="12" y="18" class="legend">{} ({}): mean gate weight per expert</text>"#,
        esc(&model.info.name),
        model.label
    );
    for e in 0..experts {
        let _ = write!(
            body,
            r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">e{e}</text>"#,
            left + cell_w * (e as f64 + 0.5),
            top - 6.0
        );
    }
    for (t, usage) in model.experts.iter().enumerate() {
        let y = top + cell_h * t as f64;
        let _ = write!(
            body,
            r#"<text x="{:.1}" y="{:.1}" class="label" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + cell_h / 2.0 + 4.0,
            esc(&usage.task)
        );
        for (e, &w) in usage.mean_weight.iter().enumerate() {
            let shade = w / max;
            let text_color = if shade > 0.55 { "#ffffff" } else { "#1d2330" };
            let x = left + cell_w * e as f64;
            let _ = write!(
                body,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{cell_w}" height="{cell_h}" fill="{}" stroke="#ffffff"><title>{} e{e}: {w:.4}</title></rect><text x="{:.1}" y="{:.1}" class="cell-text" text-anchor="middle" fill="{text_color}">{w:.2}</text>"##,
                heat_color(shade),
                esc(&usage.task),
                x + cell_w / 2.0,
                y + cell_h / 2.0 + 4.0
            );
        }
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-gates" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"><title>Gate usage: {}</title>{body}</svg>"#,
        esc(&model.info.name)
    )
}

fn experts_section(h: &mut String, view: &View<'_>) {
    if view.models.iter().all(|m| m.experts.is_empty()) {
        return;
    }
    h.push_str("<h2>Expert usage (gates of MMoE and PLE)</h2><section class=\"card\"><div class=\"charts\">");
    for m in view.models.iter().filter(|m| !m.experts.is_empty()) {
        h.push_str(&gate_heatmap(m));
    }
    h.push_str("</div><table><tr><th>model</th><th>task</th><th>mean gate entropy</th><th>entropy of mean</th><th>max entropy</th></tr>");
    for m in &view.models {
        for e in m.experts {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td></tr>",
                esc(&m.info.name),
                esc(&e.task),
                fmt_value(e.mean_entropy),
                fmt_value(e.entropy_of_mean),
                e.max_entropy
            );
        }
    }
    h.push_str("</table></section>");
}

/// Label correlation and the last epoch's gradient cosines per task pair, from each model's
/// `history.json`.
fn relatedness_section(h: &mut String, view: &View<'_>) {
    let rows: Vec<(&str, String, Option<f64>, Option<f64>)> = view
        .models
        .iter()
        .filter_map(|m| m.history.map(|hist| (m, hist)))
        .flat_map(|(m, hist)| {
            let cosines = hist.epochs.last().map(|e| e.gradient_cosine.clone()).unwrap_or_default();
            let mut pairs: Vec<&String> = hist.label_correlation.keys().chain(cosines.keys()).collect();
            pairs.sort();
            pairs.dedup();
            pairs
                .into_iter()
                .map(|p| {
                    (m.info.name.as_str(), p.clone(), hist.label_correlation.get(p).copied(), cosines.get(p).copied())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    h.push_str("<h2>Task relatedness</h2><section class=\"card\"><div class=\"meta\">Label correlation: Pearson's r between two tasks' labels on the train rows where both are labeled. Gradient cosine: at the last epoch, between the tasks' gradients on the parameters they share; negative values are conflicting tasks.</div>");
    h.push_str("<table><tr><th>model</th><th>tasks</th><th>label correlation</th><th>gradient cosine</th></tr>");
    for (model, pair, r, c) in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(model),
            esc(&pair.replace('|', " · ")),
            fmt_value(r),
            fmt_value(c)
        );
    }
    h.push_str("</table></section>");
}

fn training_section(h: &mut String, view: &View<'_>) {
    let histories: Vec<(&ModelView<'_>, &str)> =
        view.models.iter().zip(MODEL_COLORS).filter(|(m, _)| m.history.is_some_and(|h| !h.epochs.is_empty())).collect();
    if histories.is_empty() {
        return;
    }
    h.push_str("<h2>Training curves</h2><section class=\"card\"><div class=\"charts\">");
    let monitor = histories[0].0.history.map_or(MetricKey::Loss, |h| h.monitor.clone());
    let series = |value: &dyn Fn(&EpochRecord) -> f64| -> Vec<Series<'_>> {
        histories
            .iter()
            .map(|(m, color)| {
                let points =
                    m.history.map_or(Vec::new(), |h| h.epochs.iter().map(|e| (e.epoch as f64, value(e))).collect());
                Series { label: m.info.name.clone(), color, points }
            })
            .collect()
    };
    let valid = series(&|e| e.valid.get(&monitor).copied().unwrap_or(f64::NAN));
    let train = series(&|e| e.train_loss.values().sum());
    h.push_str(&curve_chart(&valid, &format!("valid {monitor}"), "training"));
    h.push_str(&curve_chart(&train, "train loss (sum over tasks)", "training"));
    h.push_str(
        "</div><table><tr><th>model</th><th>monitor</th><th>best epoch</th><th>epochs</th><th>last valid</th></tr>",
    );
    for (m, _) in &histories {
        if let Some(hist) = m.history {
            let last = hist.epochs.last().and_then(|e| e.valid.get(&hist.monitor).copied());
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.info.name),
                esc(&hist.monitor.to_string()),
                hist.best_epoch.map_or("—".to_owned(), |b| b.to_string()),
                hist.epochs.len(),
                fmt_value(last.filter(|v| v.is_finite()))
            );
        }
    }
    h.push_str("</table></section>");
}

fn curve_chart(series: &[Series<'_>], y_title: &str, kind: &str) -> String {
    let finite = || series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (x_lo, x_hi) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.0), h.max(p.0)));
    let (y_lo, y_hi) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.1), h.max(p.1)));
    let (x_lo, x_hi) = if x_lo.is_finite() { (x_lo, x_hi) } else { (0.0, 1.0) };
    let (y_lo, y_hi) = if y_lo.is_finite() { (y_lo, y_hi) } else { (0.0, 1.0) };
    let pad = (y_hi - y_lo).abs() * 0.08;
    let mut plot = Plot::new(480.0, 300.0, (x_lo, x_hi), (y_lo - pad, y_hi + pad));
    plot.axes("epoch", y_title);
    for s in series {
        plot.line(&s.points, s.color, false);
        for &(x, y) in &s.points {
            plot.point(x, y, 3.0, s.color, &format!("{} epoch {x}: {y:.4}", s.label));
        }
    }
    let legend: Vec<(&str, &str)> = series.iter().map(|s| (s.label.as_str(), s.color)).collect();
    plot.legend(&legend);
    plot.finish(y_title, kind)
}
