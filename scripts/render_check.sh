#!/usr/bin/env bash
# Renders an HTML report with headless Chromium and checks a non-trivial PNG came out.
# Usage: render_check.sh REPORT_HTML OUT_PNG
set -euo pipefail
if [ $# -ne 2 ]; then echo "usage: $0 REPORT_HTML OUT_PNG" >&2; exit 2; fi
html=$(realpath "$1"); png=$2
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then echo "no chromium found (apt-get install -y chromium)" >&2; exit 3; fi
rm -f "$png"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --screenshot="$png" --window-size=1280,5200 "file://$html" >/dev/null 2>&1 || true
if [ ! -s "$png" ]; then echo "no screenshot produced" >&2; exit 1; fi
size=$(stat -c %s "$png")
# A blank 1280x4000 page compresses to a few KB; charts and tables make it much larger.
if [ "$size" -lt 50000 ]; then echo "screenshot suspiciously small ($size bytes)" >&2; exit 1; fi
echo "ok: $png ($size bytes)"
