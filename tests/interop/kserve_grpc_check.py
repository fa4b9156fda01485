#!/usr/bin/env python3
"""Cross-check tractor's gRPC API with KServe's ``InferenceGRPCClient`` and ONNX Runtime.

``--case NAME@HOST:PORT=ONNX_PATH=NPZ_PATH`` as in triton_grpc_check.py:
server and model readiness, inference with raw and typed contents on rows of
the npz array ``x`` held against ONNX Runtime (``--atol`` for floats,
integers identical), the request id echoed, and an unknown model answered
NOT_FOUND. One line per check; exit 0 when all passed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
import numpy as np
import onnxruntime as ort
from kserve import InferenceGRPCClient, InferInput, InferRequest


async def check(text, atol):
    head, onnx, npz = text.split("=")
    name, url = head.split("@")
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.load(npz)["x"].astype(np.float32)[:5]
    want = dict(zip([o.name for o in session.get_outputs()],
                    session.run(None, {inp.name: x})))
    client = InferenceGRPCClient(url)
    failures = []

    def report(title, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} kserve {name}@{url}: {title} {detail}".rstrip())
        if not ok:
            failures.append(title)

    report("server live", await client.is_server_live())
    report("server ready", await client.is_server_ready())
    report("model ready", await client.is_model_ready(name))
    for raw in (True, False):
        i = InferInput(inp.name, list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=raw)
        answer = await client.infer(InferRequest(model_name=name, infer_inputs=[i], request_id="k1"))
        got = {o.name: o.as_numpy() for o in answer.outputs}
        ok = answer.id == "k1" and set(got) == set(want)
        for k, ref in want.items():
            out = got.get(k)
            if out is None or out.shape != ref.shape:
                ok = False
            elif np.issubdtype(ref.dtype, np.floating):
                ok = ok and float(np.max(np.abs(out - ref))) <= atol
            else:
                ok = ok and np.array_equal(out, ref)
        report(f"infer {'raw' if raw else 'typed'} contents vs ONNX Runtime", ok)
    try:
        i = InferInput(inp.name, list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        await client.infer(InferRequest(model_name="no-such-model", infer_inputs=[i]))
        report("unknown model is NOT_FOUND", False, "(it answered)")
    except grpc.aio.AioRpcError as e:
        report("unknown model is NOT_FOUND", e.code() == grpc.StatusCode.NOT_FOUND, str(e.code()))
    await client.close()
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", action="append", required=True)
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args()
    failures = []
    for case in args.case:
        failures += asyncio.run(check(case, args.atol))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
