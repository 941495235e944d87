//! The A/B verdicts' calibration: false-positive rates under A/A and power for planted effects,
//! on clustered synthetic data ([`mtrec_report::calibration`]), printed as Markdown tables.
//!
//! Usage: `cargo run --release -p mtrec-report --example ab_calibration -- [EXPERIMENTS]
//! [BOOTSTRAP_REPLICATES] [aa|power|all]` (default 1000 experiments per setting, 200 replicates,
//! both tables). `benches/ab_calibration.sh` runs it.

use std::time::Instant;

use mtrec_report::calibration::{binomial_interval, run, Calibration, Scenario};

fn rate(count: usize, n: usize) -> String {
    format!("{:.3}", count as f64 / n as f64)
}

/// A rate, marked ✗ when the count lies outside `bounds`.
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
    let usage = || -> ! {
        eprintln!("usage: ab_calibration [EXPERIMENTS] [BOOTSTRAP_REPLICATES] [aa|power|all]");
        std::process::exit(2)
    };
    let number = |arg: Option<String>, default: usize| arg.map_or(default, |a| a.parse().unwrap_or_else(|_| usage()));
    let n = number(args.next(), 1000);
    let replicates = number(args.next(), 200);
    let (aa, power) = match args.next().as_deref() {
        None | Some("all") => (true, true),
        Some("aa") => (true, false),
        Some("power") => (false, true),
        Some(_) => usage(),
    };
    let base = Scenario { experiments: n, bootstrap_replicates: replicates, ..Scenario::default() };
    let started = Instant::now();
    println!(
        "threads {}, {n} experiments per setting, {replicates} bootstrap replicates, alpha {}",
        rayon::current_num_threads(),
        base.alpha
    );

    if aa {
        // A single test's rate should lie inside the interval; adjusted verdicts and family-wise
        // rates may only lie below it.
        let (low, high) = binomial_interval(n, base.alpha, 0.999);
        let (inside, at_most) = (|c: usize| checked(c, (low, high), n), |c: usize| checked(c, (0, high), n));
        println!(
            "\n### A/A: false-positive rates ({} users, {}-{} rows each; ✗: outside [{}, {}], the 99.9% binomial interval around {}, or above it for verdicts)\n",
            base.users,
            base.min_rows_per_user,
            base.max_rows_per_user,
            rate(low, n),
            rate(high, n),
            base.alpha
        );
        println!("| user effect SD | task | verdict test | design effect | verdict test alone | verdict (BH over 4 tasks) | DeLong, rows independent | user bootstrap of the AUC |");
        println!("|---|---|---|---|---|---|---|---|");
        let mut family = Vec::new();
        for user_effect in [0.0, 0.5, 1.0] {
            let c = run_or_exit(&Scenario { user_effect, ..base });
            for t in &c.tasks {
                let optional = |x: Option<usize>| x.map_or("—".to_owned(), inside);
                println!(
                    "| {user_effect} | {} | {} | {:.2} | {} | {} | {} | {} |",
                    t.task,
                    t.test.as_str(),
                    t.mean_design_effect,
                    inside(t.test_significant),
                    at_most(t.significant()),
                    optional(t.row_independent_delong),
                    optional(t.auc_bootstrap)
                );
            }
            family.push((user_effect, at_most(c.any_verdict), at_most(c.seesaw)));
        }
        println!("\n| user effect SD | any verdict (family-wise) | seesaw |\n|---|---|---|");
        for (user_effect, any, seesaw) in family {
            println!("| {user_effect} | {any} | {seesaw} |");
        }
    }
    if power {
        println!("\n### Power on click (user effect SD 0.5, 10-100 rows per user; like, spend, segment A/A)\n");
        println!("| users | A's extra noise | mean ΔAUC | mean MDE (report) | clustered DeLong alone, p < 0.05 | detected (b_better after BH) | false seesaw |");
        println!("|---|---|---|---|---|---|---|");
        for users in [100, 400] {
            for extra in [0.5, 0.7, 1.0, 1.3] {
                let c = run_or_exit(&Scenario { users, click_extra_noise: extra, ..base });
                let click = &c.tasks[0];
                println!(
                    "| {users} | {extra} | {:.4} | {:.4} | {} | {} | {} |",
                    click.mean_delta,
                    click.mean_mde,
                    rate(click.test_significant, n),
                    rate(click.b_better, n),
                    rate(c.seesaw, n)
                );
            }
        }
    }
    println!("\n{:.0} s", started.elapsed().as_secs_f64());
}
