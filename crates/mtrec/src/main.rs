//! `mtrec`: glue that parses flags, calls the library crates and maps errors to exit codes
//! (0 success, 1 failure with the error chain on stderr, 2 bad usage).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

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
    /// Run the main job end to end on the built-in synthetic data: generate, ingest.
    Quickstart(QuickstartArgs),
}

#[derive(Debug, Subcommand)]
enum GenCommand {
    /// A synthetic interaction log with known true probabilities (see schemas/synthetic.json).
    Synthetic(SyntheticArgs),
}

#[derive(Debug, Args)]
struct SyntheticArgs {
    /// Output Parquet file (written atomically).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().users)]
    users: usize,
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().items)]
    items: usize,
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().rows)]
    rows: usize,
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().seed)]
    seed: u64,
    /// Cosine similarity of the click and conversion tasks' weight vectors, in [-1, 1].
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().task_correlation, allow_hyphen_values = true)]
    task_correlation: f64,
    /// Dimension of the users' and items' latent vectors.
    #[arg(long, default_value_t = mtrec_synth::SyntheticConfig::default().latent_dim)]
    latent_dim: usize,
}

impl SyntheticArgs {
    fn config(&self) -> mtrec_synth::SyntheticConfig {
        mtrec_synth::SyntheticConfig {
            users: self.users,
            items: self.items,
            rows: self.rows,
            seed: self.seed,
            task_correlation: self.task_correlation,
            latent_dim: self.latent_dim,
        }
    }
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// Dataset schema (JSON); see schemas/dataset.schema.json.
    #[arg(long)]
    schema: PathBuf,
    /// File(s) or glob(s) to read instead of the schema's source.path.
    #[arg(long, num_args = 1..)]
    input: Vec<String>,
    /// Output directory (must not exist, unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output directory (only once the new one is complete).
    #[arg(long)]
    force: bool,
    /// Print the report as JSON instead of the readable summary.
    #[arg(long)]
    json: bool,
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
            generate(&args.config(), &args.out)?;
            Ok(())
        }
        Command::Ingest(args) => {
            let ingested = mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
                schema: args.schema,
                input: args.input,
                out: args.out.clone(),
                force: args.force,
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
        Command::Quickstart(args) => quickstart(&args),
    }
}

fn generate(cfg: &mtrec_synth::SyntheticConfig, out: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let mut df = mtrec_synth::generate(cfg).context("generating synthetic data")?;
    mtrec_synth::write_parquet(&mut df, out).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} ({} rows, {:.1}s)", out.display(), df.height(), started.elapsed().as_secs_f64());
    Ok(())
}

fn quickstart(args: &QuickstartArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let data = args.out.join("synthetic.parquet");
    let cfg = mtrec_synth::SyntheticConfig { rows: args.rows, seed: args.seed, ..Default::default() };
    println!("== 1/2 generate synthetic data");
    generate(&cfg, &data)?;
    let schema = args.out.join("synthetic.schema.json");
    std::fs::write(&schema, SYNTHETIC_SCHEMA).with_context(|| format!("writing {}", schema.display()))?;
    println!("\n== 2/2 ingest");
    let ingest_dir = args.out.join("ingest");
    let ingested = mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
        schema,
        input: vec![data.to_string_lossy().into_owned()],
        out: ingest_dir.clone(),
        force: true,
    })?;
    println!("{}\nwrote {}", ingested.report, ingest_dir.display());
    Ok(())
}
