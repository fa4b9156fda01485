#!/usr/bin/env bash
# tiny-bert over V2 (issue 17), each side measured in the same run:
#   1. throughput at sequence 16/32/64, concurrency 1 and 16, dynamic batching
#      off (--max-batch-size 1) against on (32);
#   2. ONNX Runtime in-process, one thread, batch 1, as a reference for c=1;
#   3. the time to build a plan for one sequence length (the server's
#      tractor_engine_plan_build_duration_seconds, one build per length).
# Usage: benches/bert.sh [seconds per measurement, default 10]  (TRACTOR=binary: no build)
# Needs $TRACTOR_PYTHON (or the venv) with onnxruntime and numpy.
# Prints a Markdown table; raw JSON reports land in target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
target="${CARGO_TARGET_DIR:-target}"
out="target/bench"
py="${TRACTOR_PYTHON:-$HOME/.cache/tractor/venv/bin/python}"
model=tests/models/tiny-bert-sentiment.onnx
mkdir -p "$out"
# TRACTOR=binary skips the build and measures that binary.
if [ -z "${TRACTOR:-}" ]; then cargo build --release --quiet --bin tractor; fi
tractor="${TRACTOR:-$target/release/tractor}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

serve() {
  local port; port=$(free_port)
  "$tractor" serve --model "$model" --name bert --host 127.0.0.1 --http-port "$port" --grpc-port 0 "$@" 2>"$out/serve-bert.log" &
  pids+=($!)
  url="http://127.0.0.1:$port"
  for _ in $(seq 1 600); do
    curl -sf "$url/v2/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not become ready" >&2; cat "$out/serve-bert.log" >&2; exit 1
}
stop_last() { local p="${pids[-1]}"; kill "$p"; wait "$p" 2>/dev/null || true; unset 'pids[-1]'; }
field() { python3 -c "import json,sys; r=json.load(open('$1'))['results'][$2]; print($3)"; }
metric() { curl -sf "$url/metrics" | awk -v n="$1" '!f && $1 ~ "^"n {print $2; f=1}'; }

# One V2 body per length: a sentence of random word ids, mask 1, types 0.
for seq in 16 32 64; do
  "$py" - "$seq" >"$out/bert-seq$seq.json" <<'EOF'
import json, sys
import numpy as np
n = int(sys.argv[1])
ids = [1] + np.random.default_rng(n).integers(3, 200, n - 2).tolist() + [2]
t = lambda name, v: {"name": name, "datatype": "INT64", "shape": [1, n], "data": v}
print(json.dumps({"inputs": [t("input_ids", ids), t("attention_mask", [1] * n), t("token_type_ids", [0] * n)]}))
EOF
done

echo "| benchmark | sequence | baseline | tractor | ratio |"
echo "|---|---|---|---|---|"
for seq in 16 32 64; do
  ort=$("$py" - "$model" "$seq" <<'EOF'
import sys, time
import numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
n = int(sys.argv[2])
feed = {"input_ids": np.ones((1, n), np.int64), "attention_mask": np.ones((1, n), np.int64),
        "token_type_ids": np.zeros((1, n), np.int64)}
for _ in range(50): s.run(None, feed)
t0 = time.perf_counter(); k = 0
while time.perf_counter() - t0 < 3: s.run(None, feed); k += 1
print(k / (time.perf_counter() - t0))
EOF
)
  for batch in 1 32; do
    serve --max-batch-size "$batch"
    "$tractor" bench --url "$url" --model bert --input "$out/bert-seq$seq.json" --concurrency 1,16 \
      --duration "${secs}s" --json >"$out/bert-seq$seq-batch$batch.json"
    if [ "$batch" = 32 ] && [ "$seq" = 16 ]; then
      # Builds so far: length 1 at load, 16 on the first request.
      builds=$(metric tractor_engine_plan_builds_total)
      sum=$(metric tractor_engine_plan_build_duration_seconds_sum)
      count=$(metric tractor_engine_plan_build_duration_seconds_count)
    fi
    stop_last
  done
  c1=$(field "$out/bert-seq$seq-batch1.json" 0 "r['throughput_rps']")
  off=$(field "$out/bert-seq$seq-batch1.json" 1 "r['throughput_rps']")
  on=$(field "$out/bert-seq$seq-batch32.json" 1 "r['throughput_rps']")
  onp99=$(field "$out/bert-seq$seq-batch32.json" 1 "r['latency_ms']['p99']")
  offp99=$(field "$out/bert-seq$seq-batch1.json" 1 "r['latency_ms']['p99']")
  python3 -c "print(f'| concurrency 1, over HTTP | $seq | ORT in-process, 1 thread, {$ort:.0f} rows/s | serve {$c1:.0f} req/s | {$c1/$ort:.2f}x |')"
  python3 -c "print(f'| concurrency 16 | $seq | batching off {$off:.0f} req/s (p99 {$offp99:.2f} ms) | batching on {$on:.0f} req/s (p99 {$onp99:.2f} ms) | {$on/$off:.2f}x |')"
done
python3 -c "print(f'| plan build (release), mean of {$count:.0f} (length 16 on a request, {$builds:.0f} builds in all with length 1 at load) | 16 | | {1000*$sum/max($count,1):.0f} ms | |')"
