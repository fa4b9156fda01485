#!/usr/bin/env bash
# What request spans cost: the router's CPU per request and the p50 through
# it, for release binaries of
#   main      main's commit, default features (the baseline),
#   main'     the same binary again: the noise band of this machine,
#   default   this branch, default features (spans compiled in, off),
#   otel-off  this branch with `--features otel`, no endpoint,
#   otel-on   the same with an endpoint (a sink on loopback that answers
#             200) and the request spans on, every trace sampled,
# each a router in front of one `tractor serve`, loaded by `tractor bench`
# (as benches/route.sh does). Rounds go through the configurations in turn
# so all see the same machine; the table shows medians and ratios to main
# from the same run. A ratio of `default` within main' 's band means the
# default build pays nothing measurable.
# Usage: benches/trace.sh [seconds per measurement, default 10] [concurrency, default 16] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; conc="${2:-16}"; rounds="${3:-3}"
target="${CARGO_TARGET_DIR:-target}"
out="target/bench/trace"; mkdir -p "$out/bin"

# Three builds share one target directory (the dependencies build once);
# each binary is copied out before the next build overwrites it.
echo "building main's tractor (default features)" >&2
main_src=$(mktemp -d)
git archive "${TRACE_BASE:-main}" | tar -x -C "$main_src"
(cd "$main_src" && CARGO_TARGET_DIR="$OLDPWD/$target" cargo build --release --quiet --bin tractor)
cp "$target/release/tractor" "$out/bin/main"
rm -rf "$main_src"
echo "building this branch (default features, then otel)" >&2
cargo build --release --quiet --bin tractor
cp "$target/release/tractor" "$out/bin/default"
cargo build --release --quiet --bin tractor --features otel
cp "$target/release/tractor" "$out/bin/otel"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# A collector that accepts every export and keeps nothing.
cport=$(free_port)
python3 - "$cport" <<'PY' 2>/dev/null & pids+=($!)
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY

model=tests/models/digits-mlp-v2.onnx
configs=(main main2 default otel-off otel-on)
declare -A rport rpid
for c in "${configs[@]}"; do
  case $c in main|main2) bin="$out/bin/main" ;; default) bin="$out/bin/default" ;; *) bin="$out/bin/otel" ;; esac
  env=(env -u RUST_LOG -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
  [ "$c" = otel-on ] && env+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$cport")
  sport=$(free_port); rport[$c]=$(free_port); aport=$(free_port)
  "${env[@]}" "$bin" serve --model "$model" --name m --host 127.0.0.1 --http-port "$sport" --grpc-port 0 2>/dev/null & pids+=($!)
  "${env[@]}" "$bin" route --listen "127.0.0.1:${rport[$c]}" --admin-listen "127.0.0.1:$aport" \
    --backend "1=http://127.0.0.1:$sport@100" 2>/dev/null & pids+=($!); rpid[$c]=$!
  wait_up "http://127.0.0.1:$sport/v2/health/ready"; wait_up "http://127.0.0.1:$aport/healthz"
done
for round in $(seq 1 "$rounds"); do
  for c in "${configs[@]}"; do
    r0=$(cpu_s "${rpid[$c]}")
    "$out/bin/main" bench --url "http://127.0.0.1:${rport[$c]}" --model m --concurrency "$conc" \
      --duration "${secs}s" --json >"$out/$c-$round.json"
    r1=$(cpu_s "${rpid[$c]}")
    echo "$r0 $r1" >"$out/$c-cpu-$round.txt"
  done
done
python3 - "$out" "$rounds" "$conc" "${configs[@]}" <<'PY'
import json, statistics, sys
out, rounds, conc, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def figures(c):
    cpu, p50 = [], []
    for i in range(1, rounds + 1):
        r = json.load(open(f"{out}/{c}-{i}.json"))["results"][0]
        a, b = map(float, open(f"{out}/{c}-cpu-{i}.txt").read().split())
        cpu.append((b - a) / r["requests"] * 1e6)
        p50.append(r["latency_ms"]["p50"])
    return statistics.median(cpu), statistics.median(p50)
base_cpu, base_p50 = figures("main")
print(f"router in front of serve, digits-mlp-v2, c={conc}, {rounds} rounds (medians)")
print("| build | router CPU per request | ratio to main | p50 | ratio to main |")
print("|---|---|---|---|---|")
for c in configs:
    cpu, p50 = figures(c)
    name = "main'" if c == "main2" else c
    print(f"| {name} | {cpu:.0f} us | {cpu / base_cpu:.3f} | {p50:.3f} ms | {p50 / base_p50:.3f} |")
PY
