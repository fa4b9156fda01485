"""What ONNX Runtime's u8 x s8 integer product computes on an x86 processor
without VNNI, emulated in NumPy, against the exact product: the evidence for
issue 17's int8 disagreement, on any host.

MLAS (ONNX Runtime's kernels) multiplies uint8 activations by int8 weights
with AVX2 `vpmaddubsw` where the processor has no VNNI: each pair of
neighbouring products along K is added into an int16 with saturation, then
the pairs are summed in int32. With VNNI (`vpdpbusd`) the sums are exact.

usage: saturation.py MODEL.onnx DATA.npz ROWS
Runs the `DynamicQuantizeLinear` + `MatMulInteger` MLP that `tractor optimize
--quantize dynamic-int8` writes for an MLP (ops: DynamicQuantizeLinear,
MatMulInteger, Cast, Mul, Add, Relu, Identity), both ways, and
prints one JSON line: the largest |output| and the largest difference
between the saturating and the exact product, and how many pair sums
saturated. Needs the `onnx` package (to read the initializers).
"""
import json
import sys

import numpy as np


def load(path):
    try:
        import onnx  # type: ignore
        from onnx import numpy_helper  # type: ignore
    except ImportError:
        sys.exit("this script needs the onnx package: pip install onnx")
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return m.graph, inits


def pair_saturated(a_u8, b_s8):
    """a [M, K] uint8, b [K, N] int8 -> int32 [M, N], pairs along K added in
    saturating int16, as vpmaddubsw does. Returns the product and the number
    of pair sums that saturated."""
    a = a_u8.astype(np.int32)
    b = b_s8.astype(np.int32)
    k = a.shape[1]
    if k % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        b = np.pad(b, ((0, 1), (0, 0)))
    pairs = a[:, 0::2, None] * b[None, 0::2, :] + a[:, 1::2, None] * b[None, 1::2, :]
    clipped = np.clip(pairs, -32768, 32767)
    return clipped.sum(axis=1), int((clipped != pairs).sum())


def run(graph, inits, x, saturate):
    values = dict(inits)
    values[graph.input[0].name] = x
    saturated = 0
    for n in graph.node:
        i = [values[name] if name else None for name in n.input]
        op = n.op_type
        if op == "DynamicQuantizeLinear":
            v = i[0]
            lo, hi = min(0.0, float(v.min())), max(0.0, float(v.max()))
            scale = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
            zp = np.uint8(np.clip(np.rint(-lo / scale), 0, 255))
            q = np.clip(np.rint(v / scale) + zp, 0, 255).astype(np.uint8)
            out = [q, scale, zp]
        elif op == "MatMulInteger":
            a, b, az, bz = i
            if saturate:
                raw, count = pair_saturated(a, b)
                saturated += count
            else:
                raw = a.astype(np.int32) @ b.astype(np.int32)
            # Zero points corrected outside the product, as MLAS does.
            bz = np.int32(0) if bz is None else bz.astype(np.int32)
            az = az.astype(np.int32)
            colsum = b.astype(np.int32).sum(axis=0)
            rowsum = a.astype(np.int32).sum(axis=1, keepdims=True)
            out = [raw - az * colsum - bz * rowsum + a.shape[1] * az * bz]
        elif op == "Cast":
            out = [i[0].astype(np.float32)]
        elif op == "Mul":
            out = [(i[0] * i[1]).astype(np.float32)]
        elif op == "Add":
            out = [(i[0] + i[1]).astype(np.float32)]
        elif op == "Relu":
            out = [np.maximum(i[0], 0)]
        elif op == "Identity":
            out = [i[0]]
        else:
            sys.exit(f"op {op} is not emulated here")
        for name, v in zip(n.output, out):
            values[name] = v
    return values[graph.output[0].name], saturated


model, data, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
graph, inits = load(model)
x = np.load(data)["x"][:rows].astype(np.float32)
exact, _ = run(graph, inits, x, saturate=False)
avx2, saturated = run(graph, inits, x, saturate=True)
print(
    json.dumps(
        {
            "model": model,
            "scale": float(np.abs(exact).max()),
            "max_abs_diff_avx2_vs_exact": float(np.abs(avx2 - exact).max()),
            "saturated_pair_sums": saturated,
            "argmax_agreement": float((avx2.argmax(1) == exact.argmax(1)).mean()),
        }
    )
)
