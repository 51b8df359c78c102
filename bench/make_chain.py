#!/usr/bin/env python3
"""Generates the graph-core benchmark models for `make bench`, once, and
caches them (issue 13: the cost of the passes in the graph's size).

--kind conv-bn: a chain of --blocks Conv(1x1, bias) -> BatchNormalization ->
  Relu blocks on a [1, C, 2, 2] input. Every weight is close to the identity
  and every BN close to a unit map (but none is one: random scale, shift,
  running mean and variance), so 64,000 blocks neither overflow nor vanish and
  the whole-model verification still compares meaningful numbers.
--kind identity: Conv -> BN, then --blocks Identity nodes, then Conv -> BN.

--unnamed leaves every node without a name (hand-built and converted models
often have none): the report must then name nodes by their position as read.

The file is <out-dir>/chain-<kind>-<blocks>[-unnamed]-<hash>.onnx (the hash
covers the parameters and this script); an existing one is reused. The path
is printed on stdout.
"""

import argparse
import os
import sys
import time

import numpy as np
import benchcache
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8


def add_conv_bn(graph, rng, x, i, c, named, relu):
    """Appends Conv(1x1) -> BN (-> Relu) reading `x`; returns the last output."""
    w = np.eye(c, dtype=np.float32)[:, :, None, None] * rng.uniform(0.98, 1.02, (c, 1, 1, 1))
    w += rng.normal(0.0, 0.002, w.shape)
    p, b = f"conv{i}", f"bn{i}"
    benchcache.add_tensor(graph, p + ".weight", w)
    benchcache.add_tensor(graph, p + ".bias", rng.normal(0.0, 0.002, c))
    benchcache.add_tensor(graph, b + ".weight", rng.uniform(0.98, 1.02, c))
    benchcache.add_tensor(graph, b + ".bias", rng.normal(0.0, 0.005, c))
    benchcache.add_tensor(graph, b + ".running_mean", rng.normal(0.0, 0.005, c))
    benchcache.add_tensor(graph, b + ".running_var", rng.uniform(0.96, 1.04, c))
    name = (lambda n: n) if named else (lambda n: None)
    conv_out, bn_out = f"c{i}", f"b{i}"
    graph.node.append(helper.make_node("Conv", [x, p + ".weight", p + ".bias"], [conv_out], name=name(p),
                                       kernel_shape=[1, 1]))
    graph.node.append(helper.make_node("BatchNormalization",
                                       [conv_out, b + ".weight", b + ".bias", b + ".running_mean", b + ".running_var"],
                                       [bn_out], name=name(b), epsilon=1e-5))
    if not relu:
        return bn_out
    graph.node.append(helper.make_node("Relu", [bn_out], [f"r{i}"], name=name(f"relu{i}")))
    return f"r{i}"


def build(params):
    rng = np.random.default_rng(params["seed"])
    c, named = params["channels"], not params["unnamed"]
    model, graph = benchcache.new_model(f"chain_{params['kind']}", IR_VERSION, OPSET)
    x = "input"
    if params["kind"] == "conv-bn":
        for i in range(params["blocks"]):
            x = add_conv_bn(graph, rng, x, i, c, named, relu=True)
    else:
        x = add_conv_bn(graph, rng, x, 0, c, named, relu=False)
        for i in range(params["blocks"]):
            graph.node.append(helper.make_node("Identity", [x], [f"id{i}"], name=f"id{i}" if named else None))
            x = f"id{i}"
        x = add_conv_bn(graph, rng, x, 1, c, named, relu=False)
    graph.node.append(helper.make_node("Identity", [x], ["output"], name="out" if named else None))
    graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, 2, 2]))
    graph.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, c, 2, 2]))
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--kind", choices=["conv-bn", "identity"], default="conv-bn")
    ap.add_argument("--blocks", type=int, required=True)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--unnamed", action="store_true")
    ap.add_argument("--seed", type=int, default=20261203)
    args = ap.parse_args()
    params = {"kind": args.kind, "blocks": args.blocks, "channels": args.channels, "unnamed": args.unnamed,
              "seed": args.seed, "opset": OPSET, "ir_version": IR_VERSION}
    prefix = f"chain-{args.kind}-{args.blocks}{'-unnamed' if args.unnamed else ''}-"
    path, cached = benchcache.cached_model_path(args.out_dir, prefix, benchcache.cache_key(params, __file__))
    if not cached:
        t0 = time.perf_counter()
        benchcache.write_complete(path, build(params).SerializeToString())
        print(f"chain: {path} ({os.path.getsize(path) / 1e6:.1f} MB) generated in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
