#!/usr/bin/env python3
"""Cross-check a running tractor server with Triton's own HTTP client and ONNX Runtime.

For every ``--case NAME=ONNX_PATH=NPZ_PATH`` the server at ``--url`` must be
serving the ONNX model at ONNX_PATH under the model name NAME and the version
``--version``. A case written ``NAME@HOST:PORT=ONNX_PATH=NPZ_PATH`` names its
own server instead (tractor serves one model per process, so one run can
check several servers). The check talks to it only through ``tritonclient.http`` (the
client Triton users already have), and holds every answer against what ONNX
Runtime says about the same model and the same inputs:

* server live / ready, server metadata (name, version, extensions);
* model ready, model metadata and Triton-style model config, with and without
  the version in the path: names, datatypes and shapes as ONNX Runtime reads
  the model (variable dimensions as -1);
* inference on a batch of rows of the npz array ``x`` and on a single row, in
  every combination of JSON / binary inputs and JSON / binary outputs, plus
  the client's default (all outputs, binary), and overlapping requests of
  different sizes sent at once (which the dynamic batcher may merge): FP32 outputs must be within
  ``--atol`` of ONNX Runtime, integer outputs identical; every response must
  name the model and the version;
* errors the server must answer as errors: unknown version, wrong datatype,
  wrong shape.

One line is printed per check. The exit status is 0 when every check passed,
1 when any failed (each failure says what was sent and what came back), and 2
for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

# ONNX Runtime's type strings -> (KServe V2 datatype, numpy dtype).
ORT_TYPES = {
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(int16)": ("INT16", np.int16),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(uint16)": ("UINT16", np.uint16),
    "tensor(uint32)": ("UINT32", np.uint32),
    "tensor(uint64)": ("UINT64", np.uint64),
    "tensor(bool)": ("BOOL", np.bool_),
}

# Float outputs are compared with a tolerance, everything else exactly.
FLOAT_V2 = {"FP16", "FP32", "FP64"}


class CheckFailed(Exception):
    """A check's expectation was not met; the message says how."""


@dataclass
class TensorInfo:
    name: str
    datatype: str  # V2 name, e.g. FP32
    dtype: type  # numpy dtype
    shape: list[int]  # V2 style: -1 for every variable dimension


@dataclass
class Case:
    name: str
    onnx_path: str
    npz_path: str
    url: str | None  # None: the --url server


def tensor_infos(nodes) -> list[TensorInfo]:
    """ONNX Runtime's view of a model's inputs or outputs, in V2 terms."""
    infos = []
    for node in nodes:
        if node.type not in ORT_TYPES:
            raise SystemExit(f"error: {node.name} has type {node.type}, which this check does not handle")
        v2, dtype = ORT_TYPES[node.type]
        # Symbolic dimensions come back as strings ("batch") or None; V2 says -1.
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in node.shape]
        infos.append(TensorInfo(node.name, v2, dtype, shape))
    return infos


class Checker:
    """Runs named checks, prints one line for each, and remembers failures."""

    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []

    def check(self, label: str, fn, *args, **kwargs):
        """Runs ``fn``; a CheckFailed or any client error is a failed check."""
        try:
            detail = fn(*args, **kwargs)
        except CheckFailed as e:
            self._fail(label, str(e))
            return None
        except InferenceServerException as e:
            self._fail(label, f"server answered an error: status={e.status()} message={e.message()!r}")
            return None
        except Exception as e:  # noqa: BLE001 - report everything, keep checking
            self._fail(label, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
            return None
        self.passed += 1
        print(f"ok    {label}" + (f": {detail}" if isinstance(detail, str) and detail else ""), flush=True)
        return detail

    def _fail(self, label: str, reason: str) -> None:
        self.failures.append(f"{label}: {reason}")
        print(f"FAIL  {label}: {reason}", flush=True)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_error(what: str, fn, *args, **kwargs) -> str:
    """The call must raise InferenceServerException (an HTTP error status)."""
    try:
        answer = fn(*args, **kwargs)
    except InferenceServerException as e:
        return f"refused as expected (status={e.status()}, {e.message()!r})"
    if isinstance(answer, httpclient.InferResult):
        answer = answer.get_response()
    raise CheckFailed(f"{what} was accepted; the answer was {answer!r}")


def compare_output(name: str, got: np.ndarray | None, want: np.ndarray, datatype: str,
                   atol: float) -> tuple[str, float]:
    """Holds one output against ONNX Runtime's; returns a summary and the max abs diff."""
    expect(got is not None, f"output {name!r} is missing from the response")
    expect(
        list(got.shape) == list(want.shape),
        f"output {name!r} has shape {list(got.shape)}, ONNX Runtime gives {list(want.shape)}",
    )
    expect(got.dtype == want.dtype, f"output {name!r} has dtype {got.dtype}, ONNX Runtime gives {want.dtype}")
    if got.size == 0:
        return f"{name} empty", 0.0
    if datatype in FLOAT_V2:
        g, w = got.astype(np.float64), want.astype(np.float64)
        expect(
            np.array_equal(np.isfinite(g), np.isfinite(w)),
            f"output {name!r}: non-finite values differ from ONNX Runtime",
        )
        finite = np.isfinite(w)
        diff = float(np.max(np.abs(g[finite] - w[finite]))) if finite.any() else 0.0
        if diff > atol:
            worst = np.unravel_index(np.argmax(np.where(finite, np.abs(g - w), -1.0)), g.shape)
            raise CheckFailed(
                f"output {name!r}: max abs diff {diff:.3g} > {atol:g} "
                f"(at {tuple(int(i) for i in worst)}: server {g[worst].item()!r}, ONNX Runtime {w[worst].item()!r})"
            )
        return f"{name} max|diff|={diff:.2e}", diff
    mismatches = int(np.count_nonzero(got != want))
    if mismatches:
        first = np.argwhere(got != want)[0]
        idx = tuple(int(i) for i in first)
        raise CheckFailed(
            f"output {name!r}: {mismatches} of {got.size} values differ "
            f"(first at {idx}: server {got[idx].item()!r}, ONNX Runtime {want[idx].item()!r})"
        )
    return f"{name} identical", 0.0


def check_case(client: httpclient.InferenceServerClient, url: str, case: Case, version: str, rows: int,
               atol: float, checker: Checker) -> None:
    session = ort.InferenceSession(case.onnx_path, providers=["CPUExecutionProvider"])
    inputs = tensor_infos(session.get_inputs())
    outputs = tensor_infos(session.get_outputs())
    if len(inputs) != 1:
        raise SystemExit(f"error: {case.onnx_path} has {len(inputs)} inputs; this check feeds one (the npz 'x')")
    (inp,) = inputs
    x = np.load(case.npz_path)["x"].astype(inp.dtype)
    tag = case.name

    # --- readiness and metadata -------------------------------------------
    def model_ready():
        expect(client.is_model_ready(case.name), f"GET /v2/models/{case.name}/ready is not 200")
        expect(client.is_model_ready(case.name, version),
               f"GET /v2/models/{case.name}/versions/{version}/ready is not 200")
        expect(not client.is_model_ready(case.name + "-no-such-model"), "an unknown model reports ready")

    checker.check(f"{tag}: model ready (with and without version)", model_ready)

    def metadata(with_version: bool):
        md = client.get_model_metadata(case.name, version if with_version else "")
        expect(md.get("name") == case.name, f"metadata name is {md.get('name')!r}, expected {case.name!r}")
        expect(version in (md.get("versions") or []), f"metadata versions {md.get('versions')!r} lack {version!r}")
        for kind, want in (("inputs", inputs), ("outputs", outputs)):
            got = [(t.get("name"), t.get("datatype"), t.get("shape")) for t in md.get(kind) or []]
            expected = [(t.name, t.datatype, t.shape) for t in want]
            expect(got == expected, f"metadata {kind} are {got}, ONNX Runtime reads {expected}")
        return f"platform={md.get('platform')!r} inputs={[(t.name, t.datatype, t.shape) for t in inputs]}"

    checker.check(f"{tag}: model metadata", metadata, False)
    checker.check(f"{tag}: model metadata, version {version}", metadata, True)

    def config(with_version: bool):
        cfg = client.get_model_config(case.name, version if with_version else "")
        expect(cfg.get("name") == case.name, f"config name is {cfg.get('name')!r}, expected {case.name!r}")
        mbs = cfg.get("max_batch_size")
        expect(isinstance(mbs, int) and mbs >= 0, f"config max_batch_size is {mbs!r}")
        for kind, want in (("input", inputs), ("output", outputs)):
            got = [(t.get("name"), t.get("data_type"), t.get("dims")) for t in cfg.get(kind) or []]
            # Triton leaves the batch axis out of dims when max_batch_size > 0.
            expected = [(t.name, "TYPE_" + t.datatype, t.shape[1:] if mbs > 0 else t.shape) for t in want]
            expect(got == expected, f"config {kind} is {got}, expected {expected} (max_batch_size {mbs})")
        return f"max_batch_size={mbs}"

    checker.check(f"{tag}: model config", config, False)
    checker.check(f"{tag}: model config, version {version}", config, True)
    cfg = None
    try:
        cfg = client.get_model_config(case.name)
    except InferenceServerException:
        pass
    max_batch = (cfg or {}).get("max_batch_size") or 0
    batch_rows = min(rows, max_batch) if max_batch > 0 else rows

    checker.check(f"{tag}: unknown version is refused", expect_error,
                  "metadata of an unknown version", client.get_model_metadata, case.name, version + "-no-such-version")

    # --- inference ----------------------------------------------------------
    def infer(batch: np.ndarray, binary_in: bool, binary_out: bool | None, with_version: bool, request_id: str,
              compression: str | None = None):
        """One request; binary_out None asks for no outputs (the client's default: all, binary).
        compression gzips or deflates both the request and the answer, as the client offers."""
        infer_input = httpclient.InferInput(inp.name, list(batch.shape), inp.datatype)
        infer_input.set_data_from_numpy(batch, binary_data=binary_in)
        requested = None
        if binary_out is not None:
            requested = [httpclient.InferRequestedOutput(o.name, binary_data=binary_out) for o in outputs]
        result = client.infer(case.name, [infer_input], model_version=version if with_version else "",
                              outputs=requested, request_id=request_id,
                              request_compression_algorithm=compression,
                              response_compression_algorithm=compression)
        response = result.get_response()
        expect(response.get("model_name") == case.name,
               f"response model_name is {response.get('model_name')!r}, expected {case.name!r}")
        expect(response.get("model_version") == version,
               f"response model_version is {response.get('model_version')!r}, expected {version!r}")
        expect(response.get("id") == request_id, f"response id is {response.get('id')!r}, expected {request_id!r}")
        by_name = {o.get("name"): o for o in response.get("outputs") or []}
        expect(sorted(by_name) == sorted(o.name for o in outputs),
               f"response outputs are {sorted(by_name)}, expected {sorted(o.name for o in outputs)}")
        want = session.run(None, {inp.name: batch})
        details = []
        binary_expected = True if binary_out is None else binary_out
        for info, reference in zip(outputs, want):
            out = by_name[info.name]
            expect(out.get("datatype") == info.datatype,
                   f"output {info.name!r} datatype is {out.get('datatype')!r}, expected {info.datatype!r}")
            expect(out.get("shape") == list(reference.shape),
                   f"output {info.name!r} shape is {out.get('shape')!r}, expected {list(reference.shape)}")
            size = (out.get("parameters") or {}).get("binary_data_size")
            if binary_expected:
                expect(size == reference.nbytes and "data" not in out,
                       f"output {info.name!r} should be binary ({reference.nbytes} bytes) but is {out!r}")
            else:
                expect(size is None and "data" in out,
                       f"output {info.name!r} should be JSON data but is "
                       f"{ {k: v for k, v in out.items() if k != 'data'} !r}")
            details.append(compare_output(info.name, result.as_numpy(info.name), reference, info.datatype, atol)[0])
        return ", ".join(details)

    batches = [("batch of %d" % batch_rows, x[:batch_rows]), ("single row", x[batch_rows:batch_rows + 1])]
    n = 0
    for label, batch in batches:
        for binary_in in (False, True):
            for binary_out in (False, True):
                n += 1
                mode = f"{'binary' if binary_in else 'JSON'} in, {'binary' if binary_out else 'JSON'} out"
                checker.check(f"{tag}: infer {label}, {mode}", infer, batch, binary_in, binary_out, False, f"req-{n}")
        n += 1
        checker.check(f"{tag}: infer {label}, version {version} in path, JSON in/out",
                      infer, batch, False, False, True, f"req-{n}")
        n += 1
        checker.check(f"{tag}: infer {label}, no outputs requested (client default: all, binary)",
                      infer, batch, True, None, False, f"req-{n}")
        for algorithm in ("gzip", "deflate"):
            n += 1
            checker.check(f"{tag}: infer {label}, binary in/out, {algorithm} both ways",
                          infer, batch, True, True, False, f"req-{n}", algorithm)

    # --- concurrent requests: the dynamic batcher must hand each its own rows --
    def concurrent(url: str, count: int = 24):
        # async_infer sends on a pool of `concurrency` connections at once, so
        # the server sees overlapping requests of different sizes (1-4 rows,
        # each from its own slice of x) that it may merge into one batch.
        pool = httpclient.InferenceServerClient(url=url, concurrency=8, network_timeout=120.0)
        try:
            pending = []
            offset = 0
            for k in range(count):
                size = 1 + k % 4
                batch = x[offset:offset + size]
                offset = (offset + size) % max(1, len(x) - 4)
                infer_input = httpclient.InferInput(inp.name, list(batch.shape), inp.datatype)
                infer_input.set_data_from_numpy(batch, binary_data=True)
                requested = [httpclient.InferRequestedOutput(o.name, binary_data=True) for o in outputs]
                pending.append((batch, pool.async_infer(case.name, [infer_input], outputs=requested,
                                                        request_id=f"async-{k}")))
            worst = 0.0
            for k, (batch, handle) in enumerate(pending):
                result = handle.get_result()
                response = result.get_response()
                expect(response.get("id") == f"async-{k}",
                       f"request async-{k} got the answer of {response.get('id')!r}")
                for info, reference in zip(outputs, session.run(None, {inp.name: batch})):
                    _, diff = compare_output(info.name, result.as_numpy(info.name), reference, info.datatype, atol)
                    worst = max(worst, diff)
            return f"{count} overlapping requests of 1-4 rows, max|diff|={worst:.2e}"
        finally:
            pool.close()

    checker.check(f"{tag}: concurrent requests get their own rows", concurrent, url)

    # --- requests the server must refuse -------------------------------------
    one = x[:1]

    def bad_datatype():
        other = "FP64" if inp.datatype != "FP64" else "FP32"
        arr = one.astype(np.float64 if other == "FP64" else np.float32)
        bad = httpclient.InferInput(inp.name, list(arr.shape), other)
        bad.set_data_from_numpy(arr, binary_data=True)
        return expect_error(f"input {inp.name!r} as {other}", client.infer, case.name, [bad])

    def bad_shape():
        arr = np.concatenate([one.reshape(1, -1), np.zeros((1, 1), one.dtype)], axis=1)
        bad = httpclient.InferInput(inp.name, list(arr.shape), inp.datatype)
        bad.set_data_from_numpy(arr, binary_data=False)
        return expect_error(f"input {inp.name!r} of shape {list(arr.shape)}", client.infer, case.name, [bad])

    checker.check(f"{tag}: wrong input datatype is refused", bad_datatype)
    checker.check(f"{tag}: wrong input shape is refused", bad_shape)


def parse_case(text: str) -> Case:
    # NAME=ONNX_PATH=NPZ_PATH; the name is up to the first '=', the npz after the last.
    name, _, rest = text.partition("=")
    onnx_path, _, npz_path = rest.rpartition("=")
    name, _, url = name.partition("@")
    if not (name and onnx_path and npz_path):
        raise argparse.ArgumentTypeError(f"expected NAME[@HOST:PORT]=ONNX_PATH=NPZ_PATH, got {text!r}")
    return Case(name, onnx_path, npz_path, url or None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="server address as host:port (no scheme), for cases without @HOST:PORT")
    parser.add_argument("--case", action="append", type=parse_case, required=True, metavar="NAME[@HOST:PORT]=ONNX=NPZ",
                        help="a model served under NAME (on HOST:PORT, else on --url), its ONNX file and an npz "
                             "holding inputs 'x'; repeatable")
    parser.add_argument("--version", default="1", help="model version every server reports (default: 1)")
    parser.add_argument("--rows", type=int, default=16, help="rows in the batched requests (default: 16)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest abs diff for float outputs (default: 1e-4)")
    args = parser.parse_args()
    for case in args.case:
        if case.url is None and args.url is None:
            parser.error(f"case {case.name!r} names no server and --url is not given")

    checker = Checker()
    clients: dict[str, httpclient.InferenceServerClient] = {}

    def client_for(url: str) -> httpclient.InferenceServerClient:
        if url not in clients:
            clients[url] = httpclient.InferenceServerClient(url=url, network_timeout=120.0)
            c = clients[url]

            def server_health():
                expect(c.is_server_live(), "GET /v2/health/live is not 200")
                expect(c.is_server_ready(), "GET /v2/health/ready is not 200")

            def server_metadata():
                md = c.get_server_metadata()
                expect(isinstance(md.get("name"), str) and md["name"], f"server metadata lacks a name: {md!r}")
                expect(isinstance(md.get("version"), str) and md["version"], f"server metadata lacks a version: {md!r}")
                ext = md.get("extensions")
                expect(isinstance(ext, list), f"server metadata extensions is not a list: {md!r}")
                expect("binary_tensor_data" in ext, f"extensions {ext!r} lack binary_tensor_data")
                return f"{md['name']} {md['version']} extensions={ext}"

            checker.check(f"server {url}: live and ready", server_health)
            checker.check(f"server {url}: metadata", server_metadata)
        return clients[url]

    try:
        for case in args.case:
            url = case.url or args.url
            check_case(client_for(url), url, case, args.version, args.rows, args.atol, checker)
    finally:
        for c in clients.values():
            c.close()

    total = checker.passed + len(checker.failures)
    if checker.failures:
        print(f"\nFAILED: {len(checker.failures)} of {total} checks:", file=sys.stderr)
        for f in checker.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"all {total} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
