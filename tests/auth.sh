#!/usr/bin/env bash
# `tractor serve --auth-file` seen through curl: health open, 401 without or
# with a wrong token (with WWW-Authenticate), 403 without the scope, 200
# with it. Run by tests/auth.rs (curl_sees_401_403_and_200_from_the_binary);
# by hand: TRACTOR=target/debug/tractor bash tests/auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tractor="${TRACTOR:-target/debug/tractor}"
work=$(mktemp -d)
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/auth.yaml" <<YAML
tokens:
  - name: curl-app
    sha256: $(printf %s curl-app-token | sha256sum | cut -d' ' -f1)
    scopes: [infer, metadata]
  - name: curl-reader
    value: curl-reader-token
    scopes: [metadata]
YAML
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
"$tractor" serve --model tests/models/digits-mlp-v2.onnx --name digits --host 127.0.0.1 \
  --http-port "$port" --auth-file "$work/auth.yaml" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 1 600); do
  curl -sf "$url/v2/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done

fail() { echo "FAIL: $*" >&2; cat "$work/serve.log" >&2; exit 1; }
# expect STATUS CURL_ARGS... : the status curl sees
expect() {
  local want="$1"; shift
  local got; got=$(curl -s -o "$work/body" -w '%{http_code}' "$@")
  [ "$got" = "$want" ] || fail "$* answered $got, expected $want: $(cat "$work/body")"
}
infer=(-X POST -H 'content-type: application/json' --data-binary @examples/requests/digits-mlp.json "$url/v2/models/digits/infer")

expect 200 "$url/v2/health/live"
expect 401 "${infer[@]}"
curl -s -D - -o /dev/null "${infer[@]}" | grep -qi '^www-authenticate: Bearer' || fail "no WWW-Authenticate: Bearer"
grep -q '"error"' "$work/body" || fail "no V2 error body"
expect 401 -H 'Authorization: Bearer not-a-token' "${infer[@]}"
expect 403 -H 'Authorization: Bearer curl-reader-token' "${infer[@]}"
expect 200 -H 'Authorization: Bearer curl-reader-token' "$url/v2/models/digits"
expect 200 -H 'Authorization: Bearer curl-app-token' "${infer[@]}"
grep -q '"model_name":"digits"' "$work/body" || fail "no answer from the model: $(cat "$work/body")"
expect 401 "$url/metrics"
grep -q 'access control on' "$work/serve.log" || fail "the server did not say access control is on"
echo "tests/auth.sh: 8 checks passed"
