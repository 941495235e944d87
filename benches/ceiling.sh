#!/usr/bin/env bash
# The real ceiling of the synthetic data: per data seed 1-5, the Bayes-optimal test click AUC
# (the true p_click), the correctly specified model's (benches/reference/oracle_click.py lowrank:
# the generator's own form) and the default MMoE's (training seed 1), at ROWS rows of the default
# world. Usage: benches/ceiling.sh [ROWS] [WORKDIR] (needs python3 with numpy, pyarrow and
# scikit-learn). 10^6 rows take about 1.5 minutes a seed on 2 cores, 10^7 about 10.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
work=${2:-$(mktemp -d)}
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release"
echo '{}' > "$work/default.json"
for seed in 1 2 3 4 5; do
  "$bin/mtrec" gen synthetic --rows "$rows" --seed "$seed" --out "$work/log.parquet" --quiet >/dev/null
  rm -rf "$work/ingest"
  "$bin/mtrec" ingest --schema schemas/synthetic.json --input "$work/log.parquet" --out "$work/ingest" --quiet >/dev/null
  echo "seed $seed reference: $(python3 benches/reference/oracle_click.py "$work/ingest" lowrank 8)"
  "$bin/quality" --data "$work/ingest" --config "$work/default.json" --seeds 1 --threads 2 --out "$work/quality" 2>&1 \
    | grep -E "default +click.auc" | sed "s/^/seed $seed mtrec: /"
done
