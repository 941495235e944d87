#!/usr/bin/env bash
# Target attention (DIN) against mean pooling of the users' recent clicks, on the synthetic
# data: ROWS rows of the default world (data seed 1) with `--history-effect HISTORY` (recent
# clicks steer the next click; 0: they do not) ingested twice, with schemas/synthetic.json
# (recent_items pooled by the mean) and schemas/synthetic-din.json (pooled by attention against
# the candidate item), the default MMoE trained on each with seeds 1..SEEDS. The quality
# benchmark prints the mean and 95% CI of every test metric and the Bayes-optimal AUCs.
# Usage: benches/din.sh [ROWS] [SEEDS] [HISTORY] [WORKDIR].
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
seeds=${2:-5}
history=${3:-2}
work=${4:-$(mktemp -d)}
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release"
"$bin/mtrec" gen synthetic --rows "$rows" --seed 1 --history-effect "$history" --out "$work/log.parquet" --quiet >/dev/null
echo '{}' > "$work/default.json"
for pooling in mean din; do
  schema=schemas/synthetic.json
  [ "$pooling" = din ] && schema=schemas/synthetic-din.json
  rm -rf "$work/ingest-$pooling"
  "$bin/mtrec" ingest --schema "$schema" --input "$work/log.parquet" --out "$work/ingest-$pooling" --quiet >/dev/null
  echo "== recent_items pooled by $pooling ($schema)"
  "$bin/quality" --data "$work/ingest-$pooling" --config "$work/default.json" --seeds "$seeds" --threads 2 \
    --out "$work/quality-$pooling.json"
done
