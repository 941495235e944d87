//! Markdown: the same numbers as the HTML page, as tables.

use std::fmt::Write;

use super::{
    arm_cells, fmt_delta, fmt_gain, fmt_p, fmt_ratio, fmt_value, metric_label, online_notes, ReportRef, View,
    ARM_COLUMNS,
};

/// Escapes text for a Markdown table cell (pipes, HTML, emphasis characters).
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '*' | '_' | '`' | '[' | ']' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Renders a report as Markdown.
pub fn render_markdown<'a>(report: impl Into<ReportRef<'a>>) -> String {
    let view = View::new(report.into());
    let mut m = String::new();
    let _ = writeln!(m, "# {}\n\n{} rows evaluated.\n", md(&view.title), view.rows);
    m.push_str("| | model | description |\n|---|---|---|\n");
    for model in &view.models {
        let _ = writeln!(m, "| {} | {} | {} |", model.label, md(&model.info.name), md(&model.info.description));
    }
    if let Some(base) = view.baseline {
        let _ = writeln!(m, "| baseline | {} | {} |", md(&base.name), md(&base.description));
    }
    if let Some(online) = view.online {
        let _ = writeln!(
            m,
            "\n## Online experiment\n\n| {} |\n|{}",
            ARM_COLUMNS.join(" | "),
            "---|".repeat(ARM_COLUMNS.len())
        );
        for arm in &online.arms {
            let cells: Vec<String> = arm_cells(arm).iter().map(|c| md(c)).collect();
            let _ = writeln!(m, "| {} |", cells.join(" | "));
        }
        let (mismatch, notes) = online_notes(online);
        for (i, note) in notes.iter().enumerate() {
            if i == 0 && mismatch {
                let _ = writeln!(m, "\n**{}**", md(note));
            } else {
                let _ = writeln!(m, "\n{}", md(note));
            }
        }
    }
    if let Some((seesaw, improved, degraded)) = view.seesaw {
        if seesaw {
            let _ = writeln!(
                m,
                "\n**Seesaw:** B improves {} but degrades {}.",
                md(&improved.join(", ")),
                md(&degraded.join(", "))
            );
        } else {
            m.push_str("\nNo seesaw.\n");
        }
        m.push_str("\n## Verdicts\n\n| task | primary metric | A | B | Δ (B−A) | 95% CI | p | q (BH) | test | design effect | MDE | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        let rows = view.verdict_rows();
        for row in &rows {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | [{}, {}] | {} | {} | {} | {} | {} | {} |",
                md(row.task),
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
                row.verdict.as_str()
            );
        }
        if let Some(rule) = view.verdict_rule {
            let _ = writeln!(m, "\n{}\n", md(rule));
        }
        for row in &rows {
            let _ = writeln!(m, "- {}: {}.", md(row.task), md(row.reason));
            if let Some(note) = row.disagreement {
                let _ = writeln!(m, "  **{}**", md(note));
            }
        }
    }
    for task in &view.tasks {
        let e = task.evals[0];
        let evaluated =
            serde_json::to_value(e.evaluated).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let _ = writeln!(
            m,
            "\n## {}\n\n{} · evaluated {} · {} units · {} labeled rows, {} masked\n",
            md(&e.task),
            e.kind,
            evaluated,
            e.units,
            e.labeled_rows,
            e.masked_rows
        );
        match task.comparison {
            Some(c) => {
                m.push_str("| metric | A | B | Δ (B−A) | bootstrap CI | p |\n|---|---|---|---|---|---|\n");
                for x in &c.metrics {
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | {} | [{}, {}] | {} |",
                        metric_label(x.metric, view.ranking_k),
                        fmt_value(x.a),
                        fmt_value(x.b),
                        fmt_delta(x.delta),
                        fmt_delta(x.ci_low),
                        fmt_delta(x.ci_high),
                        fmt_p(x.p_value)
                    );
                }
                if let Some(d) = &c.clustered_delong {
                    let _ = writeln!(
                        m,
                        "\nDeLong clustered by user: ΔAUC {} (SE {}), CI [{}, {}], p {}.",
                        fmt_delta(d.delta),
                        fmt_value(d.std_error),
                        fmt_delta(d.ci_low),
                        fmt_delta(d.ci_high),
                        fmt_p(d.p_value)
                    );
                }
                if let Some(d) = &c.delong {
                    let _ = writeln!(
                        m,
                        "\nDeLong with units independent: ΔAUC {} (SE {}), CI [{}, {}], p {}.",
                        fmt_delta(d.delta),
                        fmt_value(d.std_error),
                        fmt_delta(d.ci_low),
                        fmt_delta(d.ci_high),
                        fmt_p(d.p_value)
                    );
                }
                let _ = writeln!(
                    m,
                    "\nVerdict {} by {} on {} (p {}, q {}); design effect {}; {} clusters.",
                    c.verdict.as_str(),
                    c.verdict_test.as_str(),
                    c.primary_metric,
                    fmt_p(c.verdict_p_value),
                    fmt_p(c.verdict_q_value),
                    fmt_ratio(c.design_effect),
                    c.clusters
                );
                if let Some(g) = &c.multitask_gain {
                    let _ = writeln!(
                        m,
                        "\nMulti-task gain on {} over baseline {}: A {}, B {}.",
                        g.metric,
                        fmt_value(g.baseline),
                        fmt_gain(g.a_gain),
                        fmt_gain(g.b_gain)
                    );
                }
            }
            None => {
                m.push_str("| metric | value |\n|---|---|\n");
                for (name, v) in &e.metrics {
                    let _ = writeln!(m, "| {} | {} |", metric_label(*name, view.ranking_k), fmt_value(*v));
                }
            }
        }
        if let Some(cal) = &e.calibration {
            let _ = writeln!(
                m,
                "\nCalibration: mean predicted {:.4}, observed {:.4}, ECE {:.4} ({} bins).",
                cal.mean_predicted,
                cal.observed_rate,
                cal.ece,
                cal.bins.len()
            );
        }
    }
    for model in view.models.iter().filter(|x| !x.experts.is_empty()) {
        let _ = writeln!(
            m,
            "\n## Expert usage: {}\n\n| task | mean weight per expert | mean entropy | entropy of mean |\n|---|---|---|---|",
            md(&model.info.name)
        );
        for u in model.experts {
            let weights: Vec<String> = u.mean_weight.iter().map(|w| format!("{w:.3}")).collect();
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} |",
                md(&u.task),
                weights.join(" "),
                fmt_value(u.mean_entropy),
                fmt_value(u.entropy_of_mean)
            );
        }
    }
    for model in &view.models {
        let Some(h) = model.history else { continue };
        let cosines = h.epochs.last().map(|e| e.gradient_cosine.clone()).unwrap_or_default();
        let mut pairs: Vec<&String> = h.label_correlation.keys().chain(cosines.keys()).collect();
        pairs.sort();
        pairs.dedup();
        if pairs.is_empty() {
            continue;
        }
        let _ = writeln!(
            m,
            "\n## Task relatedness: {}\n\n| tasks | label correlation | gradient cosine (last epoch) |\n|---|---|---|",
            md(&model.info.name)
        );
        for p in pairs {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                md(&p.replace('|', " · ")),
                fmt_value(h.label_correlation.get(p).copied()),
                fmt_value(cosines.get(p).copied())
            );
        }
    }
    for model in &view.models {
        let Some(h) = model.history.filter(|h| !h.epochs.is_empty()) else { continue };
        let _ = writeln!(
            m,
            "\n## Training: {}\n\nmonitor `{}`, best epoch {}\n\n| epoch | valid {} | train loss (sum) | seconds |\n|---|---|---|---|",
            md(&model.info.name),
            md(&h.monitor.to_string()),
            h.best_epoch.map_or("—".to_owned(), |b| b.to_string()),
            md(&h.monitor.to_string())
        );
        for e in &h.epochs {
            let valid = e.valid.get(&h.monitor).copied().filter(|v| v.is_finite());
            let _ = writeln!(
                m,
                "| {} | {} | {} | {:.1} |",
                e.epoch,
                fmt_value(valid),
                fmt_value(Some(e.train_loss.values().sum())),
                e.seconds
            );
        }
    }
    m
}
