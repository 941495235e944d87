#!/usr/bin/env bash
# Training speed streaming from shards against the in-memory trainer, same model and data:
# `mtrec train` with the default window (the train split read window by window, the next one
# prefetched) and with `--window-rows` above the train split's rows (read once, before the first
# epoch), alternated in one run. Each figure is the epoch's samples/s from history.json: the
# streaming epoch's time includes waiting for its windows, the in-memory epoch's does not include
# the one read before training. Usage: benches/window_speed.sh [ROWS] [REPEATS] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-5000000}
repeats=${2:-3}
epochs=${3:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release/mtrec"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lscpu | grep 'Model name' || true
echo "date $(date -u +%Y-%m-%d) rows $rows threads $(nproc)"
"$bin" gen synthetic --rows "$rows" --users 100000 --items 20000 --out "$work/log.parquet" --quiet
"$bin" ingest --schema schemas/synthetic.json --input "$work/log.parquet" --out "$work/ingest" --quiet >/dev/null
rate() { # extra train flags...: median samples/s over the epochs
  "$bin" train --data "$work/ingest" --out "$work/bundle" --epochs "$epochs" --quiet "$@" >/dev/null
  python3 -c "import json,statistics as s; h=json.load(open('$work/bundle/history.json')); print(s.median(e['samples_per_second'] for e in h['epochs']))"
}
for i in $(seq "$repeats"); do
  s=$(rate)
  m=$(rate --window-rows 1000000000)
  echo "run $i streaming=$s in_memory=$m"
done | tee "$work/runs"
python3 - "$work/runs" <<'PY'
import sys, statistics as st
runs = [dict(kv.split("=") for kv in line.split()[2:]) for line in open(sys.argv[1])]
s = [float(r["streaming"]) for r in runs]
m = [float(r["in_memory"]) for r in runs]
ratio = [a / b for a, b in zip(s, m)]
print(f"streaming {st.median(s):,.0f} samples/s, in-memory {st.median(m):,.0f} samples/s, "
      f"ratio per pair median {st.median(ratio):.3f} (min {min(ratio):.3f}, max {max(ratio):.3f})")
PY
