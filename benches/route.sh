#!/usr/bin/env bash
# Latency the router adds: the same model behind `tractor serve` called
# directly and through `tractor route`, side by side in one run.
# Usage: benches/route.sh [seconds per measurement, default 10] [concurrency, default 16]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; conc="${2:-16}"
target="${CARGO_TARGET_DIR:-target}"
out="target/bench"; mkdir -p "$out"
cargo build --release --quiet --bin tractor --example make_models
tractor="$target/release/tractor"
"$target/release/examples/make_models" --bench "$out" >/dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 600); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }
field() { python3 -c "import json; r=json.load(open('$1'))['results'][0]; print($2)"; }

echo "| model | direct p50 / p99 | through the router p50 / p99 | added p50 |"
echo "|---|---|---|---|"
for model in tests/models/digits-mlp-v2.onnx "$out/mlp-4x1024.onnx"; do
  name=$(basename "$model" .onnx)
  sport=$(free_port); rport=$(free_port); aport=$(free_port)
  "$tractor" serve --model "$model" --name m --host 127.0.0.1 --http-port "$sport" 2>/dev/null & pids+=($!)
  "$tractor" route --listen "127.0.0.1:$rport" --admin-listen "127.0.0.1:$aport" --backend "1=http://127.0.0.1:$sport@100" 2>/dev/null & pids+=($!)
  wait_up "http://127.0.0.1:$sport/v2/health/ready"; wait_up "http://127.0.0.1:$aport/healthz"
  "$tractor" bench --url "http://127.0.0.1:$sport" --model m --concurrency "$conc" --duration "${secs}s" --json >"$out/route-$name-direct.json"
  "$tractor" bench --url "http://127.0.0.1:$rport" --model m --concurrency "$conc" --duration "${secs}s" --json >"$out/route-$name-routed.json"
  d50=$(field "$out/route-$name-direct.json" "r['latency_ms']['p50']"); d99=$(field "$out/route-$name-direct.json" "r['latency_ms']['p99']")
  r50=$(field "$out/route-$name-routed.json" "r['latency_ms']['p50']"); r99=$(field "$out/route-$name-routed.json" "r['latency_ms']['p99']")
  python3 -c "print(f'| $name (c=$conc) | {$d50:.3f} / {$d99:.3f} ms | {$r50:.3f} / {$r99:.3f} ms | +{($r50/$d50-1)*100:.0f}% |')"
  for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done; pids=()
done
