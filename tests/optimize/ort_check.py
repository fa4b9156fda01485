"""Runs a model `tractor optimize` wrote in ONNX Runtime and compares its
first output with tract's, written by tests/optimize_interop.rs.

usage: ort_check.py MODEL DATA.npz TRACT_OUTPUT.f32 ROWS REL_TOLERANCE
Prints one JSON line; exits 1 on a mismatch.
"""
import json
import sys

import numpy as np
import onnxruntime as ort

model, data, tract_path, rows, tolerance = sys.argv[1:6]
rows, tolerance = int(rows), float(tolerance)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
x = np.load(data)["x"][:rows].astype(np.float32)
name = session.get_inputs()[0].name
ours = session.run(None, {name: x})
first = next(o for o in ours if o.dtype == np.float32)
tract = np.fromfile(tract_path, dtype="<f4").reshape(first.shape)
scale = float(np.abs(first).max()) or 1.0
diff = float(np.abs(first - tract).max())
agree = float((first.reshape(rows, -1).argmax(1) == tract.reshape(rows, -1).argmax(1)).mean())
ok = diff <= tolerance * scale
print(json.dumps({"model": model, "max_abs_diff": diff, "scale": scale, "argmax_agreement": agree, "ok": ok}))
sys.exit(0 if ok else 1)
