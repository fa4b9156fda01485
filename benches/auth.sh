#!/usr/bin/env bash
# Access control's cost, each side measured in the same run on the same
# machine: `tractor serve` with auth off, with a bearer token from an auth
# file, and with an RS256 JWT verified against a JWKS, at concurrency 16.
# The model is the smallest one (digits-mlp-v2), so the check is the
# largest possible share of a request.
# Usage: benches/auth.sh [seconds per measurement, default 10] [rounds, default 2]
#   TRACTOR=path/to/tractor skips the release build and measures that binary.
# Prints a Markdown table (p50, throughput, ratios to auth off; the last
# row sends the JWT to the open server, the header's own cost); raw JSON
# reports land in target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
rounds="${2:-2}"
target="${CARGO_TARGET_DIR:-target}"
out="target/bench"
mkdir -p "$out"
tractor="${TRACTOR:-}"
if [ -z "$tractor" ]; then
  cargo build --release --quiet --bin tractor
  tractor="$target/release/tractor"
fi
model=tests/models/digits-mlp-v2.onnx
input=examples/requests/digits-mlp.json
work=$(mktemp -d)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# The token, and a JWT signed with the committed test key (tests/fixtures/auth).
token=bench-$(head -c 16 /dev/urandom | xxd -p)
cat >"$work/auth.yaml" <<YAML
tokens:
  - name: bench
    sha256: $(printf %s "$token" | sha256sum | cut -d' ' -f1)
    scopes: [infer, metadata]
YAML
key=tests/fixtures/auth/rsa-a.pem
n=$(openssl rsa -in "$key" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
printf '{"keys":[{"kty":"RSA","kid":"bench","alg":"RS256","n":"%s","e":"AQAB"}]}' "$n" >"$work/jwks.json"
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
claims=$(printf '{"sub":"bench","iss":"bench-issuer","aud":"tractor","exp":%d,"scope":"infer metadata"}' \
  $(( $(date +%s) + 3600 )) | b64url)
signature=$(printf %s "$header.$claims" | openssl dgst -sha256 -sign "$key" | b64url)
jwt="$header.$claims.$signature"

# serve NAME EXTRA_ARGS... -> sets $url, waits for readiness
serve() {
  local name="$1"; shift
  local port; port=$(free_port)
  "$tractor" serve --model "$model" --name digits --host 127.0.0.1 --http-port "$port" --grpc-port 0 "$@" 2>"$out/auth-serve-$name.log" &
  pids+=($!); spid=$!
  url="http://127.0.0.1:$port"
  for _ in $(seq 1 600); do
    curl -sf "$url/v2/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server $name did not become ready" >&2; cat "$out/auth-serve-$name.log" >&2; exit 1
}

serve off;   off_url=$url; off_pid=$spid
serve token --auth-file "$work/auth.yaml"; token_url=$url; token_pid=$spid
serve jwt --jwks "$work/jwks.json" --jwt-issuer bench-issuer --jwt-audience tractor; jwt_url=$url; jwt_pid=$spid

# The server's own CPU time (user + system, clock ticks) around one bench:
# steadier than throughput on shared cores, and the client's share left out.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measured() { # side pid command...
  local side="$1" pid="$2"; shift 2
  local before; before=$(ticks "$pid")
  "$@" >"$out/auth-$side-$round.json"
  echo $(( $(ticks "$pid") - before )) >"$out/auth-$side-$round.ticks"
}

# The three sides take turns, round after round, so a slow moment of the
# machine falls on all of them.
for round in $(seq 1 "$rounds"); do
  bench=("$tractor" bench --model digits --input "$input" --concurrency 16 --duration "${secs}s" --json)
  measured off "$off_pid" "${bench[@]}" --url "$off_url"
  measured token "$token_pid" "${bench[@]}" --url "$token_url" --token "$token"
  measured jwt "$jwt_pid" "${bench[@]}" --url "$jwt_url" --token "$jwt"
  # The JWT sent to the open server, which ignores it: what carrying a
  # ~600-byte header costs client and server on these shared cores,
  # apart from checking it.
  measured off-jwt-header "$off_pid" "${bench[@]}" --url "$off_url" --token "$jwt"
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def rounds_of(side):
    rows = []
    for r in range(1, rounds + 1):
        res = json.load(open(f"{out}/auth-{side}-{r}.json"))["results"][0]
        assert res["errors"] == 0, f"{side}: {res['errors']} errors: {res.get('first_error')}"
        ticks = int(open(f"{out}/auth-{side}-{r}.ticks").read())
        # Clock ticks are 1/100 s on Linux: microseconds of server CPU per request.
        rows.append((res["latency_ms"]["p50"], res["throughput_rps"], ticks * 1e4 / res["requests"]))
    return rows
off = rounds_of("off")
print(f"Medians of {rounds} rounds; the ratios are medians of each round's ratio to the open server in the same round.")
print("| auth at c=16 | p50 ms | throughput req/s | server CPU µs/req | p50 vs off | throughput vs off | CPU vs off |")
print("|---|---|---|---|---|---|---|")
for side in ["off", "token", "jwt", "off-jwt-header"]:
    rows = rounds_of(side)
    med = [statistics.median(r[k] for r in rows) for k in range(3)]
    ratio = [statistics.median(r[k] / o[k] for r, o in zip(rows, off)) for k in range(3)]
    print(f"| {side} | {med[0]:.3f} | {med[1]:.0f} | {med[2]:.1f} | {ratio[0]:.3f}x | {ratio[1]:.3f}x | {ratio[2]:.3f}x |")
PY
