#!/usr/bin/env python3
"""Cross-check tractor's gRPC API with Triton's gRPC client and ONNX Runtime.

For every ``--case NAME@HOST:PORT=ONNX_PATH=NPZ_PATH`` the gRPC endpoint at
HOST:PORT (``tractor serve --grpc-port``, or ``tractor route --grpc-port`` in
front of it) must serve the ONNX model at ONNX_PATH under the name NAME and
the version ``--version``. The check talks to it only through
``tritonclient.grpc`` (and, for typed ``contents``, which that client never
sends, through the stubs it ships, generated from the same .proto), and holds
every answer against ONNX Runtime on the same model and rows of the npz array
``x``:

* server live / ready / metadata; model ready (with and without version),
  metadata and Triton model config against the model as ONNX Runtime reads it;
* inference with raw contents (the client's way) on a batch and on one row,
  with typed contents, with ``id`` and ``parameters`` echoed: FP32 within
  ``--atol`` of ONNX Runtime, integers identical;
* 32 overlapping async requests of different sizes (through the batcher);
* errors with the protocol's status codes: unknown model (NOT_FOUND), wrong
  shape, bad datatype, a raw buffer of the wrong size, typed contents in the
  wrong field (INVALID_ARGUMENT), a message over the server's body limit
  (RESOURCE_EXHAUSTED, with ``--max-body-bytes``).

One line per check; exit 0 when all passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import queue
import sys
import traceback

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

ORT_TYPES = {
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(int32)": ("INT32", np.int32),
}


class CheckFailed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def status_of(call):
    """The gRPC status name an erroring call raised, or None if it succeeded."""
    try:
        call()
    except InferenceServerException as e:
        return str(e.status()).replace("StatusCode.", "")
    except grpc.RpcError as e:
        return e.code().name
    return None


class Case:
    def __init__(self, text, version, atol, max_body):
        head, self.onnx, self.npz = text.split("=")
        self.name, self.url = head.split("@")
        self.version = version
        self.atol = atol
        self.max_body = max_body
        self.session = ort.InferenceSession(self.onnx, providers=["CPUExecutionProvider"])
        self.inp = self.session.get_inputs()[0]
        self.dtype = ORT_TYPES[self.inp.type][1]
        self.x = np.load(self.npz)["x"].astype(self.dtype)
        self.client = grpcclient.InferenceServerClient(self.url)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(self.url))

    def reference(self, rows):
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, {self.inp.name: rows})))

    def compare(self, got, want, what):
        for name, ref in want.items():
            out = got(name)
            expect(out is not None, f"{what}: output {name} missing")
            expect(out.shape == ref.shape, f"{what}: {name} shape {out.shape} != {ref.shape}")
            if np.issubdtype(ref.dtype, np.floating):
                err = float(np.max(np.abs(out.astype(np.float64) - ref))) if ref.size else 0.0
                expect(err <= self.atol, f"{what}: {name} differs by {err} > {self.atol}")
            else:
                expect(np.array_equal(out, ref), f"{what}: {name} {out[:4]} != {ref[:4]}")

    def infer_raw(self, rows, **kw):
        i = grpcclient.InferInput(self.inp.name, list(rows.shape), ORT_TYPES[self.inp.type][0])
        i.set_data_from_numpy(rows)
        return self.client.infer(self.name, [i], model_version=self.version, **kw)

    def checks(self):
        yield "server live", lambda: expect(self.client.is_server_live(), "not live")
        yield "server ready", lambda: expect(self.client.is_server_ready(), "not ready")

        def server_metadata():
            m = self.client.get_server_metadata()
            expect(m.name == "tractor", f"name {m.name}")
            expect("binary_tensor_data" in m.extensions, f"extensions {m.extensions}")

        yield "server metadata", server_metadata

        def ready():
            expect(self.client.is_model_ready(self.name), "model not ready")
            expect(self.client.is_model_ready(self.name, self.version), "version not ready")

        yield "model ready", ready

        def metadata():
            m = self.client.get_model_metadata(self.name, self.version)
            expect(m.name == self.name, f"name {m.name}")
            expect(list(m.versions) == [self.version], f"versions {m.versions}")
            ins = [(t.name, t.datatype, len(t.shape)) for t in m.inputs]
            want = [(i.name, ORT_TYPES[i.type][0], len(i.shape)) for i in self.session.get_inputs()]
            expect(ins == want, f"inputs {ins} != {want}")
            outs = sorted(t.name for t in m.outputs)
            expect(outs == sorted(o.name for o in self.session.get_outputs()), f"outputs {outs}")

        yield "model metadata", metadata

        def config():
            c = self.client.get_model_config(self.name, self.version).config
            expect(c.name == self.name, f"config name {c.name}")
            expect(c.max_batch_size > 0, f"max_batch_size {c.max_batch_size}")
            expect([i.name for i in c.input] == [self.inp.name], f"inputs {c.input}")

        yield "model config", config

        def raw_batch():
            rows = self.x[:8]
            r = self.infer_raw(rows, request_id="req-8", parameters={"tag": "a"})
            resp = r.get_response()
            expect(resp.model_name == self.name, f"model_name {resp.model_name}")
            expect(resp.model_version == self.version, f"model_version {resp.model_version}")
            expect(resp.id == "req-8", f"id {resp.id!r}")
            expect(resp.parameters["tag"].string_param == "a", f"parameters {resp.parameters}")
            self.compare(r.as_numpy, self.reference(rows), "raw batch of 8")

        yield "infer raw, batch of 8", raw_batch

        def raw_one():
            rows = self.x[:1]
            self.compare(self.infer_raw(rows).as_numpy, self.reference(rows), "raw one row")

        yield "infer raw, one row", raw_one

        def typed():
            rows = self.x[3:7]
            req = service_pb2.ModelInferRequest(model_name=self.name, model_version=self.version, id="t")
            t = req.inputs.add(name=self.inp.name, datatype="FP32", shape=list(rows.shape))
            t.contents.fp32_contents.extend(rows.ravel().tolist())
            resp = self.stub.ModelInfer(req)
            expect(resp.id == "t", f"id {resp.id!r}")
            by_name = {}
            for out, raw in zip(resp.outputs, resp.raw_output_contents):
                dtype = {"FP32": np.float32, "INT64": np.int64, "FP64": np.float64}[out.datatype]
                by_name[out.name] = np.frombuffer(raw, dtype=dtype).reshape(list(out.shape))
            self.compare(by_name.get, self.reference(rows), "typed contents")

        yield "infer typed contents", typed

        def overlapping():
            done = queue.Queue()
            sent = []
            for k in range(32):
                n = 1 + k % 5
                start = (7 * k) % (len(self.x) - n)
                rows = self.x[start : start + n]
                i = grpcclient.InferInput(self.inp.name, list(rows.shape), "FP32")
                i.set_data_from_numpy(rows)
                sent.append(rows)
                self.client.async_infer(
                    self.name, [i], lambda result, error, k=k: done.put((k, result, error)),
                    model_version=self.version,
                )
            for _ in range(32):
                k, result, error = done.get(timeout=60)
                expect(error is None, f"request {k}: {error}")
                self.compare(result.as_numpy, self.reference(sent[k]), f"overlapping request {k}")

        yield "32 overlapping async requests", overlapping

        def errors():
            rows = self.x[:2]
            i = grpcclient.InferInput(self.inp.name, list(rows.shape), "FP32")
            i.set_data_from_numpy(rows)
            got = status_of(lambda: self.client.infer("no-such-model", [i]))
            expect(got == "NOT_FOUND", f"unknown model: {got}")
            got = status_of(lambda: self.client.is_model_ready(self.name, "999"))
            expect(got == "NOT_FOUND", f"unknown version: {got}")
            bad = np.zeros((2, 3) + tuple(rows.shape[2:]), dtype=np.float32)
            b = grpcclient.InferInput(self.inp.name, list(bad.shape), "FP32")
            b.set_data_from_numpy(bad)
            got = status_of(lambda: self.client.infer(self.name, [b]))
            expect(got == "INVALID_ARGUMENT", f"wrong shape: {got}")
            d = grpcclient.InferInput(self.inp.name, list(rows.shape), "FP64")
            d.set_data_from_numpy(rows.astype(np.float64))
            got = status_of(lambda: self.client.infer(self.name, [d]))
            expect(got == "INVALID_ARGUMENT", f"bad datatype: {got}")
            req = service_pb2.ModelInferRequest(model_name=self.name)
            req.inputs.add(name=self.inp.name, datatype="FP32", shape=list(rows.shape))
            req.raw_input_contents.append(rows.tobytes()[:-4])
            got = status_of(lambda: self.stub.ModelInfer(req))
            expect(got == "INVALID_ARGUMENT", f"short raw buffer: {got}")
            req = service_pb2.ModelInferRequest(model_name=self.name)
            t = req.inputs.add(name=self.inp.name, datatype="FP32", shape=list(rows.shape))
            t.contents.int64_contents.extend([1] * rows.size)
            got = status_of(lambda: self.stub.ModelInfer(req))
            expect(got == "INVALID_ARGUMENT", f"contents in the wrong field: {got}")
            if self.max_body:
                req = service_pb2.ModelInferRequest(model_name=self.name)
                req.inputs.add(name=self.inp.name, datatype="FP32", shape=[1])
                req.raw_input_contents.append(b"\0" * (self.max_body + 1024))
                got = status_of(lambda: self.stub.ModelInfer(req))
                expect(got == "RESOURCE_EXHAUSTED", f"over the body limit: {got}")

        yield "errors and their status codes", errors


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", action="append", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--max-body-bytes", type=int, default=0)
    args = parser.parse_args()
    failed = 0
    for text in args.case:
        case = Case(text, args.version, args.atol, args.max_body_bytes)
        for title, check in case.checks():
            try:
                check()
                print(f"ok   {case.name}@{case.url}: {title}")
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failed += 1
                detail = str(e) if isinstance(e, CheckFailed) else traceback.format_exc()
                print(f"FAIL {case.name}@{case.url}: {title}: {detail}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
