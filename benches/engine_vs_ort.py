#!/usr/bin/env python3
"""Engine latency: tract (through `tractor bench --in-process`) against ONNX Runtime.

Both engines run the same model on a synthetic input of the same shape, one
request at a time, with the same warm-up and the same nearest-rank
percentiles as `tractor bench`:

* ONNX Runtime with ``intra_op_num_threads=1`` and with its default threads;
* with ``--tractor PATH``: ``tractor bench --in-process MODEL --engine-threads 1``
  and ``--engine-threads auto``.

The input is what `tractor bench` generates: for each model input, a shape
where a variable first axis is the batch B and any other variable axis is 1;
float32 in [0, 1) (integers in [0, 8) for integer inputs). The values differ
from tractor's (another random generator), which does not matter for these
dense models.

Output: one JSON line per measured configuration on stdout, then one JSON line
per thread setting with the ratios tract/ORT (when --tractor is given); a
side-by-side table goes to stderr. Example:

    benches/engine_vs_ort.py --model tests/models/digits-cnn.onnx --batch 8 \
        --requests 2000 --tractor target/release/tractor

`tractor bench` times each run through a tokio blocking task, so its figures
include a thread hand-off (measured here at some 10-50 us) that ONNX
Runtime's do not: on the smallest models at batch 1 that hand-off, not the
engine, dominates the ratio. Figures on a 2-core machine are noisy; repeat a
run before trusting a difference under ~1.5x.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

# ONNX Runtime's input types -> numpy dtypes (what `tractor bench` can feed).
ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def synthetic_inputs(session: ort.InferenceSession, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Random inputs shaped like tractor's: variable axis 0 -> batch, other variable axes -> 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for node in session.get_inputs():
        if node.type not in ORT_DTYPES:
            raise SystemExit(f"error: input {node.name} has type {node.type}, which this bench cannot generate")
        dtype = ORT_DTYPES[node.type]
        shape = [d if isinstance(d, int) and d >= 0 else (batch if axis == 0 else 1)
                 for axis, d in enumerate(node.shape)]
        if np.issubdtype(dtype, np.floating):
            feeds[node.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        elif dtype is np.bool_:
            feeds[node.name] = rng.random(shape) < 0.5
        else:
            feeds[node.name] = rng.integers(0, 8, size=shape).astype(dtype)
    return feeds


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    """Mean and nearest-rank percentiles in ms, as tractor's bench computes them."""
    ms = sorted(s * 1e3 for s in samples_s)
    if not ms:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

    def rank(p: float) -> float:
        idx = math.ceil(p / 100.0 * len(ms))
        return ms[min(max(idx, 1), len(ms)) - 1]

    return {"mean": sum(ms) / len(ms), "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ms[-1]}


def bench_ort(model: str, batch: int, requests: int, warmup: int, threads: int | None) -> dict:
    """Times `requests` sequential runs; threads None keeps ONNX Runtime's default."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    feeds = synthetic_inputs(session, batch)
    for _ in range(warmup):
        session.run(None, feeds)
    samples = []
    started = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        session.run(None, feeds)
        samples.append(time.perf_counter() - t0)
    duration = time.perf_counter() - started
    return {
        "engine": "onnxruntime",
        "engine_version": ort.__version__,
        "threads": str(threads) if threads is not None else "default",
        "model": model,
        "batch": batch,
        "requests": requests,
        "duration_s": duration,
        "throughput_rps": requests / duration if duration > 0 else 0.0,
        "latency_ms": latency_summary(samples),
    }


def tractor_version(tractor: str) -> str:
    """`tractor --version` prints "tractor X.Y.Z"."""
    proc = subprocess.run([tractor, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "tractor (unknown version)"


def bench_tractor(tractor: str, model: str, batch: int, requests: int, warmup: int, threads: str) -> dict:
    """Runs `tractor bench --in-process` and reshapes its JSON report like bench_ort's."""
    cmd = [tractor, "bench", "--in-process", model, "--engine-threads", threads, "--batch", str(batch),
           "--requests", str(requests), "--warmup", str(warmup), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr}")
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        # Tolerate log lines before the report: parse from its first brace.
        report = json.loads(proc.stdout[proc.stdout.index("{"):])
    (level,) = report["results"]  # one concurrency level: 1
    if level.get("errors"):
        raise SystemExit(f"error: tractor bench had {level['errors']} errors: {level.get('first_error')}")
    return {
        "engine": "tract",
        "engine_version": tractor_version(tractor),
        "threads": threads,
        "model": model,
        "batch": report.get("batch", batch),
        "requests": level["requests"],
        "duration_s": level["duration_s"],
        "throughput_rps": level["throughput_rps"],
        "latency_ms": level["latency_ms"],
    }


def print_table(rows: list[dict], ratios: list[dict]) -> None:
    out = sys.stderr
    print(f"\n{'engine':<12} {'threads':>8} {'mean ms':>9} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'req/s':>10}",
          file=out)
    for r in rows:
        lat = r["latency_ms"]
        print(f"{r['engine']:<12} {r['threads']:>8} {lat['mean']:>9.4f} {lat['p50']:>9.4f} {lat['p90']:>9.4f} "
              f"{lat['p99']:>9.4f} {r['throughput_rps']:>10.1f}", file=out)
    for q in ratios:
        print(f"tract/ORT ({q['tract_threads']} vs {q['ort_threads']} threads): mean {q['mean']:.2f}x  "
              f"p50 {q['p50']:.2f}x  p99 {q['p99']:.2f}x  (below 1: tract is faster)", file=out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="ONNX model file")
    parser.add_argument("--batch", type=int, default=1, help="rows per run (default: 1)")
    parser.add_argument("--requests", type=int, default=1000, help="measured runs per configuration (default: 1000)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured runs first, as tractor bench (default: 10)")
    parser.add_argument("--tractor", help="tractor binary: also run `tractor bench --in-process` (threads 1 and auto)")
    args = parser.parse_args()
    if args.batch < 1 or args.requests < 1:
        parser.error("--batch and --requests must be at least 1")

    rows = []
    # (ORT threads, tractor --engine-threads): single-threaded, then each engine's default.
    pairs = [(1, "1"), (None, "auto")]
    for ort_threads, tract_threads in pairs:
        row = bench_ort(args.model, args.batch, args.requests, args.warmup, ort_threads)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.tractor:
            row = bench_tractor(args.tractor, args.model, args.batch, args.requests, args.warmup, tract_threads)
            print(json.dumps(row), flush=True)
            rows.append(row)

    ratios = []
    if args.tractor:
        for ort_row, tract_row in zip(rows[0::2], rows[1::2]):
            ratio = {"ratio": "tract/onnxruntime", "model": args.model, "batch": args.batch,
                     "tract_threads": tract_row["threads"], "ort_threads": ort_row["threads"]}
            for key in ("mean", "p50", "p99"):
                ort_ms = ort_row["latency_ms"][key]
                ratio[key] = tract_row["latency_ms"][key] / ort_ms if ort_ms > 0 else float("nan")
            print(json.dumps(ratio), flush=True)
            ratios.append(ratio)
    print_table(rows, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
