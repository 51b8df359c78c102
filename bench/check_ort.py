#!/usr/bin/env python3
"""How users compare two models today, for `make bench`'s runtime section:

    check_ort.py A.onnx B.onnx

Loads both in onnxruntime (default session options, CPU), feeds each graph
input one seeded standard-normal tensor (symbolic dimensions 1; integer
inputs zeros), runs both and compares every output with
np.allclose(rtol=1e-3, atol=1e-5) (the tolerances of PyTorch's ONNX export
tutorial). Prints the largest difference; exit 0 if all close, 1 if not.
"""
import sys

import numpy as np
import onnxruntime as ort

TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
         "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def main():
    a_path, b_path = sys.argv[1], sys.argv[2]
    a = ort.InferenceSession(a_path, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(b_path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in a.get_inputs():
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in i.shape]
        dtype = TYPES.get(i.type, np.float32)
        feeds[i.name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                         else np.zeros(shape, dtype))
    ya, yb = a.run(None, feeds), b.run(None, feeds)
    ok = True
    for out, u, v in zip(a.get_outputs(), ya, yb):
        close = u.shape == v.shape and np.allclose(u, v, rtol=1e-3, atol=1e-5)
        diff = float(np.max(np.abs(u.astype(np.float64) - v.astype(np.float64)))) if u.shape == v.shape else float("inf")
        print(f"{out.name}: {'close' if close else 'DIFFERENT'} (max |A-B| {diff:.3g})")
        ok = ok and close
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
