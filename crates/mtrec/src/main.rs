//! `mtrec`: glue that parses flags, calls the library crates and maps errors to exit codes
//! (0 success, 1 failure with the error chain on stderr, 2 bad usage).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

mod distributed;

// mimalloc: faster than the system allocator for the many small allocations of ingestion and
// training, and it returns memory to the OS more readily (lower peak RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mtrec: a multi-task recommender engine. Ingests logs, trains multi-task models, serves and
/// evaluates them.
#[derive(Debug, Parser)]
#[command(name = "mtrec", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a dataset (`mtrec gen synthetic --out F.parquet`).
    Gen {
        #[command(subcommand)]
        dataset: GenCommand,
    },
    /// Read raw logs with a dataset schema, fit the feature pipeline on train, write encoded
    /// Arrow splits, `features.json` and `ingest_report.json` into a new directory.
    Ingest(IngestArgs),
    /// Print the JSON Schema of dataset schema files (the content of
    /// `schemas/dataset.schema.json`).
    Schema,
    /// Train a multi-task model on an ingest directory and write a self-contained bundle.
    Train(TrainArgs),
    /// Score a split of an ingest directory with a bundle: every task's output per row
    /// (Parquet or Arrow IPC, by the output's extension).
    Predict(PredictArgs),
    /// Serve a bundle over HTTP: every task's output for every user-item pair (API v1, see
    /// schemas/openapi.json).
    Serve(ServeArgs),
    /// Simulate live traffic: send the newest rows of a raw log to a running server as
    /// /v1/score requests, and write each answered row's outcome (its logged labels) for
    /// `mtrec ab --exposures --outcomes`.
    Replay(ReplayArgs),
    /// Print the OpenAPI 3.1 description of the scoring API (the content of
    /// `schemas/openapi.json`).
    Openapi,
    /// One model's offline report on a split: report.html, report.md and report.json.
    Eval(EvalArgs),
    /// Compare two models on the same rows (paired bootstrap CIs, DeLong, verdicts, seesaw), or
    /// the two arms of an online experiment from the exposure log and outcomes (two-sample
    /// bootstrap, sample-ratio check): report.html, report.md and report.json.
    Ab(AbArgs),
    /// Train a grid of configurations (architectures × loss strategies × seeds) on one ingest
    /// and summarize: mean and 95% CI per task and configuration, multi-task gain, the best.
    Experiment(ExperimentArgs),
    /// Run the main job end to end on the built-in synthetic data: generate, ingest, train a
    /// shared-bottom and an MMoE, and write an A/B report between them.
    Quickstart(QuickstartArgs),
}

#[derive(Debug, Args)]
struct ExperimentArgs {
    /// Experiment file (JSON; see crates/mtrec-train/src/experiment.rs and configs/).
    #[arg(long)]
    config: PathBuf,
    /// Output directory: runs/<config>/seed-<s>/ bundles, summary.json, summary.md.
    #[arg(long)]
    out: PathBuf,
    /// Ingest directory (overrides the file's `data`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Runs at once (overrides the file's `parallel`).
    #[arg(long)]
    parallel: Option<usize>,
    /// Replace an existing output directory.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["bundle", "models"])))]
struct ServeArgs {
    /// Bundle directory (from `mtrec train`): serve this one model.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Model repository: serve every `<DIR>/<name>/<version>/` bundle, polled for new versions
    /// (each self-tested and warmed up before it takes traffic) and for `<name>/routing.json`
    /// (labels and the A/B experiment).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// The model of /v1/score with --models (default: the first name in sort order).
    #[arg(long, requires = "models")]
    default_model: Option<String>,
    /// Seconds between two reads of the repository.
    #[arg(long, default_value_t = 5.0)]
    poll_secs: f64,
    /// Versions of each model kept on disk and served, newest first, besides labeled ones and
    /// the one serving (older ones are deleted).
    #[arg(long, default_value_t = 3)]
    keep_versions: usize,
    /// Append what /v1/score answers (user, arm, version, items, every output) to Parquet files
    /// in this directory, for `mtrec ab --exposures`.
    #[arg(long, value_name = "DIR")]
    exposure_log: Option<PathBuf>,
    /// Exposure records waiting for the writer at most; beyond, records are dropped (counted in
    /// /metrics), never scoring slowed.
    #[arg(long, default_value_t = 10_000)]
    exposure_queue: usize,
    /// An exposure file is completed at this size (MiB) ...
    #[arg(long, default_value_t = 64)]
    exposure_rotate_mib: u64,
    /// ... or at this age (seconds).
    #[arg(long, default_value_t = 300)]
    exposure_rotate_secs: u64,
    /// User features keyed by the schema's user id column (CSV, Parquet or Arrow), encoded once
    /// at start; features in a request win. Default: the schema's user table the bundle's data
    /// was joined with, if any.
    #[arg(long)]
    user_features: Option<PathBuf>,
    /// Item features keyed by the schema's item id column. Default: the schema's item table.
    #[arg(long)]
    item_features: Option<PathBuf>,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Most items in one /v1/score request.
    #[arg(long, default_value_t = mtrec_serve::Limits::default().max_items)]
    max_items: usize,
    /// Most rows in one /v1/score/batch request.
    #[arg(long, default_value_t = mtrec_serve::Limits::default().max_batch_rows)]
    max_batch_rows: usize,
    /// Largest request body in MiB.
    #[arg(long, default_value_t = 32)]
    body_limit_mib: usize,
    /// Scoring requests taking longer are answered 503.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Bearer token of POST /v1/admin/reload (default: $MTREC_ADMIN_TOKEN; reload over HTTP
    /// is disabled without one; SIGHUP always reloads).
    #[arg(long)]
    admin_token: Option<String>,
    /// Scoring threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// A bundle of the served model (which column feeds which side, how labels are read).
    #[arg(long)]
    bundle: PathBuf,
    /// The raw log (CSV, Parquet or Arrow) whose newest rows are replayed.
    #[arg(long)]
    log: PathBuf,
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The model name to score with (default: the server's default model).
    #[arg(long)]
    model: Option<String>,
    /// The newest rows replayed, one request each.
    #[arg(long, default_value_t = 20_000)]
    rows: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The outcomes file (.parquet or .csv): user_id, item_id and a column per task.
    #[arg(long)]
    outcomes: PathBuf,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Ingest directory whose split is scored (not with --exposures).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    split: mtrec_schema::Split,
    /// Output directory for report.html, report.md and report.json.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    force: bool,
    /// Bootstrap replicates (users resampled with replacement).
    #[arg(long, default_value_t = mtrec_report::ReportOptions::default().bootstrap_replicates)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// K of NDCG@K and Recall@K.
    #[arg(long, default_value_t = mtrec_report::ReportOptions::default().ranking_k)]
    k: usize,
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    /// Threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl ReportArgs {
    fn report_options(&self) -> mtrec_report::ReportOptions {
        mtrec_report::ReportOptions {
            bootstrap_replicates: self.bootstrap,
            seed: self.seed,
            ranking_k: self.k,
            ..Default::default()
        }
    }

    fn options(&self) -> Result<mtrec_eval::EvalOptions> {
        let Some(data) = self.data.clone() else { bail!("--data is required: the ingest directory to score") };
        Ok(mtrec_eval::EvalOptions {
            data,
            split: self.split,
            batch_size: self.batch_size,
            report: self.report_options(),
            force: self.force,
            progress: !self.quiet,
        })
    }
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Bundle directory.
    #[arg(long)]
    bundle: PathBuf,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("offline").multiple(true).args(["a", "b", "baseline"]).conflicts_with("online")))]
#[command(group(clap::ArgGroup::new("online").multiple(true).args(["exposures", "outcomes"])))]
struct AbArgs {
    /// Bundle A (usually the model in production).
    #[arg(long, required_unless_present = "exposures")]
    a: Option<PathBuf>,
    /// Bundle B (the candidate).
    #[arg(long, required_unless_present = "exposures")]
    b: Option<PathBuf>,
    /// A single-task bundle: multi-task gain of A and B over it.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Online experiment: the exposure log directory of `mtrec serve --exposure-log` (A is the
    /// stable arm, B the candidate arm; users are compared between arms).
    #[arg(long, requires = "outcomes")]
    exposures: Option<PathBuf>,
    /// Online experiment: the outcomes (CSV, Parquet or Arrow): `user_id`, `item_id` and a label
    /// column per task, named as the task.
    #[arg(long, requires = "exposures")]
    outcomes: Option<PathBuf>,
    /// Online experiment: the candidate share routing was configured with (the sample-ratio
    /// check compares the arms' user counts with it).
    #[arg(long, requires = "exposures")]
    candidate_share: Option<f64>,
    /// Online experiment: the sample-ratio check fails below this p-value.
    #[arg(long, default_value_t = 0.001)]
    srm_alpha: f64,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// Ingest directory (from `mtrec ingest`).
    #[arg(long)]
    data: PathBuf,
    /// Training config (JSON; every field optional, see crates/mtrec-train/src/config.rs and
    /// configs/).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output bundle directory (replaced atomically when training ends); with --next-version,
    /// the model's directory in a model repository.
    #[arg(long)]
    out: PathBuf,
    /// Write the bundle into `<out>/<n>`, n one more than the largest numbered version there:
    /// the next version of a model repository (`mtrec serve --models`) picks up.
    #[arg(long)]
    next_version: bool,
    /// Continue from `<out>.checkpoint` if a previous run left one (after an epoch, or between
    /// two windows of shards of one).
    #[arg(long)]
    resume: bool,
    /// Stop after this many windows of shards (with a checkpoint `--resume` continues from):
    /// for time-boxed or preemptible jobs.
    #[arg(long)]
    stop_after_windows: Option<usize>,
    /// Train as one rank of an MPI job, data-parallel (`mpirun -np N mtrec train --distributed
    /// …`; `--threads` is per rank). Needs mtrec built with `--features mpi`.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: end the job when a rank has waited this long in one exchange of
    /// gradients or rows, because another rank hangs (0: wait forever). It must exceed the
    /// longest phase one rank spends alone (rank 0 writing a checkpoint, reading a window).
    #[arg(long, default_value_t = 1800)]
    exchange_timeout_secs: u64,
    #[command(flatten)]
    overrides: TrainOverrides,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Flags that override the config file's common settings.
#[derive(Debug, Args)]
struct TrainOverrides {
    /// shared_bottom, mmoe, single_task, ple or soft_sharing (with that architecture's default
    /// sizes unless the config sets them).
    #[arg(long)]
    architecture: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads (0: one per core).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Rows of a split in memory at a time (a larger split is read by windows of shards).
    #[arg(long)]
    window_rows: Option<usize>,
}

impl TrainOverrides {
    fn apply(&self, cfg: &mut mtrec_train::TrainConfig) -> Result<()> {
        use mtrec_model::ArchitectureConfig as A;
        if let Some(a) = &self.architecture {
            if cfg.model.architecture.name() != a {
                cfg.model.architecture = match a.as_str() {
                    "shared_bottom" => A::SharedBottom { layers: vec![128, 64] },
                    "mmoe" => A::default(),
                    "single_task" => A::SingleTask { layers: vec![64] },
                    "ple" => A::Ple { shared_experts: 2, task_experts: 1, expert_layers: vec![64], levels: 2 },
                    "soft_sharing" => A::SoftSharing { layers: vec![64], alpha: 1e-3 },
                    other => {
                        bail!("--architecture {other:?}: use shared_bottom, mmoe, single_task, ple or soft_sharing")
                    }
                };
            }
        }
        if let Some(v) = self.epochs {
            cfg.epochs = v;
        }
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        if let Some(v) = self.threads {
            cfg.threads = v;
        }
        if let Some(v) = self.batch_size {
            cfg.batch_size = v;
        }
        if let Some(v) = self.learning_rate {
            cfg.learning_rate = v;
        }
        if let Some(v) = self.window_rows {
            cfg.window_rows = v;
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
struct PredictArgs {
    #[arg(long)]
    bundle: PathBuf,
    /// Ingest directory encoded with the bundle's feature pipeline.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "test")]
    split: mtrec_schema::Split,
    /// Output file: .parquet or .arrow.
    #[arg(long)]
    out: PathBuf,
    /// Compression of a Parquet output: snappy, lz4, zstd (the smallest, a little slower) or none.
    #[arg(long, default_value = "snappy")]
    compression: mtrec_eval::predict::Compression,
    #[arg(long, default_value_t = 8192)]
    batch_size: usize,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum GenCommand {
    /// A synthetic interaction log with known true probabilities (see schemas/synthetic.json).
    Synthetic(SyntheticArgs),
}

#[derive(Debug, Args)]
struct SyntheticArgs {
    /// Output Parquet file (written atomically, one row group at a time: memory does not grow
    /// with --rows).
    #[arg(long)]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().users)]
    users: usize,
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().items)]
    items: usize,
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().rows)]
    rows: usize,
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().seed)]
    seed: u64,
    /// Seed of the events only (default: --seed): new events in the same world of users and
    /// items, e.g. live traffic for models trained on a first log.
    #[arg(long)]
    events_seed: Option<u64>,
    /// Cosine similarity of the click and conversion tasks' weight vectors, in [-1, 1].
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().task_correlation, allow_hyphen_values = true)]
    task_correlation: f64,
    /// Dimension of the users' and items' latent vectors.
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().latent_dim)]
    latent_dim: usize,
    /// How much the user's recent clicks steer the next click: the click logit gains
    /// history_effect times the largest cosine of the candidate to a recent click (0: none).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    history_effect: f64,
}

impl SyntheticArgs {
    fn config(&self) -> mtrec_synth::SyntheticConfig {
        mtrec_synth::SyntheticConfig {
            users: self.users,
            items: self.items,
            rows: self.rows,
            seed: self.seed,
            events_seed: self.events_seed,
            task_correlation: self.task_correlation,
            latent_dim: self.latent_dim,
            history_effect: self.history_effect,
        }
    }
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// Dataset schema (JSON); see schemas/dataset.schema.json.
    #[arg(long)]
    schema: PathBuf,
    /// Files, globs or directories (Hive partition folders included) to read instead of the
    /// schema's source.path.
    #[arg(long, num_args = 1..)]
    input: Vec<String>,
    /// Output directory (must not exist, unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output directory (only once the new one is complete).
    #[arg(long)]
    force: bool,
    /// Rows per shard of the encoded splits (train shards hold about this many).
    #[arg(long, default_value_t = mtrec_ingest::DEFAULT_SHARD_ROWS)]
    shard_rows: usize,
    /// Print the report as JSON instead of the readable summary.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct QuickstartArgs {
    /// Working directory for the generated data and every artifact.
    #[arg(long, default_value = "out/quickstart")]
    out: PathBuf,
    /// Rows of synthetic data.
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().rows)]
    rows: usize,
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().seed)]
    seed: u64,
    /// Training epochs (early stopping may end sooner).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
}

/// The synthetic dataset's schema, built in so the quickstart runs from any directory.
const SYNTHETIC_SCHEMA: &str = include_str!("../../../schemas/synthetic.json");

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MTREC_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Gen { dataset: GenCommand::Synthetic(args) } => {
            generate(&args.config(), &args.out, args.quiet)?;
            Ok(())
        }
        Command::Ingest(args) => {
            let ingested = mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
                input: args.input,
                force: args.force,
                shard_rows: args.shard_rows,
                progress: !args.quiet && !args.json,
                ..mtrec_ingest::IngestOptions::new(&args.schema, &args.out)
            })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&ingested.report)?);
            } else {
                println!("{}\nwrote {}", ingested.report, args.out.display());
            }
            Ok(())
        }
        Command::Schema => {
            print!("{}", mtrec_schema::json_schema());
            Ok(())
        }
        Command::Train(args) => {
            let mut cfg = match &args.config {
                Some(path) => mtrec_train::TrainConfig::load(path)?,
                None => mtrec_train::TrainConfig::default(),
            };
            args.overrides.apply(&mut cfg)?;
            init_threads(cfg.threads)?;
            let out = if args.next_version {
                let version = mtrec_serve::repository::scan::next_version(&args.out)
                    .with_context(|| format!("reading the versions of {}", args.out.display()))?;
                args.out.join(version)
            } else {
                args.out.clone()
            };
            let options = mtrec_train::TrainOptions {
                resume: args.resume,
                progress: !args.quiet,
                stop_after_windows: args.stop_after_windows,
                // A complete version is never resumed (the next run writes the next number).
                keep_checkpoint: !args.next_version,
                ..mtrec_train::TrainOptions::new(&args.data, cfg, &out)
            };
            let result = if args.distributed {
                distributed::train(&options, std::time::Duration::from_secs(args.exchange_timeout_secs)).transpose()
            } else {
                Some(mtrec_train::train(&options).map_err(anyhow::Error::from))
            };
            let trained = match result {
                // A rank other than 0: rank 0 reports.
                None => return Ok(()),
                Some(Err(e)) if matches!(e.downcast_ref(), Some(mtrec_train::TrainError::Stopped { .. })) => {
                    println!("{e}");
                    return Ok(());
                }
                Some(other) => other?,
            };
            print_validation(&trained.history);
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Predict(args) => {
            init_threads(args.threads)?;
            let bundle = mtrec_model::bundle::load(&args.bundle)?;
            let rows = mtrec_eval::predict::predict(
                &bundle,
                &args.data,
                args.split,
                &args.out,
                args.compression,
                args.batch_size,
                !args.quiet,
            )?;
            println!("wrote {} ({rows} rows)", args.out.display());
            Ok(())
        }
        Command::Serve(args) => serve(args),
        Command::Replay(args) => {
            let options = mtrec_serve::replay::ReplayOptions {
                bundle: args.bundle,
                log: args.log,
                url: args.url,
                model: args.model,
                rows: args.rows,
                connections: args.connections,
                outcomes: args.outcomes.clone(),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let summary = runtime.block_on(mtrec_serve::replay::replay(&options))?;
            let arms: Vec<String> = summary.arms.iter().map(|(arm, n)| format!("{arm} {n}")).collect();
            println!(
                "replayed {} rows: {} answered ({}), {} failed; wrote {} ({} outcomes)",
                summary.sent,
                summary.sent - summary.failed,
                arms.join(", "),
                summary.failed,
                args.outcomes.display(),
                summary.outcomes
            );
            if let Some(error) = summary.first_error {
                bail!("{} requests failed; the first: {error}", summary.failed);
            }
            Ok(())
        }
        Command::Openapi => {
            print!("{}", mtrec_serve::openapi::spec_string());
            Ok(())
        }
        Command::Eval(args) => {
            init_threads(args.report.threads)?;
            let report = mtrec_eval::eval(&args.bundle, &args.report.options()?, &args.report.out)?;
            print!("{}", mtrec_report::render_markdown(&report));
            println!("\nwrote {}", args.report.out.display());
            Ok(())
        }
        Command::Ab(args) => {
            init_threads(args.report.threads)?;
            let report = match (&args.exposures, &args.outcomes, &args.a, &args.b) {
                (Some(exposures), Some(outcomes), _, _) => {
                    let Some(candidate_share) = args.candidate_share else {
                        bail!("--candidate-share is required with --exposures: the share routing was configured with")
                    };
                    if !(candidate_share > 0.0 && candidate_share < 1.0) {
                        bail!("--candidate-share must lie in (0, 1) for the sample-ratio check, got {candidate_share}");
                    }
                    let options = mtrec_eval::OnlineOptions {
                        exposures: exposures.clone(),
                        outcomes: outcomes.clone(),
                        candidate_share,
                        srm_alpha: args.srm_alpha,
                        report: args.report.report_options(),
                        force: args.report.force,
                    };
                    mtrec_eval::ab_online(&options, &args.report.out)?
                }
                (_, _, Some(a), Some(b)) => {
                    mtrec_eval::ab(a, b, args.baseline.as_deref(), &args.report.options()?, &args.report.out)?
                }
                _ => bail!("give --a and --b (offline), or --exposures and --outcomes (online)"),
            };
            print_verdicts(&report);
            println!("wrote {}", args.report.out.display());
            Ok(())
        }
        Command::Experiment(args) => {
            let summary = mtrec_train::experiment::run(&mtrec_train::experiment::ExperimentOptions {
                config_path: args.config,
                data: args.data,
                parallel: args.parallel,
                out: args.out.clone(),
                force: args.force,
                progress: true,
            })?;
            print!("{}", mtrec_train::experiment::render_markdown(&summary));
            println!("wrote {}", args.out.display());
            Ok(())
        }
        Command::Quickstart(args) => quickstart(&args),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    init_threads(args.threads)?;
    let admin_token = args.admin_token.or_else(|| std::env::var("MTREC_ADMIN_TOKEN").ok()).filter(|t| !t.is_empty());
    if !(args.poll_secs > 0.0 && args.poll_secs.is_finite()) {
        bail!("--poll-secs must be a positive number of seconds, got {}", args.poll_secs);
    }
    let repository = args.models.map(|dir| mtrec_serve::RepositoryConfig {
        poll_interval: std::time::Duration::from_secs_f64(args.poll_secs),
        keep_versions: args.keep_versions.max(1),
        default_model: args.default_model,
        ..mtrec_serve::RepositoryConfig::new(dir)
    });
    let exposure = args.exposure_log.map(|dir| mtrec_serve::ExposureConfig {
        queue: args.exposure_queue.max(1),
        rotate_bytes: args.exposure_rotate_mib.max(1) << 20,
        rotate_after: std::time::Duration::from_secs(args.exposure_rotate_secs.max(1)),
        ..mtrec_serve::ExposureConfig::new(dir)
    });
    let config = mtrec_serve::ServeConfig {
        bundle: args.bundle.unwrap_or_default(),
        repository,
        exposure,
        tables: mtrec_serve::TablePaths { user: args.user_features, item: args.item_features },
        addr: args.addr,
        limits: mtrec_serve::Limits { max_items: args.max_items, max_batch_rows: args.max_batch_rows },
        body_limit: args.body_limit_mib * 1024 * 1024,
        request_timeout: std::time::Duration::from_millis(args.timeout_ms),
        admin_token,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    if let Some(repository) = &config.repository {
        if !repository.dir.is_dir() {
            bail!("--models {}: no such directory", repository.dir.display());
        }
        eprintln!(
            "mtrec serve: models of {} on http://{} (GET /v1/models lists them, GET /openapi.json describes the API)",
            repository.dir.display(),
            config.addr
        );
        runtime.block_on(mtrec_serve::run(config, None)).context("serving")?;
        return Ok(());
    }
    // Load before binding: a bundle that cannot be served fails here, with its error.
    let model = mtrec_serve::ServingModel::load(&config.bundle, &config.tables)?;
    eprintln!(
        "mtrec serve: model {} version {} on http://{} (GET /openapi.json describes the API)",
        model.model_ref.name, model.model_ref.version, config.addr
    );
    runtime.block_on(mtrec_serve::run(config, Some(model))).context("serving")?;
    Ok(())
}

/// The A/B verdict table: the rows that report.html and report.md show (the verdict test's
/// interval, p and Benjamini-Hochberg q, design effect, minimum detectable effect), any
/// disagreement between DeLong and the clustered tests, and the seesaw flag.
fn print_verdicts(report: &mtrec_report::AbReport) {
    println!("A = {}, B = {}, {} rows", report.model_a.name, report.model_b.name, report.rows);
    if let Some(online) = &report.online {
        for arm in &online.arms {
            println!(
                "arm {}: versions {}; {} users, {} requests, {} exposed pairs, {} with outcomes",
                arm.arm,
                arm.versions.join(", "),
                arm.users,
                arm.requests,
                arm.exposures,
                arm.rows
            );
        }
        match &online.sample_ratio {
            Some(s) => println!(
                "sample ratio: candidate share {:.4} against {:.4} configured, chi2 {:.2}, p {:.2e}{}",
                s.observed_share_b,
                s.expected_share_b,
                s.chi_square,
                s.p_value,
                if online.sample_ratio_mismatch {
                    " -- SAMPLE RATIO MISMATCH: users were not split as configured; do not trust this comparison"
                } else {
                    ""
                }
            ),
            None => println!("sample ratio: not checked"),
        }
    }
    println!(
        "{:<14} {:<8} {:>8} {:>8} {:>9}  {:<20} {:>8} {:>8}  {:<16} {:>5} {:>7}  verdict",
        "task", "metric", "A", "B", "B - A", "95% CI", "p", "q", "test", "deff", "MDE"
    );
    let num = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.4}"));
    let sci = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.2e}"));
    let rows = mtrec_report::verdict_rows(report);
    for row in &rows {
        println!(
            "{:<14} {:<8} {:>8} {:>8} {:>9}  {:<20} {:>8} {:>8}  {:<16} {:>5} {:>7}  {}",
            row.task,
            row.metric,
            num(row.a),
            num(row.b),
            num(row.delta),
            format!("[{}, {}]", num(row.ci.0), num(row.ci.1)),
            sci(row.p),
            sci(row.q),
            row.test.as_str(),
            row.design_effect.map_or_else(|| "-".to_owned(), |d| format!("{d:.2}")),
            num(row.min_detectable_effect),
            row.verdict.as_str()
        );
    }
    println!(
        "q: p adjusted by Benjamini-Hochberg over the {} tasks; a verdict needs q < {} (the rule: report.md)",
        rows.len(),
        report.options.alpha
    );
    for row in rows.iter().filter(|r| r.disagreement.is_some()) {
        println!("{}: {}", row.task, row.disagreement.unwrap_or_default());
    }
    if report.seesaw {
        println!("seesaw: B improves {:?} but degrades {:?}", report.improved_tasks, report.degraded_tasks);
    }
}

/// Sizes rayon's global pool, which dfdx's kernels and mtrec's batch assembly share.
fn init_threads(threads: usize) -> Result<()> {
    if threads > 0 {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("starting the thread pool")?;
    }
    Ok(())
}

/// Every task's validation metrics at the best epoch.
fn print_validation(history: &mtrec_schema::History) {
    let Some(best) = history.best() else {
        return;
    };
    println!("best epoch {} of {} (monitor: {})", best.epoch + 1, history.epochs.len(), history.monitor);
    println!("{:<28} {:>10}", "validation metric", "value");
    for (k, v) in &best.valid {
        println!("{k:<28} {v:>10.4}");
    }
}

/// Writes the synthetic log of `cfg` to `out` row group by row group (a progress bar on stderr
/// unless `quiet`).
fn generate(cfg: &mtrec_synth::SyntheticConfig, out: &Path, quiet: bool) -> Result<()> {
    let started = std::time::Instant::now();
    let bar = (!quiet).then(|| {
        let bar = indicatif::ProgressBar::new(cfg.rows as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "generating [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, {eta} left",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let progress = |rows: usize| {
        if let Some(bar) = &bar {
            bar.inc(rows as u64);
        }
    };
    mtrec_synth::write_synthetic(cfg, out, &progress).with_context(|| format!("writing {}", out.display()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!("wrote {} ({} rows, {:.1}s)", out.display(), cfg.rows, started.elapsed().as_secs_f64());
    Ok(())
}

fn quickstart(args: &QuickstartArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let data = args.out.join("synthetic.parquet");
    let cfg = mtrec_synth::SyntheticConfig { rows: args.rows, seed: args.seed, ..Default::default() };
    println!("== 1/5 generate synthetic data");
    generate(&cfg, &data, false)?;
    let schema = args.out.join("synthetic.schema.json");
    mtrec_schema::fs::write_file(&schema, SYNTHETIC_SCHEMA.as_bytes())
        .with_context(|| format!("writing {}", schema.display()))?;
    println!("\n== 2/5 ingest");
    let ingest_dir = args.out.join("ingest");
    let ingested = mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
        input: vec![data.to_string_lossy().into_owned()],
        force: true,
        ..mtrec_ingest::IngestOptions::new(&schema, &ingest_dir)
    })?;
    println!("{}\nwrote {}", ingested.report, ingest_dir.display());

    let train = |name: &str, architecture: mtrec_model::ArchitectureConfig| -> Result<PathBuf> {
        let bundle = args.out.join(name);
        let mut cfg = mtrec_train::TrainConfig { epochs: args.epochs, ..Default::default() };
        cfg.model.architecture = architecture;
        let trained = mtrec_train::train(&mtrec_train::TrainOptions {
            progress: true,
            keep_checkpoint: false,
            ..mtrec_train::TrainOptions::new(&ingest_dir, cfg, &bundle)
        })?;
        print_validation(&trained.history);
        println!("wrote {}", bundle.display());
        Ok(bundle)
    };
    println!("\n== 3/5 train a shared-bottom model (model A)");
    let shared_bottom =
        train("shared-bottom", mtrec_model::ArchitectureConfig::SharedBottom { layers: vec![128, 64] })?;
    println!("\n== 4/5 train an MMoE (model B)");
    let mmoe = train("mmoe", mtrec_train::TrainConfig::default().model.architecture)?;

    println!("\n== 5/5 A/B report on the test split");
    let report_dir = args.out.join("ab-report");
    let opts = mtrec_eval::EvalOptions {
        data: ingest_dir.clone(),
        split: mtrec_schema::Split::Test,
        batch_size: 4096,
        report: mtrec_report::ReportOptions::default(),
        force: true,
        progress: true,
    };
    let report = mtrec_eval::ab(&shared_bottom, &mmoe, None, &opts, &report_dir)?;
    print_verdicts(&report);
    println!("wrote {}/{{report.html, report.md, report.json}}", report_dir.display());
    Ok(())
}
