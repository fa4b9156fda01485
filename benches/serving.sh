#!/usr/bin/env bash
# Serving benchmarks, each side measured in the same run on the same machine:
#   1. overhead: one request at a time through `tractor serve` vs the engine in-process;
#   2. dynamic batching: throughput at concurrency 32, batching on vs off.
# Usage: benches/serving.sh [seconds per measurement, default 10]
# Prints a Markdown table; raw JSON reports land in target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
target="${CARGO_TARGET_DIR:-target}"
out="target/bench"
mkdir -p "$out"
cargo build --release --quiet --bin tractor --example make_models
tractor="$target/release/tractor"
"$target/release/examples/make_models" --bench "$out" >/dev/null   # mlp-4x1024.onnx

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# serve MODEL NAME EXTRA_ARGS... -> sets $url, waits for readiness
serve() {
  local model="$1" name="$2"; shift 2
  local port; port=$(free_port)
  "$tractor" serve --model "$model" --name "$name" --host 127.0.0.1 --http-port "$port" --grpc-port 0 "$@" 2>"$out/serve-$name.log" &
  pids+=($!)
  url="http://127.0.0.1:$port"
  for _ in $(seq 1 600); do
    curl -sf "$url/v2/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server for $name did not become ready" >&2; cat "$out/serve-$name.log" >&2; exit 1
}

stop_last() { local p="${pids[-1]}"; kill "$p"; wait "$p" 2>/dev/null || true; unset 'pids[-1]'; }

# field FILE LEVEL_INDEX EXPR -> a number from a bench JSON report
field() { python3 -c "import json,sys; r=json.load(open('$1'))['results'][$2]; print($3)"; }

echo "| benchmark | model | baseline | tractor | ratio |"
echo "|---|---|---|---|---|"

for model in tests/models/digits-mlp-v2.onnx tests/models/digits-cnn.onnx "$out/mlp-4x1024.onnx"; do
  name=$(basename "$model" .onnx)
  "$tractor" bench --in-process "$model" --duration "${secs}s" --json >"$out/overhead-$name-engine.json"
  serve "$model" "$name" --max-batch-size 1
  "$tractor" bench --url "$url" --model "$name" --duration "${secs}s" --json >"$out/overhead-$name-http.json"
  stop_last
  for p in p50 p99; do
    e=$(field "$out/overhead-$name-engine.json" 0 "r['latency_ms']['$p']")
    h=$(field "$out/overhead-$name-http.json" 0 "r['latency_ms']['$p']")
    python3 -c "print(f'| overhead {\"$p\"}, 1 request at a time | $name | engine in-process {$e:.3f} ms | serve {$h:.3f} ms | +{$h-$e:.3f} ms ({$h/$e:.2f}x) |')"
  done
done

for model in tests/models/digits-mlp-v2.onnx "$out/mlp-4x1024.onnx"; do
  name=$(basename "$model" .onnx)
  serve "$model" "$name" --max-batch-size 1
  "$tractor" bench --url "$url" --model "$name" --concurrency 32 --duration "${secs}s" --json >"$out/batching-$name-off.json"
  stop_last
  serve "$model" "$name" --max-batch-size 32
  "$tractor" bench --url "$url" --model "$name" --concurrency 32 --duration "${secs}s" --json >"$out/batching-$name-on.json"
  stop_last
  off=$(field "$out/batching-$name-off.json" 0 "r['throughput_rps']")
  on=$(field "$out/batching-$name-on.json" 0 "r['throughput_rps']")
  offp99=$(field "$out/batching-$name-off.json" 0 "r['latency_ms']['p99']")
  onp99=$(field "$out/batching-$name-on.json" 0 "r['latency_ms']['p99']")
  python3 -c "print(f'| throughput, concurrency 32 | $name | batching off {$off:.0f} req/s (p99 {$offp99:.2f} ms) | batching on {$on:.0f} req/s (p99 {$onp99:.2f} ms) | {$on/$off:.2f}x |')"
done
