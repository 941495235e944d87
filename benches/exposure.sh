#!/usr/bin/env bash
# The exposure log's cost on the scoring path: the same `mtrec serve` (small Census MMoE, one
# epoch) under the same load (benches/src/bin/serve_load/, 100 items per request) without an
# exposure log, with one, and with a one-record queue (most records dropped and counted), the
# three servers taking turns in every round so that the machine's noise falls on all of them.
#
# Usage: benches/exposure.sh [REPEATS] [SECONDS]
#   REPEATS rounds (default 3), SECONDS measured per run (default 10). Results (one JSON line per
#   run) in out/exposure-bench/results.jsonl (override with EXPOSURE_BENCH_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
seconds=${2:-10}
items=100
census=${CENSUS_TEST:-datasets/census-income/census-income.test.gz}
[ -f "$census" ] || { echo "$census not found: run datasets/census-income/download.sh or set CENSUS_TEST" >&2; exit 1; }
out=${EXPOSURE_BENCH_OUT:-out/exposure-bench}
. benches/serving_common.sh
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

"$bin" ingest --schema schemas/census-income.json --input "$census" --out "$work/data" >/dev/null
"$bin" train --data "$work/data" --config configs/census-mmoe.json --out "$work/bundle" --epochs 1 --quiet >/dev/null

req=(--census "$census" --schema schemas/census-income.json --items "$items")
echo "machine: $(nproc) cores, $(uname -m); load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for i in $(seq "$repeats"); do
  for variant in none log queue1; do
    case $variant in
      none) flags=() ;;
      log) flags=(--exposure-log "$work/log-$i") ;;
      queue1) flags=(--exposure-log "$work/queue1-$i" --exposure-queue 1) ;;
    esac
    start_server "$work/serve.log" --bundle "$work/bundle" "${flags[@]}"
    echo "== round $i of $repeats: $variant" >&2
    for connections in 16 1; do
      "$load" http --url "$url" "${req[@]}" --server-pid "$server" --connections "$connections" \
        --duration "$seconds" --label "$variant/$i" >>"$results"
    done
    metrics=$(curl -sf "$url/metrics")
    dropped=$(echo "$metrics" | awk '/^mtrec_exposure_records_dropped_total/ {print $2}')
    queued=$(echo "$metrics" | awk '/^mtrec_exposure_records_queued_total/ {print $2}')
    echo "{\"label\": \"$variant/$i\", \"mode\": \"exposure\", \"queued\": ${queued:-0}, \"dropped\": ${dropped:-0}}" >>"$results"
    stop_server
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
runs = {}
for r in rows:
    variant, rnd = r["label"].split("/")
    runs.setdefault(rnd, {})[(variant, r["mode"], r.get("connections"))] = r

def fmt(xs, f="{:.2f}"):
    return f"{f.format(st.median(xs))} ({f.format(min(xs))}-{f.format(max(xs))})" if xs else "-"

print(f"\nExposure log, small Census MMoE, {len(runs)} rounds, 100 items per request: median (min-max) of per-round ratios to no log")
print(f"{'server':<28}{'pairs/s, 16 conn':>24}{'p50, 1 conn':>24}{'p99, 1 conn':>24}{'records dropped':>20}")
for variant, name in [("log", "exposure log"), ("queue1", "exposure log, queue of 1")]:
    def ratio(conn, field):
        return [r[(variant, "http", conn)][field] / r[("none", "http", conn)][field]
                for r in runs.values() if (variant, "http", conn) in r and ("none", "http", conn) in r]
    drops = [r[(variant, "exposure", None)] for r in runs.values() if (variant, "exposure", None) in r]
    share = [d["dropped"] / max(1, d["dropped"] + d["queued"]) for d in drops]
    print(f"{name:<28}{fmt(ratio(16, 'pairs_per_s')):>24}{fmt(ratio(1, 'p50_ms')):>24}{fmt(ratio(1, 'p99_ms')):>24}"
          f"{fmt(share, '{:.1%}'):>20}")
PY
echo "results: $results" >&2
