#!/usr/bin/env bash
# Added latency of image processing, one request at a time through
# `tractor serve` (digits-cnn behind tests/processing/digits-cnn.yaml):
#   baseline: a V2 request carrying the 8x8 digit as an FP32 tensor;
#   png 8x8:  the same digit as an 8x8 grayscale PNG, base64 in a V2 request
#             with "parameters": {"processing": true} (decode, scale, softmax, top-k);
#   png 224:  a 224x224 RGB PNG (a noisy gradient, 142 KB) through the same
#             spec: decode, RGB to gray, bilinear resize to 8x8, scale, top-k.
# The three run interleaved against one server, `rounds` times each, and
# the median of the rounds' p50 and p99 is reported, so drift on this shared
# machine hits all three alike.
# Usage: benches/processing.sh [seconds per measurement, default 5] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
rounds="${2:-3}"
target="${CARGO_TARGET_DIR:-target}"
out="target/bench/processing"
mkdir -p "$out"
cargo build --release --quiet --bin tractor
tractor="$target/release/tractor"

pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

# The three request bodies, with the standard library only.
python3 - "$out" <<'PY'
import base64, json, random, struct, sys, zlib
out = sys.argv[1]

def png(width, height, channels, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    color = {1: 0, 3: 2}[channels]
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))

def pixels_of(path):
    # tests/processing/digit-7.png: 8-bit gray, one IDAT, filter 0 on every row.
    data, pos, idat = open(path, "rb").read(), 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert all(raw[r * 9] == 0 for r in range(8))
    return [raw[r * 9 + 1 + c] for r in range(8) for c in range(8)]

digit_png = open("tests/processing/digit-7.png", "rb").read()
pixels = pixels_of("tests/processing/digit-7.png")
tensor = {"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32",
                      "data": [p / 240 for p in pixels]}]}
random.seed(7)
rows = [[v for x in range(224) for v in ((x + random.randint(0, 40)) % 256,
                                          (y + random.randint(0, 40)) % 256,
                                          ((x + y) // 2 + random.randint(0, 40)) % 256)]
        for y in range(224)]
big_png = png(224, 224, 3, rows)

def processed(image):
    return {"parameters": {"processing": True},
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                        "data": [base64.b64encode(image).decode()]}]}

json.dump(tensor, open(f"{out}/tensor.json", "w"))
json.dump(processed(digit_png), open(f"{out}/png8.json", "w"))
json.dump(processed(big_png), open(f"{out}/png224.json", "w"))
print(f"8x8 PNG {len(digit_png)} bytes, 224x224 RGB PNG {len(big_png)} bytes", file=sys.stderr)
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$tractor" serve --model tests/models/digits-cnn.onnx --processing tests/processing/digits-cnn.yaml \
  --host 127.0.0.1 --http-port "$port" --grpc-port 0 2>"$out/serve.log" &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 600); do
  curl -sf "$url/v2/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$url/v2/health/ready" >/dev/null || { cat "$out/serve.log" >&2; exit 1; }

for round in $(seq 1 "$rounds"); do
  for variant in tensor png8 png224; do
    "$tractor" bench --url "$url" --model digits-cnn --input "$out/$variant.json" \
      --concurrency 1 --duration "${secs}s" --json >"$out/$variant-$round.json"
  done
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def stat(variant, p):
    values = []
    for r in range(1, rounds + 1):
        result = json.load(open(f"{out}/{variant}-{r}.json"))["results"][0]
        assert result["errors"] == 0, f"{variant} round {r}: {result['errors']} errors"
        values.append(result["latency_ms"][p])
    return statistics.median(values)
base = {p: stat("tensor", p) for p in ("p50", "p99")}
print("| request (digits-cnn, one at a time) | p50 | p99 | added p50 | p50 ratio to tensor |")
print("|---|---|---|---|---|")
print(f"| V2 FP32 tensor (baseline) | {base['p50']:.3f} ms | {base['p99']:.3f} ms | | 1.00x |")
for variant, label in (("png8", "8x8 gray PNG, processed"), ("png224", "224x224 RGB PNG, processed")):
    p50, p99 = stat(variant, "p50"), stat(variant, "p99")
    print(f"| {label} | {p50:.3f} ms | {p99:.3f} ms | +{p50 - base['p50']:.3f} ms | {p50 / base['p50']:.2f}x |")
PY
