#!/usr/bin/env bash
# Memory and wall time of every stage on a synthetic log of ROWS rows: `mtrec gen synthetic`,
# `mtrec ingest`, `mtrec train` (one epoch, default window), `mtrec predict` and `mtrec eval`
# (both on the test split), each measured by GNU time (peak RSS, wall seconds). The users and
# items are fixed (USERS, ITEMS), so the model is the same size at every ROWS and only the data
# grows. Usage: benches/streaming.sh [ROWS] [WORKDIR]
# WORKDIR (default: a temporary directory, removed at exit) needs about 260 bytes of disk per row.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-5000000}
users=${USERS:-100000}
items=${ITEMS:-20000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release/mtrec"
if [ -n "${2:-}" ]; then
  work=$2
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
lscpu | grep 'Model name' || true
echo "date $(date -u +%Y-%m-%d) rows $rows users $users items $items threads $(nproc)"
stage() { # name command...: prints "name wall_s peak_rss_mib"
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null
  read -r wall kib <"$work/time"
  printf '%-8s wall_s=%-8s peak_rss_mib=%s\n' "$name" "$wall" "$((kib / 1024))"
}
rm -rf "$work/ingest" "$work/bundle" "$work/eval" "$work/predictions.parquet"
stage gen "$bin" gen synthetic --rows "$rows" --users "$users" --items "$items" --out "$work/log.parquet" --quiet
stage ingest "$bin" ingest --schema schemas/synthetic.json --input "$work/log.parquet" --out "$work/ingest" --quiet
stage train "$bin" train --data "$work/ingest" --out "$work/bundle" --epochs 1 --quiet
stage predict "$bin" predict --bundle "$work/bundle" --data "$work/ingest" --out "$work/predictions.parquet" --quiet
stage eval "$bin" eval --bundle "$work/bundle" --data "$work/ingest" --out "$work/eval" --quiet
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
h = json.load(open(f"{work}/bundle/history.json"))
e = h["epochs"][0]
print(f"train epoch: {e['samples_per_second']:,.0f} samples/s over {e['seconds']:.1f} s")
PY
du -sh "$work/log.parquet" "$work/ingest" "$work/predictions.parquet" | sed 's/^/disk /'
