//! The A/B verdicts' calibration: false-positive rates under A/A and power for planted effects,
//! on clustered synthetic data ([`mtrec_report::calibration`]), printed as Markdown tables.
//!
//! Usage: `cargo run --release -p mtrec-report --example ab_calibration -- [EXPERIMENTS]
//! [BOOTSTRAP_REPLICATES]` (default 1000 experiments per setting, 200 replicates).
//! `benches/ab_calibration.sh` runs it.

use std::time::Instant;

use mtrec_report::calibration::{binomial_interval, run, Calibration, Scenario};

fn rate(count: usize, n: usize) -> String {
    format!("{:.3}", count as f64 / n as f64)
}

/// A rate with a mark when it lies outside the binomial 99.9% interval around alpha.
fn checked(count: usize, bounds: (usize, usize), n: usize) -> String {
    let mark = if count < bounds.0 || count > bounds.1 { " ✗" } else { "" };
    format!("{}{mark}", rate(count, n))
}

fn run_or_exit(scenario: &Scenario) -> Calibration {
    run(scenario).unwrap_or_else(|e| {
        eprintln!("ab_calibration: {e}");
        std::process::exit(1)
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let number = |arg: Option<String>, default: usize| {
        arg.map_or(default, |a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!("usage: ab_calibration [EXPERIMENTS] [BOOTSTRAP_REPLICATES]");
                std::process::exit(2)
            })
        })
    };
    let experiments = number(args.next(), 1000);
    let replicates = number(args.next(), 200);
    let base = Scenario { experiments, bootstrap_replicates: replicates, ..Scenario::default() };
    let started = Instant::now();
    println!(
        "threads {}, {experiments} experiments per setting, {replicates} bootstrap replicates, alpha {}",
        rayon::current_num_threads(),
        base.alpha
    );

    let (low, high) = binomial_interval(experiments, base.alpha, 0.999);
    println!(
        "\n### A/A: false-positive rates ({} users, {}-{} rows each; ✗ = outside the 99.9% binomial interval [{}, {}] around {})\n",
        base.users,
        base.min_rows_per_user,
        base.max_rows_per_user,
        rate(low, experiments),
        rate(high, experiments),
        base.alpha
    );
    println!("| user effect SD | click design effect | click: DeLong, rows independent | click: clustered DeLong | click: bootstrap | verdict click | verdict like | verdict spend | verdict segment | any verdict | seesaw |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for user_effect in [0.0, 0.5, 1.0] {
        let c = run_or_exit(&Scenario { user_effect, ..base });
        let verdicts: Vec<String> = c
            .tasks
            .iter()
            .map(|t| format!("{} ({})", checked(t.significant(), (low, high), experiments), t.test.as_str()))
            .collect();
        println!(
            "| {user_effect} | {:.2} | {} | {} | {} | {} | {} | {} |",
            c.click_mean_design_effect,
            checked(c.click_row_independent_delong, (low, high), experiments),
            checked(c.click_clustered_delong, (low, high), experiments),
            checked(c.click_bootstrap, (low, high), experiments),
            verdicts.join(" | "),
            rate(c.any_verdict, experiments),
            rate(c.seesaw, experiments),
        );
    }

    println!("\n### Power on click (user effect SD 0.5, 10-100 rows per user; like, spend, segment A/A)\n");
    println!("| users | A's extra noise | mean ΔAUC | mean MDE (report) | detected (b_better) | false seesaw |");
    println!("|---|---|---|---|---|---|");
    for users in [100, 400] {
        for extra in [0.3, 0.5, 0.7] {
            let c = run_or_exit(&Scenario { users, click_extra_noise: extra, ..base });
            println!(
                "| {users} | {extra} | {:.4} | {:.4} | {} | {} |",
                c.click_mean_delta,
                c.click_mean_mde,
                rate(c.tasks[0].b_better, experiments),
                rate(c.seesaw, experiments)
            );
        }
    }
    println!("\n{:.0} s", started.elapsed().as_secs_f64());
}
