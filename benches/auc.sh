#!/usr/bin/env bash
# AUC and GAUC speed: mtrec-metrics against scikit-learn's roc_auc_score on the same 10^7
# scores (20% positives, scores rounded to 1e-4 so ties occur), in one run. Needs
# `pip install scikit-learn numpy`. Usage: benches/auc.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-10000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --examples
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$CARGO_TARGET_DIR/release/examples/auc_speed" "$work" "$rows" | tee "$work/mtrec.txt"
python3 crates/mtrec-metrics/examples/auc_reference.py "$work" | tee "$work/sklearn.txt"
python3 - "$work" <<'PY'
import re, sys
d = sys.argv[1]
m = open(f"{d}/mtrec.txt").read(); s = open(f"{d}/sklearn.txt").read()
auc_v, auc_t = re.search(r"auc  = ([\d.]+)\s+best of 3: ([\d.]+) s", m).groups()
gauc_t = float(re.search(r"gauc = [\d.]+\s+best of 3: ([\d.]+) s", m).group(1))
sk_v, sk_t = re.search(r"= ([\d.]+)\s+best of 3: ([\d.]+) s", s).groups()
assert abs(float(auc_v) - float(sk_v)) < 1e-9, (auc_v, sk_v)
print(f"AUC equal to 1e-9; sklearn / mtrec time: auc {float(sk_t) / float(auc_t):.1f}x, gauc {float(sk_t) / gauc_t:.1f}x (goal >= 5x)")
PY
