#!/usr/bin/env python3
"""Generates the > 2 GiB external-data model for `make bench`, once, and caches it.

The model is a plain stack of Conv(3x3, C->C, bias) -> BatchNormalization ->
Relu blocks ending in GlobalAveragePool, with C = --channels (1024 by default)
and as many blocks as it takes to pass --gb gigabytes (10^9 bytes) of float32
weights: 59 blocks, 2.23 GB (2.07 GiB) by default. Every initializer lives in
one external data file, as onnx's

    save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
               location=<name>.data, size_threshold=1024)

would write it: tensors back to back in initializer order, no alignment
padding, each TensorProto with data_location = EXTERNAL and external_data
entries location / offset / length. Unlike save_model, the whole model is
never in memory: each tensor is generated, appended to the .data file and
dropped before the next one (peak Python RSS is about one 38 MB weight), and
the .onnx file holds only the graph and the tensor headers (a few tens of KB).
Values are drawn as in make_model.py (He-normal weights, small biases, random
BN scale / shift / mean / positive variance), so no fold is an identity.

Files: <out-dir>/bench-huge-<hash>.onnx and <out-dir>/bench-huge-<hash>.onnx.data,
where <hash> covers the parameters and this script's text. The data file is
completed and renamed into place before the model file is, so an existing
model file whose data file has the expected size is a complete cache entry;
stale entries (other hashes, partial files) are removed. The model path is
printed on stdout.
"""

import argparse
import math
import os
import resource
import sys
import time

import numpy as np
import benchcache
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8
PREFIX = "bench-huge-"
GIB = 1 << 30


def parameters(args):
    return {
        "layout": "conv3x3-bn-relu-stack",
        "channels": args.channels,
        "blocks": blocks_for(args.channels, args.gb),
        "image": args.image,
        "seed": args.seed,
        "opset": OPSET,
        "ir_version": IR_VERSION,
    }


def cache_key(params):
    return benchcache.cache_key(params, __file__)


def block_bytes(c):
    return 4 * (c * c * 9 + c + 4 * c)  # W, conv bias, BN scale / B / mean / var


def blocks_for(c, gb):
    return max(1, math.ceil(gb * 1e9 / block_bytes(c)))


class DataWriter:
    """Appends tensors to the open .data file and returns their TensorProtos."""

    def __init__(self, f, location):
        self.f = f
        self.location = location
        self.offset = 0

    def add(self, graph, name, array):
        array = np.ascontiguousarray(array, dtype="<f4")
        t = graph.initializer.add()
        t.name = name
        t.data_type = TensorProto.FLOAT
        t.dims.extend(array.shape)
        t.data_location = TensorProto.EXTERNAL
        length = array.nbytes
        array.tofile(self.f)  # no bytes copy of the array
        for key, value in (("location", self.location), ("offset", self.offset), ("length", length)):
            e = t.external_data.add()
            e.key = key
            e.value = str(value)
        self.offset += length


def build(params, data_file, location):
    rng = np.random.default_rng(params["seed"])
    c, n = params["channels"], params["blocks"]
    model, graph = benchcache.new_model("bench_huge_conv_bn_stack", IR_VERSION, OPSET)
    w_scale = np.float32(np.sqrt(2.0 / (c * 9)))
    out = DataWriter(data_file, location)

    nodes = []
    x = "input"
    for i in range(1, n + 1):
        p, b = f"features.conv{i}", f"features.bn{i}"
        w = rng.standard_normal((c, c, 3, 3), dtype=np.float32)
        w *= w_scale
        out.add(graph, p + ".weight", w)
        del w
        out.add(graph, p + ".bias", rng.normal(0.0, 0.02, c))
        out.add(graph, b + ".weight", rng.uniform(0.5, 1.5, c))
        out.add(graph, b + ".bias", rng.normal(0.0, 0.2, c))
        out.add(graph, b + ".running_mean", rng.normal(0.0, 0.5, c))
        out.add(graph, b + ".running_var", rng.uniform(0.25, 2.0, c))

        x = benchcache.conv_bn_relu(nodes, x, p, b, i)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["output"], name="gap"))
    graph.node.extend(nodes)

    s = params["image"]
    graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, s, s]))
    graph.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, c, 1, 1]))
    return model, out.offset


def peak_rss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--channels", type=int, default=1024, help="channels of every conv (default 1024)")
    ap.add_argument("--gb", type=float, default=2.2,
                    help="at least this many GB (10^9 bytes) of weights (default 2.2, i.e. > 2 GiB)")
    ap.add_argument("--image", type=int, default=14, help="declared input height/width (default 14)")
    ap.add_argument("--seed", type=int, default=20240612)
    args = ap.parse_args()

    params = parameters(args)
    key = cache_key(params)
    os.makedirs(args.out_dir, exist_ok=True)
    name = f"{PREFIX}{key}.onnx"
    path = os.path.join(args.out_dir, name)
    data_name = name + ".data"
    data_path = os.path.join(args.out_dir, data_name)
    expected = params["blocks"] * block_bytes(params["channels"])

    if os.path.isfile(path) and os.path.isfile(data_path) and os.path.getsize(data_path) == expected:
        print(f"huge model: cached {path} (+ .data, {expected / 1e9:.2f} GB)", file=sys.stderr)
        print(path)
        return

    for f in os.listdir(args.out_dir):  # stale or partial entries
        if f.startswith(PREFIX):
            os.remove(os.path.join(args.out_dir, f))

    if expected <= 2 * GIB:
        print(f"huge model: note: {expected / GIB:.2f} GiB of weights is not over protobuf's 2 GiB limit",
              file=sys.stderr)
    print(f"huge model: generating {path} + .data ({params['blocks']} Conv+BN blocks of {params['channels']} "
          f"channels, {expected / 1e9:.2f} GB = {expected / GIB:.2f} GiB of float32 weights, external) ...",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    tmp_data = data_path + ".partial"
    with open(tmp_data, "wb") as f:
        model, written = build(params, f, data_name)
        f.flush()
        os.fsync(f.fileno())
    if written != expected:
        raise SystemExit(f"huge model: wrote {written} bytes of data, expected {expected}")
    os.replace(tmp_data, data_path)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString())
    os.replace(tmp, path)  # last: the model file marks a complete cache entry
    print(f"huge model: .onnx {os.path.getsize(path) / 1024:.0f} KiB, .data {written / 1e9:.2f} GB, "
          f"generated in {time.perf_counter() - t0:.1f} s, generator peak RSS {peak_rss_mib():.0f} MiB",
          file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
