#!/usr/bin/env bash
# Offline scoring speed: `mtrec predict` over the test split of a synthetic log against
# onnxruntime running the same model over the same encoded rows
# (benches/reference/predict_onnx.py; skipped without onnxruntime, see benches/README.md).
# The log, its ingest and a bundle (the quickstart's MMoE, one epoch) are made in WORKDIR when
# absent: at the default 5×10^7 rows the test split is 5×10^6 rows (split 80/10/10), and the
# work directory needs about 13 GB (benches/streaming.sh makes the same files).
# Usage: benches/predict.sh [ROWS] [WORKDIR] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-50000000}
work=${2:-/tmp/mtrec-predict-bench}
rounds=${3:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release/mtrec"
onnx=0
if python3 -c "import onnxruntime, onnx, torch, pyarrow" 2>/dev/null; then
  onnx=1
else
  echo "onnxruntime reference skipped (pip install onnxruntime onnx torch pyarrow numpy to run it)" >&2
fi
mkdir -p "$work"
lscpu | grep 'Model name' || true
echo "date $(date -u +%Y-%m-%d) rows $rows threads $(nproc) rounds $rounds"
if [ ! -f "$work/bundle/model.json" ]; then
  rm -rf "$work/ingest" "$work/bundle"
  "$bin" gen synthetic --rows "$rows" --users 100000 --items 20000 --out "$work/log.parquet" --quiet
  "$bin" ingest --schema schemas/synthetic.json --input "$work/log.parquet" --out "$work/ingest" --quiet
  "$bin" train --data "$work/ingest" --out "$work/bundle" --epochs 1 --quiet
fi
results="$work/predict-results.jsonl"
: >"$results"
for round in $(seq "$rounds"); do
  /usr/bin/time -f "%e %M" -o "$work/time" "$bin" predict --bundle "$work/bundle" --data "$work/ingest" --split test \
    --out "$work/predictions.parquet" --quiet
  read -r wall kib <"$work/time"
  test_rows=$(python3 -c "import pyarrow.parquet as pq; print(pq.ParquetFile('$work/predictions.parquet').metadata.num_rows)")
  echo "{\"mode\": \"mtrec_predict\", \"round\": $round, \"rows\": $test_rows, \"seconds\": $wall, \"peak_rss_mib\": $((kib / 1024))}" >>"$results"
  if [ "$onnx" = 1 ]; then
    python3 benches/reference/predict_onnx.py --bundle "$work/bundle" --data "$work/ingest" --split test \
      --predictions "$work/predictions.parquet" | sed "s/^{/{\"round\": $round, /" >>"$results"
  fi
done
python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
mtrec = [r for r in runs if r["mode"] == "mtrec_predict"]
onnx = {r["round"]: r for r in runs if r["mode"] == "onnx_predict"}
fmt = lambda xs: f"{statistics.median(xs):,.0f} ({min(xs):,.0f}-{max(xs):,.0f})"
rows = mtrec[0]["rows"]
print(f"test rows {rows:,}; medians over {len(mtrec)} rounds (min-max)")
print(f"mtrec predict (read, score, write Parquet): {fmt([r['rows'] / r['seconds'] for r in mtrec])} rows/s, "
      f"peak RSS {max(r['peak_rss_mib'] for r in mtrec)} MiB")
if onnx:
    print(f"onnxruntime (read + run): {fmt([r['rows_per_s'] for r in onnx.values()])} rows/s; "
          f"run alone {fmt([r['run_rows_per_s'] for r in onnx.values()])} rows/s; "
          f"max |difference| {max(r['max_abs_diff'] for r in onnx.values()):.1e}")
    ratios = [m["rows"] / m["seconds"] / onnx[m["round"]]["rows_per_s"] for m in mtrec if m["round"] in onnx]
    print(f"mtrec predict / onnxruntime (read + run), per round: median {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f})")
PY
