#!/usr/bin/env bash
# Training across processes: N ranks of T/N threads under mpirun, with replicated and with
# row-sharded embedding tables, against one process of T threads, same model, data, batch size
# and seed, alternated in one run; and the bytes each step hands to MPI.
# Usage: benches/distributed.sh [REPEATS] [EPOCHS] [RANKS] [THREADS]
# (defaults 3, 4, 2, 2). Needs OpenMPI (openmpi-bin, libopenmpi-dev, libclang-dev) and the
# Census-Income test file (CENSUS_TEST, as for train_speed.sh); set BASELINE_BIN to an mtrec
# binary to also time it as the one-process reference (e.g. the build before a change).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
epochs=${2:-4}
ranks=${3:-2}
threads=${4:-2}
census=${CENSUS_TEST:-datasets/census-income/census-income.test.gz}
[ -f "$census" ] || { echo "$census not found: run datasets/census-income/download.sh or set CENSUS_TEST" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --features mtrec/mpi --bin mtrec
bin="$CARGO_TARGET_DIR/release/mtrec"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" ingest --schema schemas/census-income.json --input "$census" --out "$work/small" --quiet >/dev/null
"$bin" ingest --schema benches/census-wide.schema.json --input "$census" --out "$work/wide" --quiet >/dev/null
"$bin" gen synthetic --rows 500000 --out "$work/synthetic.parquet" --quiet >/dev/null
"$bin" ingest --schema schemas/synthetic.json --input "$work/synthetic.parquet" --out "$work/synthetic" --quiet >/dev/null
# The same rows in shards of 50,000, read by windows of 200,000 rows: dealt to the ranks.
"$bin" ingest --schema schemas/synthetic.json --input "$work/synthetic.parquet" --out "$work/sharded" \
  --shard-rows 50000 --quiet >/dev/null
# The synthetic data's model: the default training config (the quickstart's MMoE).
echo '{}' > "$work/default.json"
echo '{"window_rows": 200000}' > "$work/windows.json"
# Median training samples/s over the epochs (validation excluded) and bytes per step, from
# history.json.
figures() {
  python3 -c "import json,statistics as s; e=json.load(open('$1/history.json'))['epochs']; \
print(s.median(x['samples_per_second'] for x in e), s.median(x.get('exchanged_bytes_per_step') or 0 for x in e))"
}
one() { # binary data config
  rm -rf "$work/one" "$work/one.checkpoint"
  "$1" train --data "$2" --config "$3" --out "$work/one" --epochs "$epochs" --threads "$threads" --quiet >/dev/null
  figures "$work/one"
}
many() { # data config
  rm -rf "$work/many" "$work/many.checkpoint"
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks" "$bin" train --distributed --data "$1" \
    --config "$2" --out "$work/many" --epochs "$epochs" --threads $((threads / ranks)) --quiet >/dev/null
  figures "$work/many"
}
# The config with every embedding table row-sharded.
sharded() { # config
  python3 -c "import json,sys; c=json.load(open('$1')); c['embedding_sharding']={'min_bytes': 0}; print(json.dumps(c))" \
    > "$work/sharded.json"
  echo "$work/sharded.json"
}
for i in $(seq "$repeats"); do
  for model in small wide synthetic dealt; do
    case $model in
      small) data="$work/small" config=configs/census-mmoe.json ;;
      wide) data="$work/wide" config=configs/census-mmoe-wide.json ;;
      synthetic) data="$work/synthetic" config="$work/default.json" ;;
      dealt) data="$work/sharded" config="$work/windows.json" ;;
    esac
    read -r a _ < <(one "$bin" "$data" "$config")
    read -r b bytes < <(many "$data" "$config")
    read -r c sbytes < <(many "$data" "$(sharded "$config")")
    base=0
    if [ -n "${BASELINE_BIN:-}" ]; then
      read -r base _ < <(one "$BASELINE_BIN" "$data" "$config")
    fi
    echo "run $i model=$model one=$a many=$b bytes=$bytes sharded=$c sbytes=$sbytes baseline=$base"
  done
done | tee "$work/runs"
python3 - "$work/runs" "$ranks" "$threads" <<'PY'
import sys, statistics as st
runs = [dict(kv.split("=") for kv in line.split()[2:]) for line in open(sys.argv[1])]
ranks, threads = sys.argv[2], sys.argv[3]
for model in ("small", "wide", "synthetic", "dealt"):
    rs = [r for r in runs if r["model"] == model]
    one = [float(r["one"]) for r in rs]
    many = [float(r["many"]) for r in rs]
    ratio = [m / o for m, o in zip(many, one)]
    sharded = [float(r["sharded"]) for r in rs]
    sratio = [m / o for m, o in zip(sharded, one)]
    line = (f"{model}: 1 process x {threads} threads {st.median(one):,.0f} samples/s; {ranks} ranks, replicated "
            f"{st.median(many):,.0f}, ratio per pair median {st.median(ratio):.2f} "
            f"(min {min(ratio):.2f}, max {max(ratio):.2f}), "
            f"{st.median(float(r['bytes']) for r in rs) / 1024:,.1f} KiB per step per rank; sharded "
            f"{st.median(sharded):,.0f}, ratio {st.median(sratio):.2f} (min {min(sratio):.2f}, max {max(sratio):.2f}), "
            f"{st.median(float(r['sbytes']) for r in rs) / 1024:,.1f} KiB per step per rank")
    base = [float(r["baseline"]) for r in rs]
    if all(b > 0 for b in base):
        line += f"; this build / baseline, 1 process: {st.median(o / b for o, b in zip(one, base)):.3f}"
    print(line)
PY
