#!/usr/bin/env bash
# Hostile clients against the release `tractor serve` (issue 11): at least
# 20,000 mutated V2 requests (benches/hostile.py), then the counts per
# status, 5xx, requests without an answer, whether the server survived
# (crashes), and its peak RSS from /proc.
#
#   benches/hostile.sh [REQUESTS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-20000}
THREADS=${2:-8}
PYTHON=${TRACTOR_PYTHON:-python3}
BIN=${TRACTOR_BIN:-target/release/tractor}
[ -x "$BIN" ] || cargo build --release
PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOG=$(mktemp)
"$BIN" serve --model tests/models/digits-mlp-v2.onnx --name digits --host 127.0.0.1 \
    --http-port "$PORT" --grpc-port 0 --termination-log "$LOG.termination" 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && break
    sleep 0.1
done
echo "serve pid $PID on port $PORT; RSS at start: $(grep VmRSS /proc/$PID/status)"
status=0
"$PYTHON" benches/hostile.py --port "$PORT" --pid "$PID" --requests "$REQUESTS" --threads "$THREADS" || status=$?
if ! kill -0 "$PID" 2>/dev/null; then
    wait "$PID" || echo "CRASH: serve exited with $?"
    tail -20 "$LOG"
    exit 1
fi
echo "panics caught (tractor_engine_panics_total): $(curl -s "http://127.0.0.1:$PORT/metrics" | grep '^tractor_engine_panics_total' | awk '{print $2}')"
exit "$status"
