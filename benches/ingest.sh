#!/usr/bin/env bash
# Ingestion benchmark: `mtrec ingest` of a 1M-row synthetic Parquet file against a plain Polars
# read-and-collect of the same file (benches/src/bin/polars_read.rs), alternated in one run,
# with peak RSS from GNU time. Usage: benches/ingest.sh [ROWS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
repeats=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/mtrec" gen synthetic --rows "$rows" --users 20000 --items 10000 --out "$work/synthetic.parquet" >/dev/null
measure() { # prints "wall_seconds peak_rss_kib"
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null
  cat "$work/time"
}
echo "rows=$rows repeats=$repeats input=$(du -k "$work/synthetic.parquet" | cut -f1) KiB"
for i in $(seq "$repeats"); do
  read -r ti mi < <(measure "$bin/mtrec" ingest --schema schemas/synthetic.json --input "$work/synthetic.parquet" --out "$work/ingest" --force)
  read -r tp mp < <(measure "$bin/polars_read" "$work/synthetic.parquet")
  out_kib=$(du -k -c "$work"/ingest/{train,valid,test}/*.arrow | tail -1 | cut -f1)
  echo "run $i ingest_s=$ti ingest_rss_kib=$mi polars_read_s=$tp polars_rss_kib=$mp encoded_kib=$out_kib"
done | tee "$work/runs"
python3 - "$work/runs" "$rows" <<'PY'
import sys, statistics as st
runs = [dict(kv.split("=") for kv in line.split()[2:]) for line in open(sys.argv[1])]
rows = int(sys.argv[2])
f = lambda k: [float(r[k]) for r in runs]
ratio = [p / i for i, p in zip(f("ingest_s"), f("polars_read_s"))]  # = ingest rows/s / polars rows/s
rss = [m / o for m, o in zip(f("ingest_rss_kib"), f("encoded_kib"))]
print(f"ingest rows/s median {rows / st.median(f('ingest_s')):,.0f}; polars read rows/s median {rows / st.median(f('polars_read_s')):,.0f}")
print(f"ingest speed / polars read speed, per pair: median {st.median(ratio):.3f} (min {min(ratio):.3f}, max {max(ratio):.3f})")
print(f"ingest peak RSS / encoded output size: median {st.median(rss):.2f} (min {min(rss):.2f}, max {max(rss):.2f}); encoded {st.median(f('encoded_kib'))/1024:.1f} MiB, peak RSS {st.median(f('ingest_rss_kib'))/1024:.1f} MiB")
PY
