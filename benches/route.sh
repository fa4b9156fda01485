#!/usr/bin/env bash
# Latency the router adds: the same model behind `tractor serve` called
# directly and through `tractor route`, side by side in one run.
# The last column is each process's CPU time per request (user + system):
# on a machine whose cores the load generator, the router and serve share,
# the router's added latency is mostly its CPU, and most of that is the
# kernel's loopback TCP for the second hop.
# Usage: benches/route.sh [seconds per measurement, default 10] [concurrency, default 16] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; conc="${2:-16}"; rounds="${3:-3}"
target="${CARGO_TARGET_DIR:-target}"
out="target/bench"; mkdir -p "$out"
cargo build --release --quiet --bin tractor --example make_models
tractor="$target/release/tractor"
"$target/release/examples/make_models" --bench "$out" >/dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }
# CPU seconds a process has used so far (user + system, from /proc).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

echo "| model | direct p50 / p99 | through the router p50 / p99 | added p50 | CPU per request: serve / router |"
echo "|---|---|---|---|---|"
for model in tests/models/digits-mlp-v2.onnx "$out/mlp-4x1024.onnx"; do
  name=$(basename "$model" .onnx)
  sport=$(free_port); rport=$(free_port); aport=$(free_port)
  "$tractor" serve --model "$model" --name m --host 127.0.0.1 --http-port "$sport" --grpc-port 0 2>/dev/null & pids+=($!); spid=$!
  "$tractor" route --listen "127.0.0.1:$rport" --admin-listen "127.0.0.1:$aport" --backend "1=http://127.0.0.1:$sport@100" 2>/dev/null & pids+=($!); rpid=$!
  wait_up "http://127.0.0.1:$sport/v2/health/ready"; wait_up "http://127.0.0.1:$aport/healthz"
  # Rounds alternate direct and routed so both see the same machine; the
  # table shows the median round of each.
  for round in $(seq 1 "$rounds"); do
    s0=$(cpu_s $spid)
    "$tractor" bench --url "http://127.0.0.1:$sport" --model m --concurrency "$conc" --duration "${secs}s" --json >"$out/route-$name-direct-$round.json"
    s1=$(cpu_s $spid); r0=$(cpu_s $rpid)
    "$tractor" bench --url "http://127.0.0.1:$rport" --model m --concurrency "$conc" --duration "${secs}s" --json >"$out/route-$name-routed-$round.json"
    r1=$(cpu_s $rpid)
    echo "$s0 $s1 $r0 $r1" >"$out/route-$name-cpu-$round.txt"
  done
  python3 - "$out" "$name" "$conc" "$rounds" <<'PY'
import json, statistics, sys
out, name, conc, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def runs(kind):
    return [json.load(open(f"{out}/route-{name}-{kind}-{i}.json"))["results"][0] for i in range(1, rounds + 1)]
direct, routed = runs("direct"), runs("routed")
cpu = [list(map(float, open(f"{out}/route-{name}-cpu-{i}.txt").read().split())) for i in range(1, rounds + 1)]
med = lambda rs, q: statistics.median(r["latency_ms"][q] for r in rs)
d50, d99, r50, r99 = med(direct, "p50"), med(direct, "p99"), med(routed, "p50"), med(routed, "p99")
serve_us = statistics.median((c[1] - c[0]) / d["requests"] * 1e6 for c, d in zip(cpu, direct))
router_us = statistics.median((c[3] - c[2]) / r["requests"] * 1e6 for c, r in zip(cpu, routed))
print(f"| {name} (c={conc}) | {d50:.3f} / {d99:.3f} ms | {r50:.3f} / {r99:.3f} ms | {(r50 / d50 - 1) * 100:+.0f}% | {serve_us:.0f} / {router_us:.0f} us |")
PY
  for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done; pids=()
done
