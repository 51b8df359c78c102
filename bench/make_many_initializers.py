#!/usr/bin/env python3
"""Generates the many-initializers benchmark model for `make bench`, once, and
caches it (issue 13: reading a model of 1,000,000 tiny initializers must peak
at most 10x its file size in RSS).

The model: a graph input `input` [4] (float), then a chain of Sum nodes, each
reading the previous result and the next --fan-in initializers; --count tiny
float32 initializers in all, alternately of dims [1] and [4] (one or four
elements, in raw_data), every one of them read once. Per-tensor overhead —
the IR's Tensor, the decoder's buffers, the index entries of every name —
is then almost all of the cost: the payloads are a few bytes each.

The file is <out-dir>/many-initializers-<count>-<hash>.onnx (the hash covers
the parameters and this script); an existing one is reused. The path is
printed on stdout.
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


def build(params):
    rng = np.random.default_rng(params["seed"])
    count, fan_in = params["count"], params["fan_in"]
    model, graph = benchcache.new_model("many_initializers", IR_VERSION, OPSET)
    values = rng.normal(0.0, 1.0, (count, 4)).astype(np.float32)
    x = "input"
    for start in range(0, count, fan_in):
        names = []
        for i in range(start, min(start + fan_in, count)):
            name = f"t{i}"
            # add_tensor's numpy round trip per tensor is most of the time at
            # this count; the fields are set directly instead.
            t = graph.initializer.add()
            t.name = name
            t.data_type = TensorProto.FLOAT
            n = 1 if i % 2 == 0 else 4
            t.dims.append(n)
            t.raw_data = values[i, :n].tobytes()
            names.append(name)
        y = f"s{start // fan_in}"
        graph.node.append(helper.make_node("Sum", [x] + names, [y], name=y))
        x = y
    graph.node.append(helper.make_node("Identity", [x], ["output"], name="out"))
    graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [4]))
    graph.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, [4]))
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--count", type=int, default=1_000_000, help="number of initializers (default 1,000,000)")
    ap.add_argument("--fan-in", type=int, default=1000, help="initializers read by each Sum node (default 1,000)")
    ap.add_argument("--seed", type=int, default=20261203)
    args = ap.parse_args()
    if args.count < 1 or args.fan_in < 1:
        ap.error("--count and --fan-in must be positive")
    params = {"count": args.count, "fan_in": args.fan_in, "seed": args.seed, "opset": OPSET,
              "ir_version": IR_VERSION}
    prefix = f"many-initializers-{args.count}-"
    path, cached = benchcache.cached_model_path(args.out_dir, prefix, benchcache.cache_key(params, __file__))
    if not cached:
        t0 = time.perf_counter()
        benchcache.write_complete(path, build(params).SerializeToString())
        print(f"many-initializers: {path} ({os.path.getsize(path) / 1e6:.1f} MB) generated in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
