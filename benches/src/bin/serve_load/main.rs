//! Scoring-API benchmark: a load generator for `mtrec serve` on loopback, and the same requests
//! scored in process through `mtrec_serve::ServingModel::score`, so the two can be compared in
//! one run. Figures and commands: benches/README.md ("Serving: HTTP, in-process and
//! onnxruntime"); driver: benches/serve.sh.
//!
//! Requests (module `requests`) are built from raw Census rows (the CSV the model was trained
//! from) or from a synthetic log. Every Census feature is on the user side and there is no item
//! id, so a `/v1/score` request is one person (row `k * items`, all its fields as the user) and
//! `items` candidates carrying only an `id` (the numbers of the rows `k * items ..`): the rows
//! are equal, and only the plain forward pass (`--no-reuse`) computes each of them. A synthetic
//! request is the user and context of row `k * items` and the item ids of rows `k * items ..`,
//! whose features the server looks up in its item table (`serve_load item-table`).
//! `--endpoint batch` sends the same rows as a `/v1/score/batch` of `items` independent rows
//! instead.
//!
//! - `serve_load http --url http://127.0.0.1:PORT ...`: N connections (HTTP/1.1 keep-alive), each
//!   sending requests back to back for D seconds; pairs/s and latency percentiles.
//! - `serve_load inprocess --bundle B ...`: N threads calling `ServingModel::score` (on requests
//!   parsed up front) for D seconds, then one thread timing single calls (the time of one
//!   100-item forward pass). `--full` adds the JSON parsing of the request and the serializing of
//!   the answer, i.e. all the CPU work of the HTTP handler.
//!
//! Each measurement prints one JSON line on stdout.

mod requests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};

use crate::requests::request_bodies;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Load a running `mtrec serve` over HTTP.
    Http {
        /// Server base URL (http only), e.g. http://127.0.0.1:8080
        #[arg(long)]
        url: String,
        #[command(flatten)]
        requests: RequestArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Client runtime threads (1: the client takes as little CPU from the server as it can).
        #[arg(long, default_value_t = 1)]
        client_threads: usize,
        /// The server's process id: its CPU time over the measured window is reported.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Score the same requests in this process with `ServingModel::score`.
    Inprocess {
        /// Bundle directory (the one the server serves).
        #[arg(long)]
        bundle: PathBuf,
        #[command(flatten)]
        requests: RequestArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Timed single calls on one thread after the concurrent run (0: skip).
        #[arg(long, default_value_t = 2000)]
        single: usize,
        /// Also parse the request JSON and serialize the answer (the handler's whole CPU work).
        #[arg(long)]
        full: bool,
        /// Size of rayon's global pool, which the model's kernels use (0: one per core, like
        /// `mtrec serve`).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Compute every row in full, without the reuse of what a request's rows share: the
        /// plain forward pass (reported as mode `inprocess_plain`).
        #[arg(long)]
        no_reuse: bool,
        /// The item table the server is given (`mtrec serve --item-features`).
        #[arg(long)]
        item_features: Option<PathBuf>,
    },
    /// Write the item table of a synthetic log (for `mtrec serve --item-features`).
    ItemTable {
        #[arg(long)]
        synthetic: PathBuf,
        #[arg(long)]
        schema: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Endpoint {
    /// `/v1/score`: one user, `items` candidates.
    Score,
    /// `/v1/score/batch` (JSON): `items` independent rows.
    Batch,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RequestArgs {
    /// Raw Census file (CSV, optionally gzipped): requests of one person each.
    #[arg(long, required_unless_present = "synthetic", conflicts_with = "synthetic")]
    census: Option<PathBuf>,
    /// A synthetic log (`mtrec gen synthetic`, Parquet): requests of one user and context each,
    /// candidates by id (their features from the item table the server is given).
    #[arg(long)]
    synthetic: Option<PathBuf>,
    /// Dataset schema of the model (its source columns, null values and features).
    #[arg(long)]
    schema: PathBuf,
    /// Items (pairs) per request.
    #[arg(long, default_value_t = 100)]
    pub(crate) items: usize,
    /// Distinct requests, cycled through.
    #[arg(long, default_value_t = 200)]
    pub(crate) requests: usize,
    #[arg(long, value_enum, default_value_t = Endpoint::Score)]
    pub(crate) endpoint: Endpoint,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Concurrent connections (HTTP) or calling threads (in process).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds run before measuring (not recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

/// CPU seconds (user + system, all threads) a process has used so far, from `/proc` (Linux
/// only; `None` elsewhere).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ, 100 on Linux
}

/// CPU seconds used between two readings, as JSON (null when unknown).
fn cpu_used(before: Option<f64>, after: Option<f64>) -> Value {
    before.zip(after).map_or(Value::Null, |(a, b)| json!(b - a))
}

/// Latency percentiles (ms) and throughput of one measurement, as a JSON object.
fn summary(mode: &str, run: &RunArgs, items: usize, mut latencies_us: Vec<u64>, seconds: f64, errors: u64) -> Value {
    latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * latencies_us.len() as f64).ceil() as usize;
        latencies_us[i.clamp(1, latencies_us.len()) - 1] as f64 / 1000.0
    };
    let n = latencies_us.len();
    let mean = latencies_us.iter().sum::<u64>() as f64 / n.max(1) as f64 / 1000.0;
    json!({
        "mode": mode,
        "label": run.label,
        "connections": run.connections,
        "items": items,
        "seconds": seconds,
        "requests": n,
        "errors": errors,
        "requests_per_s": n as f64 / seconds,
        "pairs_per_s": (n * items) as f64 / seconds,
        "mean_ms": mean,
        "p50_ms": pct(50.0),
        "p90_ms": pct(90.0),
        "p99_ms": pct(99.0),
        "max_ms": pct(100.0),
    })
}

fn print(value: &Value) {
    println!("{value}");
    let f = |k: &str| value[k].as_f64().unwrap_or(f64::NAN);
    let cpu = ["server_cpu_s", "client_cpu_s", "cpu_s"]
        .iter()
        .filter_map(|k| {
            value[*k].as_f64().map(|x| format!(", {} {x:.1} s", k.trim_end_matches("_s").replace('_', " ")))
        })
        .collect::<String>();
    eprintln!(
        "{:<22} {:>3} conn: {:>10.0} pairs/s  p50 {:>8.3} ms  p99 {:>8.3} ms  ({} requests, {} errors{cpu})",
        value["mode"].as_str().unwrap_or(""),
        value["connections"],
        f("pairs_per_s"),
        f("p50_ms"),
        f("p99_ms"),
        value["requests"],
        value["errors"]
    );
}

/// What every connection shares.
struct Load {
    authority: String,
    path: &'static str,
    bodies: Vec<Bytes>,
    items: usize,
    measure_from: Instant,
    stop: Instant,
}

/// One keep-alive HTTP/1.1 connection sending requests back to back until `stop`; latencies of
/// the requests that started after `measure_from`.
async fn connection(load: Arc<Load>, first: usize) -> Result<(Vec<u64>, u64), Error> {
    let Load { authority, path, bodies, items, measure_from, stop } = &*load;
    let (path, items, measure_from, stop) = (*path, *items, *measure_from, *stop);
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    let mut k = first;
    let mut checked = false;
    loop {
        let start = Instant::now();
        if start >= stop {
            break;
        }
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bodies[k % bodies.len()].clone()))?;
        k += 1;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let elapsed = start.elapsed();
        if !status.is_success() {
            errors += 1;
            if errors == 1 {
                eprintln!("HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            continue;
        }
        if !checked {
            // Once per connection: the answer has one result per item.
            let answer: Value = serde_json::from_slice(&body)?;
            let results = answer["results"].as_array().map_or(0, Vec::len);
            if results != items {
                return Err(format!("expected {items} results, got {results}").into());
            }
            checked = true;
        }
        if start >= measure_from {
            latencies.push(elapsed.as_micros() as u64);
        }
    }
    Ok((latencies, errors))
}

fn run_http(
    url: &str,
    requests: &RequestArgs,
    run: &RunArgs,
    client_threads: usize,
    server_pid: Option<u32>,
) -> Result<(), Error> {
    let authority = url.strip_prefix("http://").ok_or("--url must start with http://")?.trim_end_matches('/');
    let (path, bodies) = request_bodies(requests)?;
    let runtime = if client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(client_threads).enable_all().build()?
    };
    let items = requests.items;
    let server = server_pid.map(|p| p.to_string());
    let cpu = |pid: &Option<String>| pid.as_deref().and_then(cpu_seconds);
    let (latencies, errors, seconds, cpu) = runtime.block_on(async {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(run.warmup);
        let stop = measure_from + Duration::from_secs_f64(run.duration);
        let requests = bodies.len();
        let load = Arc::new(Load { authority: authority.to_owned(), path, bodies, items, measure_from, stop });
        let tasks: Vec<_> = (0..run.connections)
            .map(|c| tokio::spawn(connection(load.clone(), c * requests / run.connections.max(1))))
            .collect();
        tokio::time::sleep_until(measure_from.into()).await;
        let before = (cpu(&server), cpu_seconds("self"));
        let mut latencies = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await??;
            latencies.extend(l);
            errors += e;
        }
        // Requests in flight at `stop` finish after it: count the time until the last one.
        let seconds = measure_from.elapsed().as_secs_f64().max(run.duration);
        let after = (cpu(&server), cpu_seconds("self"));
        Ok::<_, Error>((latencies, errors, seconds, (before, after)))
    })?;
    let ((server0, client0), (server1, client1)) = cpu;
    let mut out = summary("http", run, items, latencies, seconds, errors);
    out["server_cpu_s"] = cpu_used(server0, server1);
    out["client_cpu_s"] = cpu_used(client0, client1);
    print(&out);
    Ok(())
}

/// How the in-process run scores.
struct InprocessOptions {
    single: usize,
    full: bool,
    reuse: bool,
    item_features: Option<PathBuf>,
}

fn run_inprocess(bundle: &Path, requests: &RequestArgs, run: &RunArgs, opts: &InprocessOptions) -> Result<(), Error> {
    let InprocessOptions { single, full, reuse, .. } = *opts;
    let tables = mtrec_serve::TablePaths { item: opts.item_features.clone(), ..Default::default() };
    let mut model = mtrec_serve::ServingModel::load(bundle, &tables)?;
    model.set_reuse(reuse);
    let model = Arc::new(model);
    let limits =
        mtrec_serve::Limits { max_items: requests.items.max(1000), max_batch_rows: requests.items.max(100_000) };
    let (_, bodies) = request_bodies(requests)?;
    let endpoint = requests.endpoint;
    let scores: Vec<mtrec_serve::api::ScoreRequest> = if endpoint == Endpoint::Score {
        bodies.iter().map(|b| serde_json::from_slice(b)).collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let batches: Vec<mtrec_serve::api::BatchRequest> = if endpoint == Endpoint::Batch {
        bodies.iter().map(|b| serde_json::from_slice(b)).collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    // One call: what the HTTP handler's CPU work is (`full`) or the scoring alone.
    let call = |k: usize| -> Result<usize, Error> {
        let k = k % bodies.len();
        let answered = |answer: Result<mtrec_serve::Answer<'_>, mtrec_serve::ApiError>| -> Result<usize, Error> {
            let answer = answer.map_err(|e| e.message)?;
            if full {
                std::hint::black_box(answer.to_json()?);
            }
            Ok(answer.len())
        };
        match (endpoint, full) {
            (Endpoint::Score, false) => answered(model.score(&scores[k], &limits)),
            (Endpoint::Batch, false) => answered(model.score_batch(&batches[k], &limits)),
            (Endpoint::Score, true) => {
                let request: mtrec_serve::api::ScoreRequest = serde_json::from_slice(&bodies[k])?;
                answered(model.score(&request, &limits))
            }
            (Endpoint::Batch, true) => {
                let request: mtrec_serve::api::BatchRequest = serde_json::from_slice(&bodies[k])?;
                answered(model.score_batch(&request, &limits))
            }
        }
    };
    if call(0)? != requests.items {
        return Err("the model answered a different number of results than items".into());
    }
    let mode = match (full, reuse) {
        (true, _) => "inprocess_full",
        (false, true) => "inprocess",
        (false, false) => "inprocess_plain",
    };

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(run.warmup);
    let stop = measure_from + Duration::from_secs_f64(run.duration);
    let failed = AtomicBool::new(false);
    let mut cpu_before = None;
    let per_thread: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..run.connections)
            .map(|c| {
                let call = &call;
                let failed = &failed;
                let first = c * bodies.len() / run.connections.max(1);
                s.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut k = first;
                    loop {
                        let t = Instant::now();
                        if t >= stop || failed.load(Ordering::Relaxed) {
                            break;
                        }
                        if call(k).is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        k += 1;
                        if t >= measure_from {
                            latencies.push(t.elapsed().as_micros() as u64);
                        }
                    }
                    latencies
                })
            })
            .collect();
        std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
        cpu_before = cpu_seconds("self");
        handles.into_iter().map(|h| h.join().expect("a scoring thread panicked")).collect()
    });
    let cpu_after = cpu_seconds("self");
    if failed.load(Ordering::Relaxed) {
        return Err("scoring failed".into());
    }
    let seconds = measure_from.elapsed().as_secs_f64().max(run.duration);
    let mut out = summary(mode, run, requests.items, per_thread.concat(), seconds, 0);
    out["cpu_s"] = cpu_used(cpu_before, cpu_after);
    print(&out);

    if single > 0 {
        for k in 0..single.min(50) {
            call(k)?;
        }
        let mut latencies = Vec::with_capacity(single);
        let start = Instant::now();
        for k in 0..single {
            let t = Instant::now();
            call(k)?;
            latencies.push(t.elapsed().as_micros() as u64);
        }
        let seconds = start.elapsed().as_secs_f64();
        let one = RunArgs { connections: 1, duration: seconds, warmup: 0.0, label: run.label.clone() };
        print(&summary(&format!("{mode}_single"), &one, requests.items, latencies, seconds, 0));
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    match Args::parse().mode {
        Mode::Http { url, requests, run, client_threads, server_pid } => {
            run_http(&url, &requests, &run, client_threads, server_pid)
        }
        Mode::Inprocess { bundle, requests, run, single, full, threads, no_reuse, item_features } => {
            if threads > 0 {
                rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
            }
            let opts = InprocessOptions { single, full, reuse: !no_reuse, item_features };
            run_inprocess(&bundle, &requests, &run, &opts)
        }
        Mode::ItemTable { synthetic, schema, out } => {
            let items = requests::write_item_table(&synthetic, &schema, &out)?;
            eprintln!("{}: {items} items", out.display());
            Ok(())
        }
    }
}
