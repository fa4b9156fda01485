#!/usr/bin/env python3
"""Cross-check a tractor server serving a BERT-style encoder with Triton's
HTTP or gRPC client (``--protocol``) and ONNX Runtime.

The server at ``--url`` serves ``--onnx`` (inputs ``input_ids``,
``attention_mask``, ``token_type_ids``: INT64 [batch, seq]) as ``--model``.
Sentences come from ``--data`` (an npz with those three arrays, zero-padded
to one length). Every answer is held against ONNX Runtime on the very same
inputs, within ``--atol``. Over gRPC (``--url`` the gRPC port) the JSON and
binary cases are the same request (gRPC has one encoding):

* metadata: every input [-1, -1] (batch and sequence variable);
* sentences of several lengths, one per request, unpadded (cut to their own
  length) and padded (the file's length, mask 0 on the padding), JSON and
  binary;
* all of them padded in one request of many rows;
* with ``--batched yes``, the unpadded ones sent at once, so the server's
  batcher may pad them into shared batches: each must still get its own
  answer;
* a sequence over the server's ``--max-sequence`` (default 512) is a 400
  (INVALID_ARGUMENT over gRPC) naming the limit.

One line per check; exit 0 when all pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import queue
import sys

import numpy as np
import onnxruntime as ort
from tritonclient.utils import InferenceServerException

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--batched", choices=["yes", "no"], default="yes")
    parser.add_argument("--max-sequence", type=int, default=512)
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    args = parser.parse_args()
    grpc = args.protocol == "grpc"
    if grpc:
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module

    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    client = (
        client_module.InferenceServerClient(args.url)
        if grpc
        else client_module.InferenceServerClient(args.url, concurrency=16)
    )
    data = np.load(args.data)
    ids, mask, types = (data[n] for n in NAMES)
    lengths = mask.sum(axis=1)
    # The first sentence of each length, so every request has its own plan.
    picked = [int(np.flatnonzero(lengths == n)[0]) for n in sorted(set(lengths.tolist()))]
    failures = []

    def check(label: str, ok: bool, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}")
        if not ok:
            failures.append(label)

    def arrays(i: int, length: int) -> list[np.ndarray]:
        return [a[i : i + 1, :length].astype(np.int64) for a in (ids, mask, types)]

    def ort_logits(inputs: list[np.ndarray]) -> np.ndarray:
        return session.run(["logits"], dict(zip(NAMES, inputs)))[0]

    def request(inputs: list[np.ndarray], binary: bool) -> list:
        out = []
        for name, array in zip(NAMES, inputs):
            tensor = client_module.InferInput(name, list(array.shape), "INT64")
            if grpc:
                tensor.set_data_from_numpy(array)
            else:
                tensor.set_data_from_numpy(array, binary_data=binary)
            out.append(tensor)
        return out

    def outputs(binary: bool) -> list:
        if grpc:
            return [client_module.InferRequestedOutput("logits")]
        return [client_module.InferRequestedOutput("logits", binary_data=binary)]

    def compare(label: str, inputs: list[np.ndarray], result) -> None:
        got = result.as_numpy("logits")
        want = ort_logits(inputs)
        if got is None or got.shape != want.shape:
            check(label, False, f"shape {None if got is None else got.shape} vs {want.shape}")
            return
        diff = float(np.max(np.abs(got - want)))
        check(label, diff <= args.atol, f"max |tractor - ORT| {diff:.2e}")

    meta = client.get_model_metadata(args.model)
    tensors = meta.inputs if grpc else meta["inputs"]
    shapes = [list(map(int, t.shape if grpc else t["shape"])) for t in tensors]
    check("metadata: inputs [-1, -1]", shapes == [[-1, -1]] * 3, str(shapes))

    padded_len = ids.shape[1]
    for i in picked:
        own = int(lengths[i])
        for binary in (False, True):
            kind = "binary" if binary else "JSON"
            unpadded = arrays(i, own)
            result = client.infer(args.model, request(unpadded, binary), outputs=outputs(binary))
            compare(f"sentence {i}, length {own}, unpadded, {kind}", unpadded, result)
            padded = arrays(i, padded_len)
            result = client.infer(args.model, request(padded, binary), outputs=outputs(binary))
            compare(f"sentence {i}, length {own}, padded to {padded_len}, {kind}", padded, result)

    rows = [np.concatenate([arrays(i, padded_len)[k] for i in picked]) for k in range(3)]
    result = client.infer(args.model, request(rows, True), outputs=outputs(True))
    compare(f"{len(picked)} padded sentences in one request", rows, result)

    if args.batched == "yes":
        cases = [arrays(i, int(lengths[i])) for i in picked] * 2
        if grpc:
            done = queue.Queue()
            for k, c in enumerate(cases):
                client.async_infer(
                    args.model,
                    request(c, True),
                    lambda result, error, k=k: done.put((k, result, error)),
                    outputs=outputs(True),
                )
            answers = {}
            for _ in cases:
                k, result, error = done.get(timeout=60)
                if error is not None:
                    raise error
                answers[k] = result
            results = [answers[k] for k in range(len(cases))]
        else:
            pending = [
                client.async_infer(args.model, request(c, True), outputs=outputs(True))
                for c in cases
            ]
            results = [handle.get_result() for handle in pending]
        worst = 0.0
        for case, result in zip(cases, results):
            got = result.as_numpy("logits")
            worst = max(worst, float(np.max(np.abs(got - ort_logits(case)))))
        check(
            f"{len(cases)} overlapping unpadded requests of {len(picked)} lengths",
            worst <= args.atol,
            f"max |tractor - ORT| {worst:.2e}",
        )

    too_long = [np.ones((1, args.max_sequence + 1), dtype=np.int64) for _ in NAMES]
    try:
        client.infer(args.model, request(too_long, True))
        check(f"length {args.max_sequence + 1} refused", False, "it was answered")
    except InferenceServerException as e:
        said = f"{e.status()} {e.message()}"
        refused = "INVALID_ARGUMENT" if grpc else "400"
        check(
            f"length {args.max_sequence + 1} refused with {refused}",
            refused in str(e.status()) and "--max-sequence" in e.message(),
            said,
        )

    client.close()
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
