#!/usr/bin/env bash
# Scoring API speed on the synthetic recommender data: requests of one user and context with
# ITEMS candidate ids each, whose features the server looks up in the item table (as in the
# README's serving example). `mtrec serve` under the load generator on loopback, side by side in
# the same run with in-process scoring of the same requests, with the reuse of what a request's
# rows share (the default) and without it (`--no-reuse`: every row in full, the plain forward
# pass). Models: the wide MMoE (configs/synthetic-mmoe-wide.json with
# benches/synthetic-wide.schema.json: embedding 16, 8 experts of [256, 128], towers [64]) and
# the quickstart's MMoE (schemas/synthetic.json, the default config), trained one epoch. With
# onnxruntime installed (`pip install onnxruntime onnx torch pyarrow numpy`), the same model runs
# in onnxruntime on the same flattened rows (benches/reference/serve_onnx.py --structure general:
# every row in full, as a typical ONNX deployment scores them), after a check against
# `mtrec predict`.
#
# Usage: benches/serve_synthetic.sh [REPEATS] [SECONDS] [MODELS] [ITEMS]
#   defaults: 3 rounds, 30 s per run, "wide small", "100 1000". Every JSON result line is kept in
#   out/serve-synthetic/results.jsonl (override with SERVE_BENCH_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
seconds=${2:-30}
models=${3:-"wide small"}
item_counts=${4:-"100 1000"}
out=${SERVE_BENCH_OUT:-out/serve-synthetic}
. benches/serving_common.sh
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

detect_onnx

schema_of() { case $1 in wide) echo benches/synthetic-wide.schema.json ;; small) echo schemas/synthetic.json ;; esac; }
config_of() { case $1 in wide) echo --config configs/synthetic-mmoe-wide.json ;; small) echo --epochs 1 ;; esac; }

# 200 distinct requests of up to 1,000 candidates.
"$bin" gen synthetic --rows 200000 --seed 1 --out "$work/log.parquet" --quiet >/dev/null
"$load" item-table --synthetic "$work/log.parquet" --schema schemas/synthetic.json --out "$work/items.parquet"
for m in $models; do
  "$bin" ingest --schema "$(schema_of "$m")" --input "$work/log.parquet" --out "$work/$m-data" --quiet >/dev/null
  # shellcheck disable=SC2046
  "$bin" train --data "$work/$m-data" $(config_of "$m") --out "$work/$m-bundle" --quiet >/dev/null
  if [ "$onnx" = 1 ]; then
    "$bin" predict --bundle "$work/$m-bundle" --data "$work/$m-data" --split test --out "$work/$m-pred.parquet" >/dev/null
  fi
done

echo "machine: $(nproc) cores, $(uname -m); load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for m in $models; do
  start_server "$work/serve-$m.log" --bundle "$work/$m-bundle" --item-features "$work/items.parquet"
  for items in $item_counts; do
    req=(--synthetic "$work/log.parquet" --schema "$(schema_of "$m")" --items "$items")
    for i in $(seq "$repeats"); do
      echo "== $m, $items items, round $i of $repeats" >&2
      label="$m/$items/$i"
      "$load" http --url "$url" "${req[@]}" --server-pid "$server" --connections 16 --duration "$seconds" --label "$label" >>"$results"
      inproc=(--bundle "$work/$m-bundle" --item-features "$work/items.parquet" "${req[@]}" --connections 16 --duration "$seconds" --label "$label")
      "$load" inprocess "${inproc[@]}" >>"$results"
      "$load" inprocess "${inproc[@]}" --no-reuse >>"$results"
      if [ "$onnx" = 1 ]; then
        python3 benches/reference/serve_onnx.py --structure general --bundle "$work/$m-bundle" --data "$work/$m-data" \
          --predictions "$work/$m-pred.parquet" --items "$items" --workers 16 --duration "$seconds" --label "$label" >>"$results"
      fi
      "$load" http --url "$url" "${req[@]}" --server-pid "$server" --connections 1 --duration "$seconds" --label "$label" >>"$results"
    done
  done
  stop_server
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {}
for r in rows:
    model, items, rnd = r["label"].split("/")
    by.setdefault((model, items), {}).setdefault(rnd, {})[(r["mode"], r.get("connections"))] = r

def fmt(xs, f="{:,.0f}"):
    xs = [x for x in xs if x is not None]
    return f"{f.format(st.median(xs))} ({f.format(min(xs))}-{f.format(max(xs))})" if xs else "-"

for (model, items), rounds in by.items():
    print(f"\n{model} synthetic MMoE, {items} items per request, {len(rounds)} rounds: median (min-max)")
    print(f"{'run':<40}{'pairs/s':>28}  {'p50 ms':>24}  {'p99 ms':>24}")
    for mode, conn, name in [("http", 16, "HTTP, 16 connections"), ("inprocess", 16, "in-process, 16 threads"),
                             ("inprocess_plain", 16, "in-process plain, 16 threads"), ("onnx", 16, "onnxruntime, 16 threads"),
                             ("http", 1, "HTTP, 1 connection"), ("inprocess_single", 1, "in-process, 1 call at a time"),
                             ("inprocess_plain_single", 1, "in-process plain, 1 call at a time"),
                             ("onnx_single", 1, "onnxruntime, 1 call at a time")]:
        rs = [r[(mode, conn)] for r in rounds.values() if (mode, conn) in r]
        if rs:
            print(f"{name:<40}{fmt([r['pairs_per_s'] for r in rs]):>28}  {fmt([r['p50_ms'] for r in rs], '{:.3f}'):>24}  "
                  f"{fmt([r['p99_ms'] for r in rs], '{:.3f}'):>24}")
    def ratio(a, b, fa, fb):
        return [r[a][fa] / r[b][fb] for r in rounds.values() if a in r and b in r]
    checks = [r[("onnx_check", None)]["max_abs_diff"] for r in rounds.values() if ("onnx_check", None) in r]
    if checks:
        print(f"onnxruntime against mtrec predict (test rows): max abs difference {max(checks):.2e}")
    for name, xs in [("in-process / plain pairs/s, 16", ratio(("inprocess", 16), ("inprocess_plain", 16), "pairs_per_s", "pairs_per_s")),
                     ("plain / onnxruntime pairs/s, 16", ratio(("inprocess_plain", 16), ("onnx", 16), "pairs_per_s", "pairs_per_s")),
                     ("HTTP / onnxruntime pairs/s, 16 (goal >= 1.5, wide, 100)", ratio(("http", 16), ("onnx", 16), "pairs_per_s", "pairs_per_s")),
                     ("HTTP / in-process pairs/s, 16", ratio(("http", 16), ("inprocess", 16), "pairs_per_s", "pairs_per_s")),
                     ("HTTP p99 (1 conn) / in-process p50 (1 call) (goal <= 1.3)", ratio(("http", 1), ("inprocess_single", 1), "p99_ms", "p50_ms"))]:
        if xs:
            print(f"{name:<46}{fmt(xs, '{:.2f}'):>22}")
PY
echo "results: $results" >&2
