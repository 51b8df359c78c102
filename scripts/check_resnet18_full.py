"""Full-width torchvision ResNet-18 check (manual; needs torch and torchvision).

The bundled fixture Fixtures/torch_resnet18.onnx is the ResNet-18 topology at
width/4 to keep the repository small. This script exports the real thing
(random weights, random non-trivial BN statistics), folds it with bnfold,
and compares onnxruntime's outputs with all graph optimizations disabled (so
that onnxruntime's own Conv+BN fusion cannot hide a wrong fold).

    python scripts/check_resnet18_full.py .build/release/bnfold

Needs: torch, torchvision, onnx, onnxruntime, numpy (any recent versions).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision


def main() -> int:
    bnfold = sys.argv[1] if len(sys.argv) > 1 else ".build/release/bnfold"
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
    x = torch.randn(1, 3, 224, 224)
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "resnet18.onnx"), os.path.join(d, "fused.onnx")
        torch.onnx.export(model, (x,), src, dynamo=False, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.PRESERVE, opset_version=17)
        found = sum(n.op_type == "BatchNormalization" for n in onnx.load(src).graph.node)
        run = subprocess.run([bnfold, src, "-o", dst], capture_output=True, text=True)
        print(run.stdout, run.stderr, end="")
        if run.returncode != 0:
            return 1
        fused = onnx.load(dst)
        onnx.checker.check_model(fused)
        left = sum(n.op_type == "BatchNormalization" for n in fused.graph.node)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        outputs = []
        for path in (src, dst):
            session = ort.InferenceSession(path, options)
            outputs.append(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].astype(np.float64))
        diff = float(np.max(np.abs(outputs[0] - outputs[1])))
        scale = float(np.max(np.abs(outputs[0])))
        ok = found == 20 and left == 0 and diff <= 1e-5 * scale
        print(f"BN found {found}, left {left}; max |a-b| {diff:.3g}, max |a| {scale:.3g}, "
              f"relative {diff / scale:.3g} (bound 1e-5): {'ok' if ok else 'FAILED'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
