# Sourced by the serving benchmarks (benches/serve.sh, benches/exposure.sh): builds mtrec, makes
# a work directory, picks a free loopback port, and runs one `mtrec serve` at a time on it,
# stopped (and the work directory removed) on exit.
#   start_server LOG ARGS...   starts `mtrec serve --addr 127.0.0.1:$port ARGS...`, its stderr in
#                              LOG, and waits for /readyz (printing LOG if the server dies)
#   stop_server                stops it
#   detect_onnx                sets onnx=1 where the onnxruntime reference can run (else 0, saying
#                              how to install it)
# Sets: bin (mtrec), load (serve_load), work, port, url, server (the running server's pid).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mtrec-target}"
cargo build --release -q --workspace --bins
bin="$CARGO_TARGET_DIR/release/mtrec"
load="$CARGO_TARGET_DIR/release/serve_load"
work=$(mktemp -d)
server=""
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
url="http://127.0.0.1:$port"
start_server() {
  local log=$1
  shift
  "$bin" serve --addr "127.0.0.1:$port" "$@" 2>"$log" &
  server=$!
  for _ in $(seq 600); do
    curl -sf "$url/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  curl -sf "$url/readyz" >/dev/null
}
detect_onnx() {
  onnx=0
  if python3 -c "import onnxruntime, onnx, torch, pyarrow" 2>/dev/null; then
    onnx=1
  else
    echo "onnxruntime reference skipped (pip install onnxruntime onnx torch pyarrow numpy to run it)" >&2
  fi
}
