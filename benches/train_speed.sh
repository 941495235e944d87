#!/usr/bin/env bash
# Training speed: mtrec against an equivalent PyTorch CPU implementation
# (benches/reference/census_torch.py; needs `pip install torch pyarrow`), same data, threads and
# batch size, alternated in one run. Usage: benches/train_speed.sh [REPEATS] [THREADS] [EPOCHS]
# Each figure is the median epoch of EPOCHS (default 8): a 60k-row epoch of the small model takes
# well under a second, so one noisy second on a shared machine would otherwise move it.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
threads=${2:-2}
epochs=${3:-8}
# The official Census-Income test file: datasets/census-income/download.sh fetches it, or point
# CENSUS_TEST at a copy.
census=${CENSUS_TEST:-datasets/census-income/census-income.test.gz}
[ -f "$census" ] || { echo "$census not found: run datasets/census-income/download.sh or set CENSUS_TEST" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release/mtrec"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" ingest --schema schemas/census-income.json --input "$census" --out "$work/small" >/dev/null
"$bin" ingest --schema benches/census-wide.schema.json --input "$census" --out "$work/wide" >/dev/null
# mtrec's figure: the median training samples/s over the epochs (validation excluded), from history.json.
mtrec_rate() { # data config
  "$bin" train --data "$1" --config "$2" --out "$work/bundle" --epochs "$epochs" --threads "$threads" --quiet >/dev/null
  python3 -c "import json,statistics as s; h=json.load(open('$work/bundle/history.json')); print(s.median(e['samples_per_second'] for e in h['epochs']))"
}
torch_rate() { # data args...
  local data=$1; shift
  python3 benches/reference/census_torch.py --data "$data" --epochs "$epochs" --threads "$threads" "$@" | python3 -c "import json,sys; print(json.load(sys.stdin)['samples_per_second'])"
}
for i in $(seq "$repeats"); do
  a=$(mtrec_rate "$work/small" configs/census-mmoe.json)
  b=$(torch_rate "$work/small" --dim 4 --experts 8 --expert-layers 16 --towers 8 --batch-size 1024)
  c=$(mtrec_rate "$work/wide" configs/census-mmoe-wide.json)
  d=$(torch_rate "$work/wide" --dim 16 --experts 8 --expert-layers 256 128 --towers 64 --batch-size 2048)
  echo "run $i small_mtrec=$a small_torch=$b wide_mtrec=$c wide_torch=$d"
done | tee "$work/runs"
python3 - "$work/runs" <<'PY'
import sys, statistics as st
runs = [dict(kv.split("=") for kv in line.split()[2:]) for line in open(sys.argv[1])]
for size in ("small", "wide"):
    m = [float(r[f"{size}_mtrec"]) for r in runs]
    t = [float(r[f"{size}_torch"]) for r in runs]
    ratio = [a / b for a, b in zip(m, t)]
    print(f"{size}: mtrec {st.median(m):,.0f} samples/s, pytorch {st.median(t):,.0f} samples/s, "
          f"ratio per pair median {st.median(ratio):.2f} (min {min(ratio):.2f}, max {max(ratio):.2f})")
PY
