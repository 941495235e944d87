#!/usr/bin/env bash
# Downloads the official UCI Census-Income (KDD) files (CC BY 4.0) and checks them.
# Usage: ./download.sh [DIR]   (default: this script's directory)
set -euo pipefail
dir=${1:-$(dirname "$0")}
base=https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld
mkdir -p "$dir"
for f in census-income.data.gz census-income.test.gz census-income.names; do
  echo "fetching $f"
  curl -fL --retry 3 -o "$dir/$f.part" "$base/$f"
  mv "$dir/$f.part" "$dir/$f"
done
# The test file's SHA-256 as distributed by UCI; the train file has no recorded digest here and
# is checked by its row count.
echo "5ac4cacd3ca9f1ecb10de1a0a41e4ac68fdc419e3fec190f5c0c6cc03b2ea659  $dir/census-income.test.gz" | sha256sum -c -
rows=$(gzip -dc "$dir/census-income.test.gz" | wc -l)
[ "$rows" -eq 99762 ] || { echo "census-income.test.gz: expected 99762 rows, got $rows" >&2; exit 1; }
rows=$(gzip -dc "$dir/census-income.data.gz" | wc -l)
[ "$rows" -eq 199523 ] || { echo "census-income.data.gz: expected 199523 rows, got $rows" >&2; exit 1; }
echo "ok: $dir"
