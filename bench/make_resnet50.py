#!/usr/bin/env python3
"""Generates the ResNet-50-shaped model for `make bench`'s runtime section, once, and caches it.

The model has torchvision's ResNet-50 layout (v1.5: the stride is on the 3x3
conv of a bottleneck): a 7x7/2 stem Conv -> BatchNormalization -> Relu and a
3x3/2 MaxPool, then bottleneck blocks [3, 4, 6, 3] of widths 64, 128, 256,
512 (outputs 4x wider: 256 .. 2048), each Conv 1x1 -> BN -> Relu -> Conv 3x3
-> BN -> Relu -> Conv 1x1 -> BN, plus a 1x1 Conv -> BN projection on the first
block of every stage, added and Relu'd; then GlobalAveragePool, Flatten and a
Gemm to 1000 classes. 53 Conv (no bias, as in torchvision) + 53 BN, ~25.6 M
parameters, ~102 MB, about 4.1 GFLOP (multiply-adds) per 1x3x224x224 image.

Weights are random (He-normal, fan_out), every BN has its own random scale,
shift, running mean and positive running variance, so no fold is an identity.
The last BN of each residual branch gets a smaller scale (0.1 .. 0.4) so that
activations stay in a moderate range through the 16 residual additions.

Written as <out-dir>/bench-resnet50-<hash>.onnx, <hash> covering the
parameters and this script's text (bench/benchcache.py); an existing file is
reused, stale ones are removed. The path is printed on stdout.
"""

import argparse
import os
import sys
import time

import numpy as np
import benchcache
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8
PREFIX = "bench-resnet50-"
STAGES = [(64, 3), (128, 4), (256, 6), (512, 3)]  # (bottleneck width, blocks)
EXPANSION = 4


def parameters(args):
    return {"layout": "resnet50-v1.5-bn", "image": args.image, "batch": args.batch, "seed": args.seed,
            "classes": 1000, "opset": OPSET, "ir_version": IR_VERSION}


class Builder:
    def __init__(self, graph, rng):
        self.graph, self.rng, self.nodes = graph, rng, []
        self.convs = 0

    def tensor(self, name, array):
        benchcache.add_tensor(self.graph, name, array)

    def conv_bn(self, x, prefix, c_in, c_out, k, stride, relu, gamma=(0.5, 1.5)):
        """Conv(k x k, no bias) -> BatchNormalization [-> Relu]; returns the output name."""
        rng = self.rng
        self.convs += 1
        w = rng.standard_normal((c_out, c_in, k, k), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / (c_out * k * k)))
        self.tensor(prefix + ".conv.weight", w)
        b = prefix + ".bn"
        self.tensor(b + ".weight", rng.uniform(*gamma, c_out))
        self.tensor(b + ".bias", rng.normal(0.0, 0.1, c_out))
        self.tensor(b + ".running_mean", rng.normal(0.0, 0.2, c_out))
        self.tensor(b + ".running_var", rng.uniform(0.5, 2.0, c_out))
        conv_out, bn_out = prefix + "/conv", prefix + "/bn"
        self.nodes.append(helper.make_node("Conv", [x, prefix + ".conv.weight"], [conv_out], name=conv_out,
                                           kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride]))
        self.nodes.append(helper.make_node("BatchNormalization",
                                           [conv_out, b + ".weight", b + ".bias", b + ".running_mean", b + ".running_var"],
                                           [bn_out], name=bn_out, epsilon=1e-5))
        if not relu:
            return bn_out
        self.nodes.append(helper.make_node("Relu", [bn_out], [prefix + "/relu"], name=prefix + "/relu"))
        return prefix + "/relu"

    def bottleneck(self, x, prefix, c_in, width, stride):
        c_out = width * EXPANSION
        y = self.conv_bn(x, prefix + ".1", c_in, width, 1, 1, True)
        y = self.conv_bn(y, prefix + ".2", width, width, 3, stride, True)
        y = self.conv_bn(y, prefix + ".3", width, c_out, 1, 1, False, gamma=(0.1, 0.4))
        shortcut = x
        if stride != 1 or c_in != c_out:
            shortcut = self.conv_bn(x, prefix + ".downsample", c_in, c_out, 1, stride, False)
        self.nodes.append(helper.make_node("Add", [y, shortcut], [prefix + "/add"], name=prefix + "/add"))
        self.nodes.append(helper.make_node("Relu", [prefix + "/add"], [prefix + "/out"], name=prefix + "/out"))
        return prefix + "/out", c_out


def build(params):
    rng = np.random.default_rng(params["seed"])
    model, graph = benchcache.new_model("bench_resnet50", IR_VERSION, OPSET)
    b = Builder(graph, rng)

    x = b.conv_bn("input", "stem", 3, 64, 7, 2, True)
    b.nodes.append(helper.make_node("MaxPool", [x], ["stem/pool"], name="stem/pool",
                                    kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]))
    x, c = "stem/pool", 64
    for s, (width, blocks) in enumerate(STAGES):
        for i in range(blocks):
            stride = 2 if (i == 0 and s > 0) else 1
            x, c = b.bottleneck(x, f"layer{s + 1}.{i}", c, width, stride)
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    b.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    classes = params["classes"]
    fc = rng.standard_normal((classes, c), dtype=np.float32) * np.float32(np.sqrt(1.0 / c))
    b.tensor("fc.weight", fc)
    b.tensor("fc.bias", rng.normal(0.0, 0.01, classes))
    b.nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["output"], name="fc", transB=1))
    graph.node.extend(b.nodes)

    n, s = params["batch"], params["image"]
    graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, 3, s, s]))
    graph.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, [n, classes]))
    return model, b.convs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--image", type=int, default=224, help="input height/width (default 224)")
    ap.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    ap.add_argument("--seed", type=int, default=20240611)
    args = ap.parse_args()

    params = parameters(args)
    key = benchcache.cache_key(params, __file__)
    path, cached = benchcache.cached_model_path(args.out_dir, PREFIX, key)
    if cached:
        print(f"model: cached {path}", file=sys.stderr)
        print(path)
        return

    print(f"model: generating {path} (ResNet-50 shape, batch {args.batch}, {args.image}x{args.image}) ...",
          file=sys.stderr)
    t0 = time.perf_counter()
    model, convs = build(params)
    onnx.checker.check_model(model)
    benchcache.write_complete(path, model.SerializeToString())
    print(f"model: {convs} Conv+BatchNormalization pairs, {os.path.getsize(path) / 1e6:.0f} MB, "
          f"generated in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
