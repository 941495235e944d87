//! `mtrec train --distributed` under `mpirun`, ranks on this machine: equivalence with one
//! process, determinism, resuming within an epoch, and a killed rank. Built with the `mpi`
//! feature only (`.ci/run` builds it, with OpenMPI installed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{mtrec, text};

/// `mpirun` with this binary on `ranks` ranks of one thread each (`--allow-run-as-root`: CI's
/// containers run as root; `--oversubscribe`: more ranks than the cores a runner reports).
fn mpirun(ranks: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", &ranks.to_string()])
        .arg(env!("CARGO_BIN_EXE_mtrec"))
        .args(args);
    cmd
}

fn run(mut cmd: Command) -> Output {
    let o = cmd.output().expect("mpirun runs (OpenMPI's openmpi-bin is installed)");
    assert!(o.status.success(), "{}", text(&o));
    o
}

/// A synthetic log of `rows` rows ingested into `<dir>/<name>` with shards of `shard_rows`.
fn ingest(dir: &Path, name: &str, rows: usize, shard_rows: usize) -> PathBuf {
    let log = dir.join(format!("{name}.parquet"));
    let o = mtrec(&["gen", "synthetic", "--out", log.to_str().unwrap(), "--rows", &rows.to_string(), "--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic.json");
    let out = dir.join(name);
    let o = mtrec(&[
        "ingest",
        "--schema",
        schema.to_str().unwrap(),
        "--input",
        log.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--shard-rows",
        &shard_rows.to_string(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    out
}

fn weights(bundle: &Path) -> mtrec_model::io::NamedTensors {
    mtrec_model::io::named_tensors(&mtrec_model::bundle::load(bundle).unwrap().model)
}

/// Two ranks of one thread give, after 10 epochs of about 15 steps, the weights of one process
/// of two threads on the same data bit for bit, for shared-bottom and MMoE, with replicated and
/// with row-sharded embedding tables: every batch is cut into the same two parts (the batch
/// size is chosen so that the last batch of an epoch is large enough for two parts in one
/// process too), the parts' gradients are added in the same order, and a sharded row is
/// updated with the same sums as a replicated one.
#[test]
fn two_ranks_train_the_weights_of_one_process_with_two_parts() {
    let dir = tempfile::tempdir().unwrap();
    let data = ingest(dir.path(), "whole", 12_000, 1 << 20);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("ingest_report.json")).unwrap()).unwrap();
    let train_rows = report["rows"]["train"].as_u64().unwrap();
    // One process cuts a batch of fewer than 512 rows into one part only.
    let batch = (512..1024).find(|b| train_rows.is_multiple_of(*b) || train_rows % b >= 512).unwrap();
    let config = dir.path().join("train.json");
    let settings = format!(r#"{{"epochs": 10, "batch_size": {batch}, "early_stopping": {{"patience": 0}}}}"#);
    std::fs::write(&config, settings).unwrap();
    for architecture in ["shared_bottom", "mmoe"] {
        let [one, two] = ["one", "two"].map(|n| dir.path().join(format!("{architecture}-{n}")));
        let common = ["--data", data.to_str().unwrap(), "--config", config.to_str().unwrap()];
        let common = [&common[..], &["--architecture", architecture, "--quiet"]].concat();
        let o = mtrec(&[&["train", "--threads", "2", "--out", one.to_str().unwrap()][..], &common].concat());
        assert!(o.status.success(), "{}", text(&o));
        run(mpirun(
            2,
            &[&["train", "--distributed", "--threads", "1", "--out", two.to_str().unwrap()][..], &common].concat(),
        ));
        let (a, b) = (weights(&one), weights(&two));
        assert!(a.values().any(|(_, v)| v.iter().any(|x| *x != 0.0)), "{architecture}: no weights");
        for (name, (_, x)) in &a {
            assert!(x == &b[name].1, "{architecture}: {name} differs");
        }
    }
}

/// Reading by windows of shards dealt to the ranks: two runs give the same weights bit for bit,
/// and a run with row-sharded tables, stopped within an epoch (its checkpoint holding each
/// rank's rows) and resumed, gives them too.
#[test]
fn distributed_runs_are_deterministic_and_resume_within_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let data = ingest(dir.path(), "sharded", 20_000, 2_000);
    let train = |out: &Path, extra: &[&str]| {
        let args = [
            &["train", "--distributed", "--threads", "1", "--data", data.to_str().unwrap()][..],
            &["--epochs", "2", "--batch-size", "256", "--window-rows", "4000", "--quiet", "--out"],
            &[out.to_str().unwrap()],
            extra,
        ]
        .concat();
        run(mpirun(2, &args))
    };
    let [first, second, resumed] = ["first", "second", "resumed"].map(|n| dir.path().join(n));
    train(&first, &[]);
    train(&second, &[]);
    let sharded = dir.path().join("sharded.json");
    std::fs::write(&sharded, r#"{"embedding_sharding": {"min_bytes": 0}}"#).unwrap();
    let sharded = ["--config", sharded.to_str().unwrap()];
    let o = train(&resumed, &[&sharded[..], &["--stop-after-windows", "3"]].concat());
    assert!(dir.path().join("resumed.checkpoint/shard-1.safetensors").is_file(), "rank 1's rows");
    assert!(text(&o).contains("stopped after 3 window(s)"), "{}", text(&o));
    assert!(!resumed.exists(), "a stopped run writes no bundle");
    // Within an epoch, another rank count is refused, and says why.
    let alone = [
        &["train", "--threads", "1", "--data", data.to_str().unwrap(), "--epochs", "2", "--batch-size", "256"][..],
        &["--window-rows", "4000", "--quiet", "--resume", "--out", resumed.to_str().unwrap()],
        &sharded,
    ]
    .concat();
    let o = mtrec(&alone);
    assert!(!o.status.success() && text(&o).contains("mpirun -np 2"), "{}", text(&o));
    train(&resumed, &[&sharded[..], &["--resume"]].concat());
    let bytes = |b: &Path| std::fs::read(b.join("weights.safetensors")).unwrap();
    assert!(bytes(&first) == bytes(&second), "two runs differ");
    assert!(bytes(&first) == bytes(&resumed), "the resumed run differs");
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("history.json")).unwrap()).unwrap();
    let exchanged = history["epochs"][0]["exchanged_bytes_per_step"].as_f64().unwrap();
    assert!(exchanged > 1_000.0, "{exchanged} bytes per step");
}

/// Starts a two-rank job and returns once it has written its first checkpoint.
fn start_until_checkpoint(args: &[&str], checkpoint: &Path) -> std::process::Child {
    let mut job = mpirun(2, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while !checkpoint.join("checkpoint.json").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint after two minutes");
        assert!(job.try_wait().unwrap().is_none(), "the job ended before its first checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    job
}

/// The pid of rank `rank` among the processes `mpirun` (pid `parent`) started.
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // The parent pid is the second field after the parenthesized command.
        let ppid: u32 = stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()?;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        let is_rank = environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes());
        (ppid == parent && is_rank).then_some(pid)
    })
}

/// A rank killed mid-run ends the whole job with an error naming it, leaves a whole checkpoint
/// (with row-sharded tables: every rank's rows of them), and `--resume` on the same ranks
/// completes the run.
#[test]
fn a_killed_rank_ends_the_job_and_its_checkpoint_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = ingest(dir.path(), "sharded", 20_000, 2_000);
    let out = dir.path().join("bundle");
    let config = dir.path().join("sharded.json");
    std::fs::write(&config, r#"{"embedding_sharding": {"min_bytes": 0}}"#).unwrap();
    let args = |epochs: &str, extra: &[&str]| {
        let common = ["train", "--distributed", "--threads", "1", "--data", data.to_str().unwrap()];
        let common = [&common[..], &["--config", config.to_str().unwrap()]].concat();
        [&common, &["--batch-size", "256", "--window-rows", "4000", "--quiet", "--epochs", epochs][..], extra]
            .concat()
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let training = args("1000", &["--out", out.to_str().unwrap()]);
    let checkpoint = dir.path().join("bundle.checkpoint");
    let job = start_until_checkpoint(&training.iter().map(String::as_str).collect::<Vec<_>>(), &checkpoint);
    let victim = rank_pid(job.id(), 1).expect("rank 1 is a child of mpirun");
    let killed = Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap();
    assert!(killed.success());
    let o = job.wait_with_output().unwrap();
    assert!(!o.status.success(), "the job went on without rank 1");
    assert!(text(&o).contains("rank 1"), "the error does not name rank 1: {}", text(&o));
    assert!(!out.exists(), "a killed job wrote a bundle");
    assert!(checkpoint.join("shard-1.safetensors").is_file(), "the checkpoint lacks rank 1's rows");
    // The checkpoint left is whole: a run of the same ranks resumes from it and finishes.
    let resume = args("2", &["--out", out.to_str().unwrap(), "--resume"]);
    run(mpirun(2, &resume.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(out.join("weights.safetensors").is_file());
}

/// A rank that hangs (stopped here) ends the job: the others, waiting for it in an exchange
/// longer than `--exchange-timeout-secs`, say so and exit, and mpirun ends every rank.
#[test]
fn a_hanging_rank_ends_the_job_after_the_exchange_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let data = ingest(dir.path(), "sharded", 20_000, 2_000);
    let out = dir.path().join("bundle");
    let args = [
        &["train", "--distributed", "--threads", "1", "--data", data.to_str().unwrap(), "--epochs", "1000"][..],
        &["--batch-size", "256", "--window-rows", "4000", "--quiet", "--exchange-timeout-secs", "3"],
        &["--out", out.to_str().unwrap()],
    ]
    .concat();
    let job = start_until_checkpoint(&args, &dir.path().join("bundle.checkpoint"));
    let hung = rank_pid(job.id(), 1).expect("rank 1 is a child of mpirun");
    assert!(Command::new("kill").args(["-STOP", &hung.to_string()]).status().unwrap().success());
    let stopped_at = Instant::now();
    let o = job.wait_with_output().unwrap();
    // Never left stopped, whatever mpirun did.
    let _ = Command::new("kill").args(["-KILL", &hung.to_string()]).status();
    assert!(!o.status.success(), "the job went on with rank 1 hung");
    assert!(stopped_at.elapsed() < Duration::from_secs(60), "the job took {:?} to end", stopped_at.elapsed());
    assert!(text(&o).contains("error on rank 0 of 2: waited"), "{}", text(&o));
    assert!(text(&o).contains("another rank hangs"), "{}", text(&o));
}
