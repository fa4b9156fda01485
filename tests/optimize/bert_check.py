"""Top-1 of a transformer and of its quantized form in ONNX Runtime, on the
same test set; written for tests/optimize_interop.rs.

usage: bert_check.py FP32.onnx QUANTIZED.onnx DATA.npz MAX_DROP_POINTS
DATA holds input_ids, attention_mask, token_type_ids (i64 [n, seq]) and y.
Prints one JSON line; exits 1 when the quantized model loses more than
MAX_DROP_POINTS of top-1 (percentage points) or does not load.
"""
import json
import sys

import numpy as np
import onnxruntime as ort

fp32, quantized, data, max_drop = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
d = np.load(data)
feeds = {k: d[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
y = d["y"]


def run(path):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})[0]


a, b = run(fp32), run(quantized)
top1 = lambda logits: float((logits.argmax(1) == y).mean() * 100)
result = {
    "fp32_top1": top1(a),
    "quantized_top1": top1(b),
    "max_abs_logit_diff": float(np.abs(a - b).max()),
    "logit_scale": float(np.abs(a).max()),
    "argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
}
result["ok"] = result["fp32_top1"] - result["quantized_top1"] <= max_drop
print(json.dumps(result))
sys.exit(0 if result["ok"] else 1)
