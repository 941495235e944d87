#!/usr/bin/env bash
# Calibration of the A/B verdicts on clustered synthetic data: false-positive rates under A/A
# (every verdict test, DeLong with rows independent beside them, the family-wise rate and the
# seesaw) and the power for planted click effects, with the report's minimum detectable effect.
# Builds only mtrec-report (no Polars). Usage: benches/ab_calibration.sh [EXPERIMENTS] [BOOTSTRAP]
# [aa|power|all] (defaults 1000 experiments per setting, 200 bootstrap replicates inside each
# simulated report, both tables).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q -p mtrec-report --example ab_calibration
lscpu | grep 'Model name' || true
date -u +%Y-%m-%d
"$CARGO_TARGET_DIR/release/examples/ab_calibration" "${1:-1000}" "${2:-200}" "${3:-all}"
