#!/usr/bin/env bash
# Scoring API speed: `mtrec serve` under a load generator on loopback
# (benches/src/bin/serve_load/), side by side in the same run with in-process scoring of the
# same model and requests (`ServingModel::score`, with the reuse of what a request's rows share
# and without it: the plain forward pass), and with onnxruntime running the equivalent model
# (benches/reference/serve_onnx.py; skipped unless `python3 -c "import onnxruntime"` works).
# A Census request's 100 rows are equal, so with reuse they are computed once; the plain forward
# pass computes all of them, as onnxruntime does.
# Census MMoE, wide and small, trained one epoch (speed does not depend on quality).
#
# Usage: benches/serve.sh [REPEATS] [SECONDS] [MODELS]
#   REPEATS rounds (default 3), SECONDS measured per run (default 30; 5 for a smoke
#   run), MODELS (default "wide small"). Every JSON result line is kept in
#   out/serve-bench/results.jsonl (override with SERVE_BENCH_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
seconds=${2:-30}
models=${3:-"wide small"}
items=100
# The official Census-Income test file: datasets/census-income/download.sh fetches it, or point
# CENSUS_TEST at a copy.
census=${CENSUS_TEST:-datasets/census-income/census-income.test.gz}
[ -f "$census" ] || { echo "$census not found: run datasets/census-income/download.sh or set CENSUS_TEST" >&2; exit 1; }
out=${SERVE_BENCH_OUT:-out/serve-bench}
. benches/serving_common.sh
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

detect_onnx

schema_of() { case $1 in wide) echo benches/census-wide.schema.json ;; small) echo schemas/census-income.json ;; esac; }
config_of() { case $1 in wide) echo configs/census-mmoe-wide.json ;; small) echo configs/census-mmoe.json ;; esac; }

for m in $models; do
  "$bin" ingest --schema "$(schema_of "$m")" --input "$census" --out "$work/$m-data" >/dev/null
  "$bin" train --data "$work/$m-data" --config "$(config_of "$m")" --out "$work/$m-bundle" --epochs 1 --quiet >/dev/null
  if [ "$onnx" = 1 ]; then
    "$bin" predict --bundle "$work/$m-bundle" --data "$work/$m-data" --split test --out "$work/$m-pred.parquet" >/dev/null
  fi
done

echo "machine: $(nproc) cores, $(uname -m); load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for m in $models; do
  req=(--census "$census" --schema "$(schema_of "$m")" --items "$items")
  start_server "$work/serve-$m.log" --bundle "$work/$m-bundle"
  for i in $(seq "$repeats"); do
    echo "== $m, round $i of $repeats" >&2
    label="$m/$i"
    "$load" http --url "$url" "${req[@]}" --server-pid "$server" --connections 16 --duration "$seconds" --label "$label" >>"$results"
    "$load" inprocess --bundle "$work/$m-bundle" "${req[@]}" --connections 16 --duration "$seconds" --label "$label" >>"$results"
    "$load" inprocess --bundle "$work/$m-bundle" "${req[@]}" --connections 16 --duration "$seconds" --label "$label" --no-reuse >>"$results"
    if [ "$onnx" = 1 ]; then
      python3 benches/reference/serve_onnx.py --bundle "$work/$m-bundle" --data "$work/$m-data" \
        --predictions "$work/$m-pred.parquet" --items "$items" --workers 16 --duration "$seconds" --label "$label" >>"$results"
    fi
    "$load" http --url "$url" "${req[@]}" --server-pid "$server" --connections 1 --duration "$seconds" --label "$label" >>"$results"
  done
  stop_server
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {}
for r in rows:
    model, rnd = r["label"].split("/")
    by.setdefault(model, {}).setdefault(rnd, {})[(r["mode"], r.get("connections"))] = r

def per_cpu(r):
    """Pairs per CPU-second (HTTP: server and client together): robust to the machine's other load."""
    cpu = r.get("cpu_s") or ((r.get("server_cpu_s") or 0) + (r.get("client_cpu_s") or 0))
    return r["pairs_per_s"] * r["seconds"] / cpu if cpu else None

def fmt(xs, f="{:,.0f}"):
    xs = [x for x in xs if x is not None]
    return f"{f.format(st.median(xs))} ({f.format(min(xs))}-{f.format(max(xs))})" if xs else "-"

for model, rounds in by.items():
    print(f"\n{model} Census MMoE, {len(rounds)} rounds, 100 items per request: median (min-max)")
    print(f"{'run':<32}{'pairs/s':>26}  {'pairs per CPU-s':>26}  {'p50 ms':>26}  {'p99 ms':>26}")
    for mode, conn, name in [("http", 16, "HTTP, 16 connections"), ("inprocess", 16, "in-process, 16 threads"),
                             ("inprocess_plain", 16, "in-process plain, 16 threads"),
                             ("onnx", 16, "onnxruntime, 16 threads"), ("http", 1, "HTTP, 1 connection"),
                             ("inprocess_single", 1, "in-process, 1 call at a time"),
                             ("inprocess_plain_single", 1, "in-process plain, 1 call"),
                             ("onnx_single", 1, "onnxruntime, 1 call at a time")]:
        rs = [r[(mode, conn)] for r in rounds.values() if (mode, conn) in r]
        if rs:
            print(f"{name:<32}{fmt([r['pairs_per_s'] for r in rs]):>26}  {fmt([per_cpu(r) for r in rs]):>26}  "
                  f"{fmt([r['p50_ms'] for r in rs], '{:.3f}'):>26}  {fmt([r['p99_ms'] for r in rs], '{:.3f}'):>26}")
    checks = [r[("onnx_check", None)]["max_abs_diff"] for r in rounds.values() if ("onnx_check", None) in r]
    if checks:
        print(f"onnxruntime against mtrec predict (test rows): max abs difference {max(checks):.2e}")
    def ratio(a, b, fa, fb):
        return [r[a][fa] / r[b][fb] for r in rounds.values() if a in r and b in r]
    goals = [("plain / onnxruntime pairs/s, 16", ratio(("inprocess_plain", 16), ("onnx", 16), "pairs_per_s", "pairs_per_s"), ">= 1", lambda x: x >= 1),
             ("plain / onnxruntime pairs/s, 1 call", ratio(("inprocess_plain_single", 1), ("onnx_single", 1), "pairs_per_s", "pairs_per_s"), ">= 1", lambda x: x >= 1),
             ("HTTP / in-process pairs/s, 16", ratio(("http", 16), ("inprocess", 16), "pairs_per_s", "pairs_per_s"), ">= 0.8", lambda x: x >= 0.8),
             ("HTTP / onnxruntime pairs/s, 16", ratio(("http", 16), ("onnx", 16), "pairs_per_s", "pairs_per_s"), ">= 1", lambda x: x >= 1),
             ("HTTP p99 (1 conn) / in-process p50 (1 call)", ratio(("http", 1), ("inprocess_single", 1), "p99_ms", "p50_ms"), "<= 1.5", lambda x: x <= 1.5)]
    for name, xs, goal, ok in goals:
        if xs:
            print(f"{name:<46}{fmt(xs, '{:.2f}'):>22}  goal {goal}: {'met' if ok(st.median(xs)) else 'NOT met'}")
    eff = [per_cpu(r[("http", 16)]) / per_cpu(r[("inprocess", 16)]) for r in rounds.values()
           if ("http", 16) in r and ("inprocess", 16) in r and per_cpu(r[("http", 16)]) and per_cpu(r[("inprocess", 16)])]
    if eff:
        print(f"{'HTTP / in-process pairs per CPU-s, 16':<46}{fmt(eff, '{:.2f}'):>22}  (not a goal: the cost of HTTP per pair)")
    tail = ratio(("http", 1), ("inprocess_single", 1), "p99_ms", "p99_ms")
    if tail:
        print(f"{'HTTP p99 (1 conn) / in-process p99 (1 call)':<46}{fmt(tail, '{:.2f}'):>22}  (not a goal: the tails under the same noise)")
PY
echo "results: $results" >&2
