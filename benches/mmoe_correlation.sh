#!/usr/bin/env bash
# The MMoE paper's synthetic experiment (Ma et al., KDD 2018, §3) on mtrec's synthetic data:
# for task correlations 0.5, 0.9 and 1.0 between click and conversion, single-task,
# shared-bottom and MMoE over 5 seeds (configs/experiments/synthetic-sharing.json).
# Usage: benches/mmoe_correlation.sh [ROWS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-100000}
out=${2:-out/mmoe-correlation}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release/mtrec"
mkdir -p "$out"
for r in 0.5 0.9 1.0; do
  "$bin" gen synthetic --rows "$rows" --users 200 --items 100 --task-correlation "$r" --out "$out/r$r.parquet" >/dev/null
  "$bin" ingest --schema schemas/synthetic.json --input "$out/r$r.parquet" --out "$out/ingest-r$r" --force >/dev/null
  "$bin" experiment --config configs/experiments/synthetic-sharing.json --data "$out/ingest-r$r" \
    --out "$out/experiment-r$r" --force >/dev/null
  echo "== task correlation $r"
  python3 - "$out/experiment-r$r/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for c in s["configs"]:
    cells = []
    for key in ("click.auc", "convert.auc"):
        m = c["metrics"][key]
        cells.append(f"{key} {m['mean']:.4f} ± {m['ci95']:.4f}")
    print(f"{c['config']:<14} " + "  ".join(cells))
PY
done
