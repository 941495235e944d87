#!/usr/bin/env bash
# ESMM against conditional conversion training on the synthetic data: ROWS rows of the default
# world (data seed 1), ingested with schemas/synthetic-esmm.json, each config trained with seeds
# 1..SEEDS. The quality benchmark reports, per config, the mean and 95% CI of every test metric,
# among them convert.auc_all_impressions (against would_convert on every test impression) and
# convert.auc (the clicked rows), and the Bayes-optimal AUCs of the true probabilities.
# Usage: benches/esmm.sh [ROWS] [SEEDS] [WORKDIR]. 10^6 rows take about 1.5 minutes a run on
# 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
seeds=${2:-5}
work=${3:-$(mktemp -d)}
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release"
"$bin/mtrec" gen synthetic --rows "$rows" --seed 1 --out "$work/log.parquet" --quiet >/dev/null
rm -rf "$work/ingest"
"$bin/mtrec" ingest --schema schemas/synthetic-esmm.json --input "$work/log.parquet" --out "$work/ingest" --quiet >/dev/null
"$bin/quality" --data "$work/ingest" --config configs/synthetic-esmm.json configs/synthetic-cvr-conditional.json \
  --seeds "$seeds" --threads 2 --out "$work/quality.json"
