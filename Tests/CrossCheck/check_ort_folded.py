#!/usr/bin/env python3
"""`bnfold check` on a deep network folded by somebody else (part of `make test`):

    check_ort_folded.py --bnfold BIN --scratch DIR

1. A ResNet-50-shaped model (bench/make_resnet50.py: 53 Conv+BN, random
   weights, 1x3x224x224) folded by onnxruntime's own offline optimizer
   (ORT_ENABLE_BASIC, which fuses Conv+BatchNormalization): `bnfold check
   ORIGINAL ORT_FOLDED` must say equivalent (exit 0). The np.allclose-style
   rule users apply fails deep float32 folds like this one from time to time
   (accumulated rounding); the default rule must not.
2. The same model folded here in numpy with epsilon = 0 (the classic
   mistake; every BN of the model has epsilon 1e-5): must say not
   equivalent (exit 1).
3. The same model folded here in numpy correctly (epsilon included, the
   arithmetic in float64, rounded once): must say equivalent (exit 0).

The folded models are independent of bnfold's own fold code. Prints one
PASS/FAIL line per case with the ratio to the bound from --json; exit 1 if
any case failed.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def numpy_fold(model, epsilon_override=None):
    """Folds every BatchNormalization fed only by a bias-free Conv, in float64."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    uses = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    drop = set()
    for bn in [n for n in g.node if n.op_type == "BatchNormalization"]:
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(conv.input) > 2 or uses[bn.input[0]] != 1:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        if epsilon_override is not None:
            eps = epsilon_override
        gamma, beta, mean, var = (numpy_helper.to_array(inits[x]).astype(np.float64) for x in bn.input[1:5])
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        s = gamma / np.sqrt(var + eps)
        w_new = (w * s[:, None, None, None]).astype(np.float32)
        b_new = (beta - mean * s).astype(np.float32)
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(w_new, conv.input[1]))
        bias_name = conv.input[1] + ".folded_bias"
        g.initializer.append(numpy_helper.from_array(b_new, bias_name))
        conv.input.append(bias_name)
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
        for x in bn.input[1:5]:
            if uses[x] == 1:
                g.initializer.remove(inits[x])
    keep = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(keep)
    return model


def check(bnfold, a, b):
    res = subprocess.run([bnfold, "check", "--json", a, b], capture_output=True, text=True)
    try:
        report = json.loads(res.stdout)
        ratio = max(o["ratio"] if isinstance(o["ratio"], (int, float)) else float("inf") for o in report["outputs"])
    except (json.JSONDecodeError, KeyError, ValueError):
        ratio = None
    return res.returncode, ratio, res.stderr.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bnfold", required=True)
    ap.add_argument("--scratch", required=True)
    args = ap.parse_args()
    os.makedirs(args.scratch, exist_ok=True)

    made = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "make_resnet50.py"), "--out-dir", args.scratch],
                          capture_output=True, text=True, check=True)
    original = made.stdout.strip().splitlines()[-1]

    ort_folded = os.path.join(args.scratch, "resnet50-ort-folded.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = ort_folded
    ort.InferenceSession(original, so, providers=["CPUExecutionProvider"])
    left = sum(n.op_type == "BatchNormalization" for n in onnx.load(ort_folded).graph.node)

    no_eps = os.path.join(args.scratch, "resnet50-eps0.onnx")
    onnx.save(numpy_fold(onnx.load(original), epsilon_override=0.0), no_eps)
    right = os.path.join(args.scratch, "resnet50-numpy-folded.onnx")
    onnx.save(numpy_fold(onnx.load(original)), right)

    failed = 0
    cases = [("onnxruntime-folded ResNet-50 (ORT_ENABLE_BASIC)", ort_folded, 0, f"{left} BatchNormalization left"),
             ("numpy-folded ResNet-50, epsilon included", right, 0, ""),
             ("numpy-folded ResNet-50, epsilon = 0", no_eps, 1, "")]
    for label, path, expected, extra in cases:
        rc, ratio, err = check(args.bnfold, original, path)
        detail = f"exit {rc} (expected {expected}), error/bound {ratio if ratio is None else f'{ratio:.3g}'}"
        detail += f"; {extra}" if extra else ""
        if rc == expected and left == 0:
            print(f"PASS ort-folded-check {label}: {detail}")
        else:
            failed += 1
            print(f"FAIL ort-folded-check {label}: {detail}" + (f"; stderr: {err}" if err else ""))
    for p in (ort_folded, no_eps, right):
        os.remove(p)
    print(f"{len(cases) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
