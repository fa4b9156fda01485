#!/usr/bin/env bash
# gRPC against REST (JSON and binary) on the same `tractor serve`, one run:
# throughput and p50 at concurrency 1 and 16, and what `tractor route`
# adds on gRPC. All figures come from `tractor bench` in the same run, so
# the ratios compare like with like on this machine; the REST binary
# extension is the baseline (the issue's goal: gRPC p50 at concurrency 1 no
# worse than REST binary).
# Usage: benches/grpc.sh [seconds per measurement, default 5] [model, default the digits MLP]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"; model="${2:-tests/models/digits-mlp-v2.onnx}"
target="${CARGO_TARGET_DIR:-target}"
out="target/bench"; mkdir -p "$out"
# TRACTOR=path/to/tractor measures that binary and builds nothing;
# TRACTOR_BENCH_PROFILE=dev measures the debug build instead (quicker to
# build; only the ratios mean anything then).
profile="${TRACTOR_BENCH_PROFILE:-release}"
if [ -n "${TRACTOR:-}" ]; then
  tractor="$TRACTOR"
elif [ "$profile" = release ]; then
  cargo build --release --quiet --bin tractor; tractor="$target/release/tractor"
else
  cargo build --quiet --bin tractor; tractor="$target/debug/tractor"
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }
http=$(free_port); grpc=$(free_port); rhttp=$(free_port); rgrpc=$(free_port); admin=$(free_port)
"$tractor" serve --model "$model" --name m --host 127.0.0.1 --http-port "$http" --grpc-port "$grpc" 2>"$out/grpc-serve.log" & pids+=($!)
"$tractor" route --listen "127.0.0.1:$rhttp" --admin-listen "127.0.0.1:$admin" --grpc-port "$rgrpc" \
  --backend "1=http://127.0.0.1:$http@100" --grpc-backend "1=http://127.0.0.1:$grpc" 2>"$out/grpc-route.log" & pids+=($!)
wait_up "http://127.0.0.1:$http/v2/health/ready"; wait_up "http://127.0.0.1:$admin/healthz"
run() { # name protocol url
  "$tractor" bench --url "$3" --model m --protocol "$2" --concurrency 1,16 --duration "${secs}s" --json >"$out/grpc-$1.json"
}
run rest rest "http://127.0.0.1:$http"
run binary rest-binary "http://127.0.0.1:$http"
run grpc grpc "http://127.0.0.1:$grpc"
run routed-rest rest-binary "http://127.0.0.1:$rhttp"
run routed-grpc grpc "http://127.0.0.1:$rgrpc"
python3 - "$out" "$(basename "$model" .onnx)" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
runs = {k: json.load(open(f"{out}/grpc-{k}.json"))["results"] for k in
        ["rest", "binary", "grpc", "routed-rest", "routed-grpc"]}
label = {"rest": "REST JSON", "binary": "REST binary", "grpc": "gRPC",
         "routed-rest": "REST binary via route", "routed-grpc": "gRPC via route"}
print(f"{name}: throughput (req/s) and p50 (ms); ratios against REST binary at the same concurrency")
print("| protocol | c=1 req/s | c=1 p50 | c=16 req/s | c=16 p50 | p50 c=1 / binary | req/s c=16 / binary |")
print("|---|---|---|---|---|---|---|")
base = runs["binary"]
for k, rs in runs.items():
    one, sixteen = rs
    errors = one["errors"] + sixteen["errors"]
    assert errors == 0, f"{k}: {errors} errors: {one.get('first_error') or sixteen.get('first_error')}"
    print(f"| {label[k]} | {one['throughput_rps']:.0f} | {one['latency_ms']['p50']:.3f} | "
          f"{sixteen['throughput_rps']:.0f} | {sixteen['latency_ms']['p50']:.3f} | "
          f"{one['latency_ms']['p50'] / base[0]['latency_ms']['p50']:.2f} | "
          f"{sixteen['throughput_rps'] / base[1]['throughput_rps']:.2f} |")
g, r = runs["grpc"], runs["routed-grpc"]
print(f"router overhead on gRPC, p50: c=1 {r[0]['latency_ms']['p50'] - g[0]['latency_ms']['p50']:+.3f} ms, "
      f"c=16 {r[1]['latency_ms']['p50'] - g[1]['latency_ms']['p50']:+.3f} ms")
PY
