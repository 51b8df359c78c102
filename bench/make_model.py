#!/usr/bin/env python3
"""Generates the benchmark model for `make bench`, once, and caches it.

The model is a VGG-11-BN-shaped stack of Conv(3x3, bias) -> BatchNormalization
-> Relu blocks with MaxPool between stages, ending in GlobalAveragePool. The
channel widths are VGG-11's multiplied by --width (4 by default), which puts
about 590 MB of float32 weights in the Conv layers; the classifier is left
out so that nearly all of the file is Conv+BN data that bnfold has to fold.

Values look like a trained network's rather than constants: Conv weights are
He-normal, Conv biases small, and every BN has its own random scale, shift,
running mean and (positive) running variance, so no fold is an identity.

The file is written as <out-dir>/bench-model-<hash>.onnx where <hash> covers
the parameters and this script's text; an existing file with the same hash is
reused, stale ones (other hashes) are removed. The path is printed on stdout.
"""

import argparse
import os
import sys
import time

import numpy as np
import benchcache
import onnx
from onnx import TensorProto, helper

# VGG-11 ("configuration A"): numbers are 3x3 conv output channels, "M" a 2x2 max pool.
VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]

OPSET = 17
IR_VERSION = 8
PREFIX = "bench-model-"


def parameters(args):
    return {
        "layout": "vgg11-bn",
        "width": args.width,
        "image": args.image,
        "seed": args.seed,
        "opset": OPSET,
        "ir_version": IR_VERSION,
    }


def cache_key(params):
    return benchcache.cache_key(params, __file__)


def conv_layers(width):
    """(in_channels, out_channels) of each conv, and where the pools are."""
    layers, c_in = [], 3
    for item in VGG11:
        if item == "M":
            layers.append("M")
        else:
            c_out = item * width
            layers.append((c_in, c_out))
            c_in = c_out
    return layers


def weight_bytes(width):
    total = 0
    for layer in conv_layers(width):
        if layer != "M":
            c_in, c_out = layer
            total += 4 * (c_out * c_in * 9 + c_out + 4 * c_out)  # W, bias, BN scale/B/mean/var
    return total


def build(params):
    rng = np.random.default_rng(params["seed"])
    model, graph = benchcache.new_model("bench_vgg11_bn", IR_VERSION, OPSET)

    nodes = []
    x = "input"
    conv_i = pool_i = 0
    for layer in conv_layers(params["width"]):
        if layer == "M":
            pool_i += 1
            y = f"pool{pool_i}"
            nodes.append(helper.make_node("MaxPool", [x], [y], name=y, kernel_shape=[2, 2], strides=[2, 2]))
            x = y
            continue
        conv_i += 1
        c_in, c_out = layer
        p = f"features.conv{conv_i}"
        # He-normal (fan_out, as torchvision initialises VGG), generated in
        # float32 and scaled in place.
        w = rng.standard_normal((c_out, c_in, 3, 3), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / (c_out * 9)))
        benchcache.add_tensor(graph, p + ".weight", w)
        del w
        benchcache.add_tensor(graph, p + ".bias", rng.normal(0.0, 0.02, c_out))
        b = f"features.bn{conv_i}"
        benchcache.add_tensor(graph, b + ".weight", rng.uniform(0.5, 1.5, c_out))
        benchcache.add_tensor(graph, b + ".bias", rng.normal(0.0, 0.2, c_out))
        benchcache.add_tensor(graph, b + ".running_mean", rng.normal(0.0, 0.5, c_out))
        benchcache.add_tensor(graph, b + ".running_var", rng.uniform(0.25, 2.0, c_out))

        x = benchcache.conv_bn_relu(nodes, x, p, b, conv_i)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["output"], name="gap"))
    graph.node.extend(nodes)

    channels = conv_layers(params["width"])[-2][1]
    s = params["image"]
    graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, s, s]))
    graph.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, channels, 1, 1]))
    return model, conv_i


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--width", type=int, default=4, help="multiplier of VGG-11's channel widths (default 4: ~590 MB)")
    ap.add_argument("--image", type=int, default=224, help="declared input height/width (default 224)")
    ap.add_argument("--seed", type=int, default=20240611)
    args = ap.parse_args()

    params = parameters(args)
    key = cache_key(params)
    path, cached = benchcache.cached_model_path(args.out_dir, PREFIX, key)
    if cached:
        print(f"model: cached {path}", file=sys.stderr)
        print(path)
        return

    expected = weight_bytes(args.width)
    print(f"model: generating {path} (VGG-11-BN shape, width x{args.width}, "
          f"{expected / 1e6:.0f} MB of float32 weights) ...", file=sys.stderr)
    t0 = time.perf_counter()
    model, convs = build(params)
    data = model.SerializeToString()
    del model
    benchcache.write_complete(path, data)
    del data
    print(f"model: {convs} Conv+BatchNormalization blocks, {os.path.getsize(path) / 1e6:.0f} MB, "
          f"generated in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
