#!/usr/bin/env bash
# Cost per training step of each loss strategy, side by side in one run: synthetic data (5 tasks),
# MMoE of 3 experts of [16], towers [8], 2 threads; ms per step = batch / (training samples/s),
# the median over 3 epochs from history.json (validation excluded).
# Usage: benches/strategies.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-50000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release/mtrec"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" gen synthetic --rows "$rows" --users 500 --items 200 --out "$work/s.parquet" >/dev/null
"$bin" ingest --schema schemas/synthetic.json --input "$work/s.parquet" --out "$work/ingest" >/dev/null
printf "%-12s %10s %10s\n" strategy "batch 256" "batch 1024"
for strategy in '{"type":"static"}' '{"type":"uncertainty"}' '{"type":"dwa","temperature":2.0}' \
                '{"type":"gradnorm","alpha":1.5,"lr":0.01}' '{"type":"pcgrad"}'; do
  line=$(python3 -c "import json; print(json.loads('$strategy')['type'])")
  for batch in 256 1024; do
    cat > "$work/cfg.json" <<JSON
{"model": {"architecture": {"type": "mmoe", "experts": 3, "expert_layers": [16]}, "tower_layers": [8]},
 "loss_strategy": $strategy, "epochs": 3, "batch_size": $batch, "threads": 2,
 "early_stopping": {"metric": "loss", "patience": 0}}
JSON
    "$bin" train --data "$work/ingest" --config "$work/cfg.json" --out "$work/b" --quiet >/dev/null
    ms=$(python3 -c "import json,statistics as s; h=json.load(open('$work/b/history.json')); print(f\"{1000 * $batch / s.median(e['samples_per_second'] for e in h['epochs']):.1f}\")")
    line="$line $ms"
  done
  printf "%-12s %10s %10s\n" $line
done
