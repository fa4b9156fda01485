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

``--batch`` takes a list (``1,32``): each batch size is measured in turn.
``--fix-dim seq=32`` pins a named variable axis (a sequence length) in a
copy of the model that both engines load, since `tractor bench` gives such
an axis the length 1, and ``--clamp-indices`` bounds integer inputs that
index an embedding table (token type ids) in that copy; with ``--allow-tract-failure`` a model tractor cannot
load is reported (one ``{"skipped": ...}`` line with tractor's reason) and
the ONNX Runtime figures are still given.

Output: one JSON line per measured configuration on stdout, then per batch
one JSON line per thread setting with the ratios tract/ORT, and one with
tract's default threads against its one thread (when --tractor is given); a
side-by-side table goes to stderr. Example:

    benches/engine_vs_ort.py --model tests/models/digits-cnn.onnx --batch 1,8 \
        --requests 2000 --tractor target/release/tractor

`benches/engine_vs_ort.sh` runs issue 17's set (the ResNet-shaped CNN at
batch 1 and 32, tiny-bert at sequence lengths 16, 32 and 64) and prints the
ratios as a Markdown table.

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
import os
import subprocess
import sys
import tempfile
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


def rewrite_copy(model: str, dims: dict[str, int], clamp: bool, workdir: str) -> str:
    """A copy of `model` with the named variable axes of its inputs and outputs
    pinned and, with `clamp`, every integer input that indexes a Gather table
    passed through Min(x, rows - 1) first: `tractor bench` draws integers in
    [0, 8), past a 2-row token-type table, and both engines must run the same
    graph (one elementwise Min per input is noise next to the model)."""
    import onnx  # only these options need it (.ci/python-requirements.txt)
    from onnx import helper, numpy_helper

    m = onnx.load(model)
    if clamp:
        tables = {init.name: init.dims[0] for init in m.graph.initializer if init.dims}
        int_inputs = {i.name for i in m.graph.input if i.type.tensor_type.elem_type in (6, 7)}
        rows: dict[str, int] = {}
        for node in m.graph.node:
            if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in int_inputs \
                    and node.input[0] in tables:
                rows[node.input[1]] = min(rows.get(node.input[1], 1 << 62), tables[node.input[0]])
        prelude = []
        for name, n in sorted(rows.items()):
            elem = next(i.type.tensor_type.elem_type for i in m.graph.input if i.name == name)
            dtype = np.int64 if elem == 7 else np.int32
            bound, clamped = f"{name}__max", f"{name}__clamped"
            m.graph.initializer.append(numpy_helper.from_array(np.array(n - 1, dtype=dtype), bound))
            for node in m.graph.node:
                for k, inp in enumerate(node.input):
                    if inp == name:
                        node.input[k] = clamped
            prelude.append(helper.make_node("Min", [name, bound], [clamped], name=f"{name}__clamp"))
        nodes = prelude + list(m.graph.node)
        del m.graph.node[:]
        m.graph.node.extend(nodes)
    found = set()
    for value in list(m.graph.input) + list(m.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in dims:
                found.add(dim.dim_param)
                dim.dim_value = dims[dim.dim_param]
    missing = set(dims) - found
    if missing:
        raise SystemExit(f"error: {model} has no input or output axis named {', '.join(sorted(missing))}")
    tag = "-".join([f"{k}{v}" for k, v in sorted(dims.items())] + (["clamped"] if clamp else []))
    path = os.path.join(workdir, f"{os.path.splitext(os.path.basename(model))[0]}-{tag}.onnx")
    onnx.save(m, path)
    return path


class TractFailed(Exception):
    """`tractor bench` exited non-zero or reported errors; the message says why."""


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
        raise TractFailed(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        # Tolerate log lines before the report: parse from its first brace.
        report = json.loads(proc.stdout[proc.stdout.index("{"):])
    (level,) = report["results"]  # one concurrency level: 1
    if level.get("errors"):
        raise TractFailed(f"tractor bench had {level['errors']} errors: {level.get('first_error')}")
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
    print(f"\n{'engine':<12} {'batch':>6} {'threads':>8} {'mean ms':>9} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
          f"{'req/s':>10}", file=out)
    for r in rows:
        lat = r["latency_ms"]
        print(f"{r['engine']:<12} {r['batch']:>6} {r['threads']:>8} {lat['mean']:>9.4f} {lat['p50']:>9.4f} "
              f"{lat['p90']:>9.4f} {lat['p99']:>9.4f} {r['throughput_rps']:>10.1f}", file=out)
    for q in ratios:
        print(f"batch {q['batch']}: {q['ratio']} ({q['a_threads']} vs {q['b_threads']} threads): "
              f"mean {q['mean']:.2f}x  p50 {q['p50']:.2f}x  p99 {q['p99']:.2f}x  (below 1: the first is faster)",
              file=out)


def ratio_line(ratio: str, model: str, batch: int, a: dict, b: dict) -> dict:
    """a / b on mean, p50 and p99 latency."""
    line = {"ratio": ratio, "model": model, "batch": batch, "a_threads": a["threads"], "b_threads": b["threads"]}
    for key in ("mean", "p50", "p99"):
        b_ms = b["latency_ms"][key]
        line[key] = a["latency_ms"][key] / b_ms if b_ms > 0 else float("nan")
    return line


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,32, got {text!r}") from None
    if not batches or any(b < 1 for b in batches):
        raise argparse.ArgumentTypeError(f"batch sizes must be at least 1, got {text!r}")
    return batches


def parse_dim(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=N with N >= 1 (e.g. seq=32), got {text!r}")
    return name, int(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="ONNX model file")
    parser.add_argument("--batch", type=parse_batches, default=[1],
                        help="rows per run, or a comma-separated list measured in turn (default: 1)")
    parser.add_argument("--fix-dim", type=parse_dim, action="append", default=[], metavar="NAME=N",
                        help="pin a named variable axis in a copy of the model (repeatable)")
    parser.add_argument("--clamp-indices", action="store_true",
                        help="in the copy, bound integer inputs that index a Gather table to its rows")
    parser.add_argument("--requests", type=int, default=1000, help="measured runs per configuration (default: 1000)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured runs first, as tractor bench (default: 10)")
    parser.add_argument("--tractor", help="tractor binary: also run `tractor bench --in-process` (threads 1 and auto)")
    parser.add_argument("--allow-tract-failure", action="store_true",
                        help="when tractor cannot run the model, say why and keep the ONNX Runtime figures")
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("--requests must be at least 1")

    with tempfile.TemporaryDirectory(prefix="engine-vs-ort-") as workdir:
        if args.fix_dim or args.clamp_indices:
            model = rewrite_copy(args.model, dict(args.fix_dim), args.clamp_indices, workdir)
        else:
            model = args.model
        return run_all(args, model)


def run_all(args: argparse.Namespace, model: str) -> int:
    dims = {k: v for k, v in args.fix_dim}
    rows, ratios = [], []
    tractor = args.tractor
    for batch in args.batch:
        # (ORT threads, tractor --engine-threads): single-threaded, then each engine's default.
        pairs = [(1, "1"), (None, "auto")]
        measured = {}
        for ort_threads, tract_threads in pairs:
            row = bench_ort(model, batch, args.requests, args.warmup, ort_threads)
            row["dims"] = dims
            print(json.dumps(row), flush=True)
            rows.append(row)
            measured[("ort", tract_threads)] = row
            if not tractor:
                continue
            try:
                row = bench_tractor(tractor, model, batch, args.requests, args.warmup, tract_threads)
            except TractFailed as e:
                if not args.allow_tract_failure:
                    raise SystemExit(f"error: {e}") from None
                print(json.dumps({"skipped": "tract", "model": args.model, "dims": dims, "reason": str(e)}),
                      flush=True)
                print(f"tract skipped on {args.model} {dims}: {e}", file=sys.stderr)
                tractor = None
                continue
            row["dims"] = dims
            print(json.dumps(row), flush=True)
            rows.append(row)
            measured[("tract", tract_threads)] = row
        for threads in ("1", "auto"):
            if ("tract", threads) in measured:
                line = ratio_line("tract/onnxruntime", args.model, batch, measured[("tract", threads)],
                                  measured[("ort", threads)])
                line["dims"] = dims
                print(json.dumps(line), flush=True)
                ratios.append(line)
        if ("tract", "auto") in measured and ("tract", "1") in measured:
            # The default setting must never lose to one thread (issue 17).
            line = ratio_line("tract-auto/tract-1", args.model, batch, measured[("tract", "auto")],
                              measured[("tract", "1")])
            line["dims"] = dims
            print(json.dumps(line), flush=True)
            ratios.append(line)
    print_table(rows, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
