"""Hostile V2 clients against a running `tractor serve`: seeded mutations of
JSON and binary-extension requests, compressed bodies, headers, plus the
issue-11 requests that used to abort the process. Prints counts per status,
5xx other than 503/504, requests without an answer, and the server's peak RSS.

Usage: hostile.py --port P --pid PID --requests N [--threads T] [--seed S]
"""

import argparse
import collections
import gzip
import http.client
import json
import random
import sys
import threading
import time
import zlib

HOSTILE_NUMBERS = [0, -1, 1 << 40, 2**64 - 1, -(2**63), 1e308, -0.0, "4", None,
                   [1, [2]], {"a": 1}, True, 4611686018427387904]


def valid(rows=1):
    return {"inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32",
                        "data": [0.25] * (64 * rows)}]}


def hostile_value(rng, depth=0):
    pick = rng.randrange(8)
    if pick == 0 and depth < 4:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if pick == 1 and depth < 4:
        return {"binary_data_size": hostile_value(rng, depth + 1)}
    if pick == 2:
        return "x" * rng.randrange(100)
    return rng.choice(HOSTILE_NUMBERS)


def mutate_json(rng):
    req = valid(rng.randrange(1, 4))
    inp = req["inputs"][0]
    pick = rng.randrange(20)
    if pick == 0:
        inp["shape"][0] = rng.choice(HOSTILE_NUMBERS)
    elif pick == 1:
        inp["shape"][1] = rng.choice(HOSTILE_NUMBERS)
    elif pick == 2:
        inp["shape"] = [1099511627776, 64]
        inp["data"] = [1]
    elif pick == 3:
        inp["shape"] = [rng.choice(HOSTILE_NUMBERS) for _ in range(rng.randrange(9))]
    elif pick == 4:
        inp["datatype"] = rng.choice(["BOOL", "UINT8", "INT64", "FP16", "BYTES", "", "fp32"])
    elif pick == 5:
        inp["data"] = hostile_value(rng)
    elif pick == 6:
        inp["data"] = [0.5] * rng.randrange(200)
    elif pick == 7:
        inp["data"][rng.randrange(len(inp["data"]))] = hostile_value(rng)
    elif pick == 8:
        inp["parameters"] = {"binary_data_size": rng.choice(HOSTILE_NUMBERS)}
    elif pick == 9:
        inp["name"] = rng.choice(["", "output", "input ", "logits"])
    elif pick == 10:
        req["inputs"] = [inp, inp]
    elif pick == 11:
        req["inputs"] = hostile_value(rng)
    elif pick == 12:
        req["outputs"] = [{"name": "logits", "parameters": {"binary_data": hostile_value(rng)}}]
    elif pick == 13:
        req["parameters"] = {"x": [0] * 20000}
    elif pick == 14:
        req["parameters"] = {"processing": hostile_value(rng)}
    elif pick == 15:
        req["id"] = hostile_value(rng)
    elif pick == 16:
        rows = rng.randrange(1, 100)
        inp["shape"] = [rows, 64]
        inp["data"] = [0.1] * (64 * rows)
    elif pick == 17:
        inner = 1
        for _ in range(rng.randrange(60, 200)):
            inner = [inner]
        inp["data"] = inner
    elif pick == 18:
        del inp[rng.choice(["name", "shape", "datatype", "data"])]
    return json.dumps(req).encode()


def mutate_bytes(rng, body):
    body = bytearray(body)
    pick = rng.randrange(4)
    if pick == 0 and body:
        del body[rng.randrange(len(body)):]
    elif pick == 1 and body:
        body[rng.randrange(len(body))] = rng.randrange(256)
    elif pick == 2:
        at = rng.randrange(len(body) + 1)
        body[at:at] = bytes(rng.choice(b'[]{},:"0-e9\\\x00\xff') for _ in range(rng.randrange(1, 8)))
    return bytes(body)


def binary(rng):
    rows = rng.randrange(1, 4)
    declared = rng.choice([rows * 256, rows * 256, rng.randrange(2000), rng.choice(HOSTILE_NUMBERS)])
    header = json.dumps({"inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": declared}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    tail = rng.choice([rows * 256, rows * 256, rng.randrange(1000)])
    body = header + bytes(rng.randrange(256) for _ in range(tail))
    length = rng.choice([str(len(header))] * 4 + ["-1", str(len(body) + 5), "abc",
                                                   "18446744073709551616", None])
    return body, length


def hostile_request(rng):
    path = rng.choice(["/v2/models/digits/infer"] * 8 + ["/v1/models/digits:predict",
                                                          "/v2/models/other/infer"])
    headers = {}
    if rng.randrange(4) == 0:
        body, length = binary(rng)
        if length is not None:
            headers["Inference-Header-Content-Length"] = length
    else:
        body = mutate_json(rng)
    if rng.randrange(3) == 0:
        body = mutate_bytes(rng, body)
    pick = rng.randrange(12)
    if pick == 0:
        body = mutate_bytes(rng, gzip.compress(body)) if rng.randrange(2) else gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    elif pick == 1:
        body = zlib.compress(body)
        headers["Content-Encoding"] = "deflate"
    elif pick == 2:
        # A gzip bomb: 20 MB of JSON numbers in ~20 KB.
        body = BOMB
        headers["Content-Encoding"] = "gzip"
    elif pick == 3:
        headers["Content-Encoding"] = rng.choice(["br", "gzip, gzip", "identity"])
    elif pick == 4:
        headers["Content-Type"] = rng.choice(["image/png", "multipart/form-data; boundary=x",
                                              "application/octet-stream"])
    return path, headers, body


BOMB = gzip.compress(b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":['
                     + b"0," * 10_000_000 + b"0]}]}", compresslevel=9)


def worker(port, seeds, results, lock):
    conn = None
    for seed in seeds:
        rng = random.Random(seed)
        path, headers, body = hostile_request(rng)
        status = None
        for attempt in range(2):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                break
            except (OSError, http.client.HTTPException) as e:
                if conn is not None:
                    conn.close()
                conn = None
                # A keep-alive connection the server closed between requests
                # is retried once on a fresh one; anything else is no answer.
                if attempt == 1:
                    status = "no answer: " + type(e).__name__
        with lock:
            results[status] += 1


def rss_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    seeds = [args.seed * 1_000_000 + i for i in range(args.requests)]
    results = collections.Counter()
    lock = threading.Lock()
    started = time.time()
    threads = [threading.Thread(target=worker, args=(args.port, seeds[i::args.threads], results, lock))
               for i in range(args.threads)]
    for t in threads:
        t.start()
    peak_sampled = 0
    health_worst = 0.0
    while any(t.is_alive() for t in threads):
        rss = rss_kib(args.pid, "VmRSS")
        if rss:
            peak_sampled = max(peak_sampled, rss)
        t0 = time.time()
        try:
            c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
            c.request("GET", "/v2/health/live")
            c.getresponse().read()
            c.close()
        except OSError:
            pass
        health_worst = max(health_worst, time.time() - t0)
        time.sleep(0.2)
    for t in threads:
        t.join()
    elapsed = time.time() - started
    statuses = {str(k): v for k, v in sorted(results.items(), key=lambda kv: str(kv[0]))}
    five_xx = sum(v for k, v in results.items() if isinstance(k, int) and k >= 500 and k not in (503, 504))
    no_answer = sum(v for k, v in results.items() if not isinstance(k, int))
    alive = rss_kib(args.pid, "VmRSS") is not None
    report = {
        "requests": sum(results.values()),
        "seconds": round(elapsed, 1),
        "statuses": statuses,
        "5xx_other_than_503_504": five_xx,
        "no_answers": no_answer,
        "server_alive_after": alive,
        "peak_rss_mib_vmhwm": round((rss_kib(args.pid, "VmHWM") or 0) / 1024, 1),
        "peak_rss_mib_sampled": round(peak_sampled / 1024, 1),
        "slowest_liveness_probe_s": round(health_worst, 3),
    }
    print(json.dumps(report, indent=2))
    sys.exit(0 if five_xx == 0 and no_answer == 0 and alive else 1)


if __name__ == "__main__":
    main()
