#!/usr/bin/env python3
"""Generate the ONNX test fixtures for bnfold.

What it makes (all written into the directory this script lives in, Fixtures/):

* PyTorch exports (model.eval(), BatchNormalization kept in the graph):
  torch_conv2d_bn_relu, torch_conv1d_bn, torch_conv3d_bn, torch_grouped_bn,
  torch_depthwise_bn, torch_tiny_resnet and torch_resnet18 use the legacy
  TorchScript exporter (dynamo=False, do_constant_folding=False,
  training=TrainingMode.PRESERVE); torch_dynamo_convbn (+ .onnx.data) uses the
  dynamo exporter (dynamo=True, optimize=False, external_data=True).
  NOTE: torch_resnet18.onnx is the ResNet-18 *topology* (BasicBlock layout
  [2,2,2,2], 7x7/2 stem + BN + ReLU + maxpool, three 1x1 downsample conv+BN,
  avgpool, fc) with every channel width divided by 4 (16/32/64/128 instead of
  64/128/256/512) so that the file stays around 3 MB; input 1x3x64x64,
  10 classes, 20 BatchNormalization nodes.
* Hand-built models (onnx.helper): conv1d/2d/3d + BN, no-bias, grouped and
  depthwise convs, BN opset variants (6, 7, 9, 14, 15), fp16/bf16/f64 models,
  storage variants (typed float_data, Constant nodes, external data), the
  "skip" cases where the BN must stay, a shared-weight case, If-subgraph
  cases and a fidelity model full of rarely used ModelProto features
  (including unknown protobuf fields).
* Fixtures/bad/: inputs on which bnfold must fail with exit code 2.
* Fixtures/manifest.json: expected verdict per fixture, used by
  Tests/CrossCheck/crosscheck.py. The "ort" flag is measured here by actually
  running each model with onnxruntime; where it cannot, "ort_compat" says whether
  it can run the model after crosscheck.py's float32/opset-7 rewrite (applied to
  both the fixture and bnfold's output, so the fold is still checked numerically).

Every BatchNormalization gets random, non-trivial statistics (running_mean
~ N(0, 0.5), running_var ~ U(0.5, 2), gamma ~ U(0.5, 1.5) with random signs on
some channels, beta ~ N(0, 0.3)) and conv biases are random, because a freshly
initialised BN (identity transform) would hide a wrong fold. Everything is
seeded; re-running produces the same files.

How to run: `python Fixtures/generate.py` from the repository root, with a
Python that has the packages below, e.g.:

    python3 -m venv /tmp/fixenv
    /tmp/fixenv/bin/pip install torch==2.15.0 torchvision==0.29.2 onnx==1.23.2 \
        onnxscript==0.7.2 onnxruntime==1.31.1 numpy==2.4.6
    /tmp/fixenv/bin/python Fixtures/generate.py

Generated with: torch 2.15.0 (the default PyPI wheel, reported as
2.15.0+cu132; it is recorded as producer_version in the dynamo export),
torchvision 0.29.2, onnx 1.23.2,
onnxscript 0.7.2, onnx-ir 1.1.0, onnxruntime 1.31.1, numpy 2.4.6,
ml_dtypes 0.6.0, protobuf 7.36.2 (Python 3.11).
"""

from __future__ import annotations

import json
import os
import random
import sys
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent
BAD = OUT / "bad"
SEED = 20240531

RNG = np.random.default_rng(SEED)
MANIFEST: list[dict] = []
BAD_MANIFEST: list[dict] = []

# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------

BF16 = ml_dtypes.bfloat16
NP2ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(BF16): TensorProto.BFLOAT16,
}


def bn_stats(c: int, rng=RNG) -> dict[str, np.ndarray]:
    """Random, non-trivial BN parameters for c channels (float64)."""
    gamma = rng.uniform(0.5, 1.5, c)
    neg = rng.random(c) < 0.3
    if not neg.any():
        neg[rng.integers(c)] = True
    if neg.all():
        neg[0] = False
    gamma[neg] *= -1.0
    return {
        "scale": gamma,
        "B": rng.normal(0.0, 0.3, c),
        "mean": rng.normal(0.0, 0.5, c),
        "var": rng.uniform(0.5, 2.0, c),
    }


def conv_weight(cout, cin_per_group, kshape, rng=RNG):
    fan_in = cin_per_group * int(np.prod(kshape))
    return rng.normal(0.0, 1.0 / np.sqrt(fan_in), (cout, cin_per_group, *kshape))


def tensor(name, arr, dtype=np.float32, typed=False):
    """Initializer from an array. typed=True stores in float_data/double_data/int32_data."""
    dtype = np.dtype(dtype)
    arr = np.asarray(arr)
    if typed:
        vals = arr.astype(dtype)
        if dtype == np.float16 or dtype == np.dtype(BF16):
            # float16/bfloat16 typed storage: bit patterns in int32_data
            flat = vals.view(np.uint16).flatten().astype(np.int32).tolist()
            t = helper.make_tensor(name, NP2ONNX[dtype], arr.shape, [], raw=False)
            t.int32_data.extend(flat)
            return t
        return helper.make_tensor(name, NP2ONNX[dtype], arr.shape, vals.flatten().tolist(), raw=False)
    return numpy_helper.from_array(arr.astype(dtype), name)


def vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, NP2ONNX[np.dtype(dtype)], shape)


def make_model(graph, opset=15, extra_opsets=(), **kw):
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="bnfold-fixtures", **kw)
    m.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 7)
    if kw.get("functions"):
        m.ir_version = max(m.ir_version, 8)
    return m


def save(model, name, check=True, **kw):
    path = OUT / name
    if check:
        onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path), **kw)
    return path


def entry(file, source, bn_total, folded, kept, description, **extra):
    assert folded + sum(kept.values()) == bn_total, file
    e = {"file": file, "source": source, "bn_total": bn_total, "folded": folded,
         "kept": dict(kept), "ort": None, "description": description}
    e.update(extra)
    MANIFEST.append(e)


def bad(file, description):
    BAD_MANIFEST.append({"file": "bad/" + file, "expect_exit": 2, "description": description})


def conv_attrs(nd, k=3, group=1, pad=1):
    return dict(kernel_shape=[k] * nd, pads=[pad] * (2 * nd), strides=[1] * nd, dilations=[1] * nd, group=group)


# --------------------------------------------------------------------------
# hand-built Conv -> BN models
# --------------------------------------------------------------------------


def conv_bn_parts(prefix="", nd=2, cin=3, cout=6, group=1, bias=True, spatial=6, dtype=np.float32,
                  typed=False, x="X", stats=None, rng=RNG):
    """Returns (nodes, initializers, conv_out, bn_inputs, W array) for x -> Conv -> (BN inputs)."""
    k = [3] * nd
    W = conv_weight(cout, cin // group, k, rng)
    inits = [tensor(prefix + "W", W, dtype, typed)]
    conv_in = [x, prefix + "W"]
    if bias:
        inits.append(tensor(prefix + "Bc", rng.normal(0.0, 0.2, cout), dtype, typed))
        conv_in.append(prefix + "Bc")
    conv_out = prefix + "C"
    nodes = [helper.make_node("Conv", conv_in, [conv_out], name=prefix + "conv", **conv_attrs(nd, group=group))]
    st = stats if stats is not None else bn_stats(cout, rng)
    for key in ("scale", "B", "mean", "var"):
        inits.append(tensor(prefix + key, st[key], dtype, typed))
    bn_in = [conv_out] + [prefix + key for key in ("scale", "B", "mean", "var")]
    return nodes, inits, conv_out, bn_in


def simple_conv_bn(name, *, nd=2, cin=3, cout=6, group=1, bias=True, sp=6, opset=15, dtype=np.float32,
                   typed=False, bn_attrs=None, stats=None, bn_outputs=None, extra_outputs=(),
                   desc=""):
    nodes, inits, conv_out, bn_in = conv_bn_parts(nd=nd, cin=cin, cout=cout, group=group, bias=bias,
                                                  dtype=dtype, typed=typed, stats=stats)
    nodes.append(helper.make_node("BatchNormalization", bn_in, bn_outputs or ["Y"], name="bn",
                                  **(bn_attrs or {})))
    g = helper.make_graph(nodes, name.replace(".onnx", ""),
                          [vi("X", dtype, ["N", cin] + [sp] * nd)],
                          [vi("Y", dtype, ["N", cout] + [sp] * nd)] + list(extra_outputs),
                          inits)
    return make_model(g, opset)


# --------------------------------------------------------------------------
# PyTorch exports
# --------------------------------------------------------------------------


def torch_fixtures():
    import torch
    import torch.nn as nn

    torch.manual_seed(SEED)
    trng = np.random.default_rng(SEED + 1)

    def randomize(model):
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                    st = bn_stats(mod.num_features, trng)
                    mod.weight.copy_(torch.from_numpy(st["scale"]).float())
                    mod.bias.copy_(torch.from_numpy(st["B"]).float())
                    mod.running_mean.copy_(torch.from_numpy(st["mean"]).float())
                    mod.running_var.copy_(torch.from_numpy(st["var"]).float())
                elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and mod.bias is not None:
                    mod.bias.copy_(torch.from_numpy(trng.normal(0, 0.2, mod.out_channels)).float())
        return model.eval()

    def export_legacy(model, x, name):
        path = OUT / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(randomize(model), (x,), str(path), dynamo=False, do_constant_folding=False,
                              training=torch.onnx.TrainingMode.PRESERVE)
        return path

    def check_torch(path, n_bn, load_external=True):
        m = onnx.load(str(path), load_external_data=load_external)
        bns = [n for n in m.graph.node if n.op_type == "BatchNormalization"]
        assert len(bns) == n_bn, (path, len(bns))
        inits = {t.name for t in m.graph.initializer}
        producers = {o: n for n in m.graph.node for o in n.output}
        consumers: dict[str, int] = {}
        for n in m.graph.node:
            for i in n.input:
                consumers[i] = consumers.get(i, 0) + 1
        outs = {o.name for o in m.graph.output}
        for bn in bns:
            # BN params are plain initializers (no Identity dedup of equal tensors)
            assert all(i in inits for i in bn.input[1:5]), (path, bn.input)
            conv = producers[bn.input[0]]
            assert conv.op_type == "Conv" and all(i in inits for i in conv.input[1:]), path
            assert consumers[bn.input[0]] == 1 and bn.input[0] not in outs, path
            assert len([o for o in bn.output if o]) == 1, path
            for a in bn.attribute:
                if a.name == "training_mode":
                    assert a.i == 0
        onnx.checker.check_model(str(path), full_check=True)

    class ConvBNReLU(nn.Module):
        def __init__(self, conv, bn, relu=True):
            super().__init__()
            self.conv, self.bn = conv, bn
            self.relu = nn.ReLU() if relu else nn.Identity()

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    p = export_legacy(ConvBNReLU(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)),
                      torch.randn(1, 3, 16, 16), "torch_conv2d_bn_relu.onnx")
    check_torch(p, 1)
    entry(p.name, "torch-legacy", 1, 1, {}, "Conv2d(3,8,3,pad=1,bias=False)+BatchNorm2d+ReLU, legacy exporter, input 1x3x16x16")

    p = export_legacy(ConvBNReLU(nn.Conv1d(4, 6, 3, padding=1, bias=True), nn.BatchNorm1d(6), relu=False),
                      torch.randn(1, 4, 12), "torch_conv1d_bn.onnx")
    check_torch(p, 1)
    entry(p.name, "torch-legacy", 1, 1, {}, "Conv1d(4,6,3,pad=1,bias=True)+BatchNorm1d, legacy exporter, input 1x4x12")

    p = export_legacy(ConvBNReLU(nn.Conv3d(2, 4, 3, padding=1, bias=True), nn.BatchNorm3d(4), relu=False),
                      torch.randn(1, 2, 6, 6, 6), "torch_conv3d_bn.onnx")
    check_torch(p, 1)
    entry(p.name, "torch-legacy", 1, 1, {}, "Conv3d(2,4,3,pad=1,bias=True)+BatchNorm3d, legacy exporter, input 1x2x6x6x6")

    p = export_legacy(ConvBNReLU(nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=True), nn.BatchNorm2d(8)),
                      torch.randn(1, 8, 10, 10), "torch_grouped_bn.onnx")
    check_torch(p, 1)
    entry(p.name, "torch-legacy", 1, 1, {}, "Conv2d(8,8,3,groups=2,bias=True)+BatchNorm2d+ReLU, legacy exporter")

    p = export_legacy(ConvBNReLU(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)),
                      torch.randn(1, 8, 10, 10), "torch_depthwise_bn.onnx")
    check_torch(p, 1)
    entry(p.name, "torch-legacy", 1, 1, {}, "depthwise Conv2d(8,8,3,groups=8,bias=False)+BatchNorm2d+ReLU, legacy exporter")

    class Basic(nn.Module):
        """ResNet basic block: conv3x3-bn-relu-conv3x3-bn (+ shortcut) - relu."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            s = x if self.down is None else self.down(x)
            return self.relu(y + s)

    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.b1 = Basic(8, 8, 1)
            self.b2 = Basic(8, 16, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.b2(self.b1(self.stem(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    p = export_legacy(TinyResNet(), torch.randn(1, 3, 16, 16), "torch_tiny_resnet.onnx")
    check_torch(p, 6)
    entry(p.name, "torch-legacy", 6, 6, {},
          "tiny ResNet: stem conv-bn-relu, 2 basic blocks (second with 1x1 conv+bn downsample), avgpool, linear")

    class ResNet18W4(nn.Module):
        """ResNet-18 topology with all widths divided by 4."""

        def __init__(self, widths=(16, 32, 64, 128), classes=10):
            super().__init__()
            w0 = widths[0]
            self.conv1 = nn.Conv2d(3, w0, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w0)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            layers, cin = [], w0
            for i, w in enumerate(widths):
                stride = 1 if i == 0 else 2
                layers.append(nn.Sequential(Basic(cin, w, stride), Basic(w, w, 1)))
                cin = w
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    p = export_legacy(ResNet18W4(), torch.randn(1, 3, 64, 64), "torch_resnet18.onnx")
    check_torch(p, 20)
    entry(p.name, "torch-legacy", 20, 20, {},
          "ResNet-18 topology ([2,2,2,2] basic blocks, 7x7/2 stem, 3 downsample conv+bn) with widths/4 "
          "(16,32,64,128), input 1x3x64x64, 10 classes")

    # dynamo exporter with external data
    name = "torch_dynamo_convbn.onnx"
    path = OUT / name
    for stale in (path, OUT / (name + ".data")):
        if stale.exists():
            stale.unlink()
    model = randomize(ConvBNReLU(nn.Conv2d(3, 8, 3, padding=1, bias=True), nn.BatchNorm2d(8)))
    import contextlib
    import io

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), dynamo=True, optimize=False,
                          external_data=True)
    m = onnx.load(str(path), load_external_data=False)
    # The exporter records Python stack traces with absolute paths in node metadata_props;
    # make them machine independent so that regenerating elsewhere gives the same file.
    site = os.path.dirname(os.path.dirname(torch.__file__)) + os.sep
    for node in m.graph.node:
        for prop in node.metadata_props:
            prop.value = prop.value.replace(str(OUT.parent) + os.sep, "").replace(site, "<site-packages>/")
    path.write_bytes(m.SerializeToString())
    n_ext = sum(t.data_location == TensorProto.EXTERNAL for t in m.graph.initializer)
    if n_ext == 0:
        m = onnx.load(str(path))
        onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=name + ".data", size_threshold=0)
        m = onnx.load(str(path), load_external_data=False)
        n_ext = sum(t.data_location == TensorProto.EXTERNAL for t in m.graph.initializer)
    assert n_ext > 0
    assert all(e.value == name + ".data" for t in m.graph.initializer for e in t.external_data
               if e.key == "location")
    check_torch(path, 1)
    entry(name, "torch-dynamo", 1, 1, {},
          f"Conv2d(3,8,3,bias=True)+BN2d+ReLU via the dynamo exporter (optimize=False, external_data=True); "
          f"{n_ext} of {len(m.graph.initializer)} initializers stored in {name}.data, the rest inline")


# --------------------------------------------------------------------------
# onnx.helper builds
# --------------------------------------------------------------------------


def helper_fixtures():
    # ---- basic conv dims / groups
    m = simple_conv_bn("conv1d_bn", nd=1, cin=3, cout=5, sp=8)
    save(m, "conv1d_bn.onnx")
    entry("conv1d_bn.onnx", "onnx.helper", 1, 1, {}, "Conv1d (bias) -> BN, opset 15")

    m = simple_conv_bn("conv2d_bn", nd=2, cin=3, cout=6, sp=6)
    save(m, "conv2d_bn.onnx")
    entry("conv2d_bn.onnx", "onnx.helper", 1, 1, {}, "Conv2d (bias) -> BN, opset 15")

    m = simple_conv_bn("conv3d_bn", nd=3, cin=2, cout=4, sp=5)
    save(m, "conv3d_bn.onnx")
    entry("conv3d_bn.onnx", "onnx.helper", 1, 1, {}, "Conv3d (bias) -> BN, opset 15")

    m = simple_conv_bn("conv2d_nobias_bn", nd=2, cin=3, cout=6, bias=False, sp=6,
                       bn_attrs={"epsilon": 1e-3})
    save(m, "conv2d_nobias_bn.onnx")
    entry("conv2d_nobias_bn.onnx", "onnx.helper", 1, 1, {},
          "Conv2d without bias input -> BN (epsilon 1e-3); fold must add a bias input")

    m = simple_conv_bn("conv2d_group2_bn", nd=2, cin=4, cout=6, group=2, sp=7)
    save(m, "conv2d_group2_bn.onnx")
    entry("conv2d_group2_bn.onnx", "onnx.helper", 1, 1, {}, "grouped Conv2d group=2, C_in=4, C_out=6 -> BN")

    m = simple_conv_bn("conv2d_depthwise_bn", nd=2, cin=6, cout=6, group=6, sp=7)
    save(m, "conv2d_depthwise_bn.onnx")
    entry("conv2d_depthwise_bn.onnx", "onnx.helper", 1, 1, {}, "depthwise Conv2d group=C=6 -> BN")

    # ---- BN opset variants
    m = simple_conv_bn("bn_opset6", opset=6, bn_attrs={"is_test": 1, "epsilon": 1e-3, "spatial": 1})
    save(m, "bn_opset6.onnx")
    entry("bn_opset6.onnx", "onnx.helper", 1, 1, {}, "BatchNormalization-6, is_test=1, spatial=1, epsilon=1e-3")

    m = simple_conv_bn("bn_opset7", opset=7)
    save(m, "bn_opset7.onnx")
    entry("bn_opset7.onnx", "onnx.helper", 1, 1, {}, "BatchNormalization-7, no attributes (epsilon default 1e-5, spatial default 1)")

    m = simple_conv_bn("bn_opset9", opset=9, bn_attrs={"epsilon": 1e-3, "momentum": 0.8})
    save(m, "bn_opset9.onnx")
    entry("bn_opset9.onnx", "onnx.helper", 1, 1, {}, "BatchNormalization-9, epsilon=1e-3, momentum=0.8")

    m = simple_conv_bn("bn_opset14", opset=14, bn_attrs={"training_mode": 0})
    save(m, "bn_opset14.onnx")
    entry("bn_opset14.onnx", "onnx.helper", 1, 1, {}, "BatchNormalization-14, training_mode=0 explicit, epsilon default")

    m = simple_conv_bn("bn_opset15", opset=15, bn_attrs={"epsilon": 1e-3})
    save(m, "bn_opset15.onnx")
    entry("bn_opset15.onnx", "onnx.helper", 1, 1, {}, "BatchNormalization-15, epsilon=1e-3")

    # ---- dtypes
    m = simple_conv_bn("conv2d_bn_fp16", dtype=np.float16)
    save(m, "conv2d_bn_fp16.onnx")
    entry("conv2d_bn_fp16.onnx", "onnx.helper", 1, 1, {}, "all-float16 Conv2d -> BN, opset 15")

    m = simple_conv_bn("conv2d_bn_bf16", dtype=BF16, opset=22)
    save(m, "conv2d_bn_bf16.onnx")
    entry("conv2d_bn_bf16.onnx", "onnx.helper", 1, 1, {},
          "all-bfloat16 Conv2d -> BN, opset 22 (Conv-22 and BN-15 allow bfloat16)")

    m = simple_conv_bn("conv2d_bn_f64", dtype=np.float64)
    save(m, "conv2d_bn_f64.onnx")
    entry("conv2d_bn_f64.onnx", "onnx.helper", 1, 1, {}, "all-double Conv2d -> BN, opset 15")

    # ---- storage variants
    m = simple_conv_bn("conv2d_bn_typed_data", typed=True, bn_attrs={"epsilon": 1e-4})
    assert all(not t.raw_data and len(t.float_data) for t in m.graph.initializer)
    save(m, "conv2d_bn_typed_data.onnx")
    entry("conv2d_bn_typed_data.onnx", "onnx.helper", 1, 1, {},
          "initializers stored in float_data (not raw_data), epsilon=1e-4")

    nodes, inits, conv_out, bn_in = conv_bn_parts()
    consts = [helper.make_node("Constant", [], [t.name], name="const_" + t.name, value=t) for t in inits]
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Y"], name="bn"))
    g = helper.make_graph(consts + nodes, "conv2d_bn_constant_nodes",
                          [vi("X", np.float32, ["N", 3, 6, 6])], [vi("Y", np.float32, ["N", 6, 6, 6])])
    save(make_model(g), "conv2d_bn_constant_nodes.onnx")
    entry("conv2d_bn_constant_nodes.onnx", "onnx.helper", 1, 1, {},
          "conv weight/bias and BN scale/bias/mean/var come from Constant nodes, no initializers")

    m = simple_conv_bn("conv2d_bn_external", bn_attrs={"epsilon": 1e-3})
    for f in ("conv2d_bn_external.onnx", "conv2d_bn_external.onnx.data"):
        if (OUT / f).exists():
            (OUT / f).unlink()
    onnx.checker.check_model(m, full_check=True)
    onnx.save_model(m, str(OUT / "conv2d_bn_external.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="conv2d_bn_external.onnx.data", size_threshold=0)
    me = onnx.load(str(OUT / "conv2d_bn_external.onnx"), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in me.graph.initializer)
    entry("conv2d_bn_external.onnx", "onnx.helper", 1, 1, {},
          "all initializers in external data file conv2d_bn_external.onnx.data (size_threshold=0)")

    # ---- skip cases
    # training mode: 3 outputs, running stats are graph outputs
    m = simple_conv_bn("skip_training_mode", opset=15, bn_attrs={"training_mode": 1, "momentum": 0.9},
                       bn_outputs=["Y", "running_mean", "running_var"],
                       extra_outputs=[vi("running_mean", np.float32, [6]), vi("running_var", np.float32, [6])])
    save(m, "skip_training_mode.onnx")
    entry("skip_training_mode.onnx", "onnx.helper", 1, 0, {"TrainingMode": 1},
          "BN-15 training_mode=1 with running_mean/running_var outputs as graph outputs")

    # opset 9 with optional mean/var outputs used downstream
    nodes, inits, conv_out, bn_in = conv_bn_parts()
    # BN-9 allows 1 or 5 outputs; saved_mean/saved_var are left unnamed (optional)
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Y", "bn_mean", "bn_var", "", ""], name="bn"))
    nodes.append(helper.make_node("Identity", ["bn_var"], ["var_copy"], name="use_var"))
    g = helper.make_graph(nodes, "skip_extra_outputs", [vi("X", np.float32, ["N", 3, 6, 6])],
                          [vi("Y", np.float32, ["N", 6, 6, 6]), vi("bn_mean", np.float32, [6]),
                           vi("var_copy", np.float32, [6])], inits)
    save(make_model(g, 9), "skip_extra_outputs.onnx")
    entry("skip_extra_outputs.onnx", "onnx.helper", 1, 0, {"ExtraOutputsUsed": 1},
          "BN-9 with optional mean/var outputs declared; mean is a graph output, var feeds an Identity")

    nodes, inits, conv_out, bn_in = conv_bn_parts()
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Y"], name="bn"))
    nodes.append(helper.make_node("Relu", [conv_out], ["R"], name="relu"))
    g = helper.make_graph(nodes, "skip_conv_output_used_twice", [vi("X", np.float32, ["N", 3, 6, 6])],
                          [vi("Y", np.float32, ["N", 6, 6, 6]), vi("R", np.float32, ["N", 6, 6, 6])], inits)
    save(make_model(g), "skip_conv_output_used_twice.onnx")
    entry("skip_conv_output_used_twice.onnx", "onnx.helper", 1, 0, {"ProducerHasOtherUses": 1},
          "conv output feeds the BN and also a Relu")

    nodes, inits, conv_out, bn_in = conv_bn_parts()
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Y"], name="bn"))
    g = helper.make_graph(nodes, "skip_conv_output_is_graph_output", [vi("X", np.float32, ["N", 3, 6, 6])],
                          [vi("Y", np.float32, ["N", 6, 6, 6]), vi(conv_out, np.float32, ["N", 6, 6, 6])], inits)
    save(make_model(g), "skip_conv_output_is_graph_output.onnx")
    entry("skip_conv_output_is_graph_output.onnx", "onnx.helper", 1, 0, {"ProducerIsGraphOutput": 1},
          "conv output is also a graph output")

    nodes, inits, conv_out, bn_in = conv_bn_parts()
    inits = [t for t in inits if t.name != "W"]
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Y"], name="bn"))
    g = helper.make_graph(nodes, "skip_weight_is_graph_input",
                          [vi("X", np.float32, ["N", 3, 6, 6]), vi("W", np.float32, [6, 3, 3, 3])],
                          [vi("Y", np.float32, ["N", 6, 6, 6])], inits)
    save(make_model(g), "skip_weight_is_graph_input.onnx")
    entry("skip_weight_is_graph_input.onnx", "onnx.helper", 1, 0, {"NonConstantWeights": 1},
          "conv weight W is a graph input, not an initializer")

    nodes, inits, conv_out, bn_in = conv_bn_parts()
    inits = [t for t in inits if t.name != "mean"]
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Y"], name="bn"))
    g = helper.make_graph(nodes, "skip_bn_param_is_graph_input",
                          [vi("X", np.float32, ["N", 3, 6, 6]), vi("mean", np.float32, [6])],
                          [vi("Y", np.float32, ["N", 6, 6, 6])], inits)
    save(make_model(g), "skip_bn_param_is_graph_input.onnx")
    entry("skip_bn_param_is_graph_input.onnx", "onnx.helper", 1, 0, {"NonConstantBNParameters": 1},
          "BN mean is a graph input, not an initializer")

    st = bn_stats(6)
    st["var"][2] = -0.5
    m = simple_conv_bn("skip_negative_variance", stats=st, bn_attrs={"epsilon": 1e-5})
    save(m, "skip_negative_variance.onnx")
    entry("skip_negative_variance.onnx", "onnx.helper", 1, 0, {"NonPositiveVariance": 1},
          "channel 2 has running_var=-0.5 (epsilon 1e-5), so var+eps <= 0; ORT output has NaN there")

    # fp16 overflow: channel 1 has gamma 100, var 1e-4 -> scale ~9535; weights 30 -> ~2.9e5 > 65504
    nodes, inits, conv_out, bn_in = conv_bn_parts(dtype=np.float16, bias=True)
    st = bn_stats(6)
    st["scale"][1], st["var"][1] = 100.0, 1e-4
    W = conv_weight(6, 3, [3, 3])
    W[1] = 30.0
    inits = [tensor("W", W, np.float16), tensor("Bc", RNG.normal(0, 0.2, 6), np.float16)] + \
            [tensor(k, st[k], np.float16) for k in ("scale", "B", "mean", "var")]
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Y"], name="bn", epsilon=1e-5))
    g = helper.make_graph(nodes, "skip_fp16_overflow", [vi("X", np.float16, ["N", 3, 6, 6])],
                          [vi("Y", np.float16, ["N", 6, 6, 6])], inits)
    save(make_model(g), "skip_fp16_overflow.onnx")
    entry("skip_fp16_overflow.onnx", "onnx.helper", 1, 0, {"NotRepresentable": 1},
          "float16: channel 1 gamma=100, var=1e-4, weights=30, so folded weight ~2.9e5 > 65504")

    # BN on a graph input, and BN after a Relu
    st1, st2 = bn_stats(3), bn_stats(3)
    inits = [tensor("a_" + k, st1[k]) for k in st1] + [tensor("b_" + k, st2[k]) for k in st2]
    nodes = [helper.make_node("BatchNormalization", ["X"] + ["a_" + k for k in ("scale", "B", "mean", "var")],
                              ["Y1"], name="bn_on_input"),
             helper.make_node("Relu", ["Y1"], ["R"], name="relu"),
             helper.make_node("BatchNormalization", ["R"] + ["b_" + k for k in ("scale", "B", "mean", "var")],
                              ["Y"], name="bn_after_relu")]
    g = helper.make_graph(nodes, "skip_no_conv_producer", [vi("X", np.float32, ["N", 3, 6, 6])],
                          [vi("Y", np.float32, ["N", 3, 6, 6])], inits)
    save(make_model(g), "skip_no_conv_producer.onnx")
    entry("skip_no_conv_producer.onnx", "onnx.helper", 2, 0, {"NoFoldableProducer": 2},
          "one BN directly on the graph input, a second BN after a Relu")

    # BN-7 spatial=0: parameters are per activation (C x H x W)
    cout, sp = 4, 5
    W = conv_weight(cout, 3, [3, 3])
    inits = [tensor("W", W), tensor("Bc", RNG.normal(0, 0.2, cout))]
    shp = (cout, sp, sp)
    gamma = RNG.uniform(0.5, 1.5, shp) * np.where(RNG.random(shp) < 0.3, -1, 1)
    inits += [tensor("scale", gamma), tensor("B", RNG.normal(0, 0.3, shp)),
              tensor("mean", RNG.normal(0, 0.5, shp)), tensor("var", RNG.uniform(0.5, 2.0, shp))]
    nodes = [helper.make_node("Conv", ["X", "W", "Bc"], ["C"], name="conv", **conv_attrs(2)),
             helper.make_node("BatchNormalization", ["C", "scale", "B", "mean", "var"], ["Y"], name="bn",
                              spatial=0, epsilon=1e-5)]
    g = helper.make_graph(nodes, "skip_spatial0", [vi("X", np.float32, ["N", 3, sp, sp])],
                          [vi("Y", np.float32, ["N", cout, sp, sp])], inits)
    save(make_model(g, 7), "skip_spatial0.onnx")
    entry("skip_spatial0.onnx", "onnx.helper", 1, 0, {"NotSpatial": 1},
          "BN-7 spatial=0 with per-activation (C x H x W) parameters")

    # ---- shared weight
    W = conv_weight(6, 3, [3, 3])
    s1, s2 = bn_stats(6), bn_stats(6)
    inits = [tensor("W", W)] + [tensor("a_" + k, s1[k]) for k in s1] + [tensor("b_" + k, s2[k]) for k in s2]
    nodes = [helper.make_node("Conv", ["X1", "W"], ["C1"], name="conv1", **conv_attrs(2)),
             helper.make_node("BatchNormalization", ["C1"] + ["a_" + k for k in ("scale", "B", "mean", "var")],
                              ["Y1"], name="bn1"),
             helper.make_node("Conv", ["X2", "W"], ["C2"], name="conv2", **conv_attrs(2)),
             helper.make_node("BatchNormalization", ["C2"] + ["b_" + k for k in ("scale", "B", "mean", "var")],
                              ["Y2"], name="bn2", epsilon=1e-3)]
    g = helper.make_graph(nodes, "shared_weight_two_convs",
                          [vi("X1", np.float32, ["N", 3, 6, 6]), vi("X2", np.float32, ["N", 3, 6, 6])],
                          [vi("Y1", np.float32, ["N", 6, 6, 6]), vi("Y2", np.float32, ["N", 6, 6, 6])], inits)
    save(make_model(g), "shared_weight_two_convs.onnx")
    entry("shared_weight_two_convs.onnx", "onnx.helper", 2, 2, {},
          "two Convs share one weight initializer, each followed by its own BN (different stats); both fold")

    # ---- If subgraphs
    def branch(prefix, as_constants):
        nodes, inits, conv_out, bn_in = conv_bn_parts(prefix=prefix, cin=6, cout=4, x="Y0")
        nodes.append(helper.make_node("BatchNormalization", bn_in, [prefix + "out"], name=prefix + "bn"))
        if as_constants:
            nodes = [helper.make_node("Constant", [], [t.name], name=prefix + "const_" + t.name, value=t)
                     for t in inits] + nodes
            inits = []
        return helper.make_graph(nodes, prefix + "branch", [], [vi(prefix + "out", np.float32, ["N", 4, 6, 6])],
                                 inits)

    nodes, inits, conv_out, bn_in = conv_bn_parts(prefix="m_")
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Y0"], name="m_bn"))
    nodes.append(helper.make_node("If", ["cond"], ["Z"], name="if",
                                  then_branch=branch("t_", False), else_branch=branch("e_", True)))
    g = helper.make_graph(nodes, "subgraph_if",
                          [vi("X", np.float32, ["N", 3, 6, 6]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [vi("Y0", np.float32, ["N", 6, 6, 6]), vi("Z", np.float32, ["N", 4, 6, 6])], inits)
    save(make_model(g), "subgraph_if.onnx")
    entry("subgraph_if.onnx", "onnx.helper", 1, 1, {},
          "main Conv->BN plus an If whose then branch (initializers in the branch) and else branch (Constant "
          "nodes) each hold a Conv->BN reading the main BN output; counts are main graph only",
          subgraph_bn=2)

    nodes, inits, conv_out, bn_in = conv_bn_parts()
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Y"], name="bn"))
    then_g = helper.make_graph([helper.make_node("Relu", [conv_out], ["t_out"], name="t_relu")], "then",
                               [], [vi("t_out", np.float32, ["N", 6, 6, 6])])
    else_g = helper.make_graph([helper.make_node("Neg", [conv_out], ["e_out"], name="e_neg")], "else",
                               [], [vi("e_out", np.float32, ["N", 6, 6, 6])])
    nodes.append(helper.make_node("If", ["cond"], ["Z"], name="if", then_branch=then_g, else_branch=else_g))
    g = helper.make_graph(nodes, "subgraph_capture",
                          [vi("X", np.float32, ["N", 3, 6, 6]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [vi("Y", np.float32, ["N", 6, 6, 6]), vi("Z", np.float32, ["N", 6, 6, 6])], inits)
    save(make_model(g), "subgraph_capture.onnx")
    entry("subgraph_capture.onnx", "onnx.helper", 1, 0, {"ProducerHasOtherUses": 1},
          "conv output feeds the main BN and is captured by name inside both If branches", subgraph_bn=0)

    fidelity_rich()


def unknown_field_bytes() -> bytes:
    """Field 1000 varint 42 and field 1001 length-delimited 'hello' (wire format)."""

    def varint(v):
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                return bytes(out)

    return (varint(1000 << 3 | 0) + varint(42) +
            varint(1001 << 3 | 2) + varint(5) + b"hello")


def fidelity_rich():
    cin, cout, sp = 3, 6, 6
    nodes, inits, conv_out, bn_in = conv_bn_parts(cin=cin, cout=cout)
    nodes[0].doc_string = "the convolution"
    nodes.append(helper.make_node("BatchNormalization", bn_in, ["Yb"], name="bn", epsilon=1e-3,
                                  doc_string="eval-mode batch norm"))
    nodes.append(helper.make_node("ScaledRelu", ["Yb"], ["R"], name="scaled_relu", domain="bnfold.test",
                                  doc_string="local function call"))
    nodes.append(helper.make_node("Add", ["R", "S"], ["Y"], name="add_sparse", doc_string="adds a sparse tensor"))

    fn = helper.make_function(
        "bnfold.test", "ScaledRelu", ["x"], ["y"],
        [helper.make_node("Relu", ["x"], ["r"], name="fn_relu"),
         helper.make_node("Constant", [], ["two"], name="fn_two", value=helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])),
         helper.make_node("Mul", ["r", "two"], ["y"], name="fn_mul")],
        [helper.make_opsetid("", 15)], doc_string="y = 2 * relu(x)")

    sp_vals = tensor("S", np.array([0.5, -1.25], np.float32))
    sp_idx = numpy_helper.from_array(np.array([1, 4], np.int64), "S_indices")
    sparse = helper.make_sparse_tensor(sp_vals, sp_idx, [1, cout, 1, 1])

    g = helper.make_graph(nodes, "fidelity_rich", [vi("X", np.float32, ["N", cin, sp, sp])],
                          [vi("Y", np.float32, ["N", cout, sp, sp])], inits,
                          doc_string="graph doc string", sparse_initializer=[sparse],
                          value_info=[vi(conv_out, np.float32, ["N", cout, sp, sp]),
                                      vi("Yb", np.float32, ["N", cout, sp, sp]),
                                      vi("R", np.float32, ["N", cout, sp, sp])])
    ann = onnx.TensorAnnotation(tensor_name="Y")
    for k, v in (("SCALE_TENSOR", "Y_scale"), ("ZERO_POINT_TENSOR", "Y_zero_point")):
        ann.quant_parameter_tensor_names.add(key=k, value=v)
    g.quantization_annotation.append(ann)

    m = make_model(g, 15, extra_opsets=[("com.microsoft", 1), ("bnfold.test", 1)], functions=[fn],
                   doc_string="bnfold fidelity fixture", producer_version="1.2.3", domain="ai.bnfold.test",
                   model_version=7)
    m.producer_name = "bnfold-fixtures-rich"
    helper.set_model_props(m, {"author": "bnfold", "purpose": "round-trip fidelity", "unicode": "Grüße ✓"})
    # full_check=False: onnx shape inference types a sparse initializer as sparse_tensor and rejects it
    # as an Add input; onnxruntime densifies sparse initializers and runs the model.
    onnx.checker.check_model(m)

    # unknown fields inside the Conv NodeProto
    conv = m.graph.node[0]
    assert conv.op_type == "Conv"
    raw = conv.SerializeToString() + unknown_field_bytes()
    node2 = onnx.NodeProto()
    node2.ParseFromString(raw)
    m.graph.node[0].CopyFrom(node2)
    assert m.graph.node[0].SerializeToString() == raw
    data = m.SerializeToString() + unknown_field_bytes()
    (OUT / "fidelity_rich.onnx").write_bytes(data)
    back = onnx.load(str(OUT / "fidelity_rich.onnx"))
    assert back.SerializeToString() == data
    onnx.checker.check_model(back)
    entry("fidelity_rich.onnx", "onnx.helper", 1, 1, {},
          "Conv->BN plus doc strings, producer/model_version, metadata_props, value_info, com.microsoft opset, "
          "local FunctionProto, sparse_initializer, quantization_annotation, and unknown protobuf fields "
          "(1000 varint 42, 1001 bytes 'hello') on the ModelProto and on the Conv NodeProto")


# --------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------


def bad_fixtures():
    BAD.mkdir(exist_ok=True)
    # 't' = 0x74 = field 14, wire type 4 (end group) without a start group: invalid wire format
    (BAD / "not_protobuf.onnx").write_bytes(b"this is not an ONNX model, just some text\n")
    bad("not_protobuf.onnx", "plain text, not a protobuf")

    (BAD / "empty.onnx").write_bytes(b"")
    bad("empty.onnx", "0 bytes (parses as an empty ModelProto with no graph)")

    good = (OUT / "conv2d_bn.onnx").read_bytes()
    w = numpy_helper.to_array(next(t for t in onnx.load_from_string(good).graph.initializer if t.name == "W"))
    pos = good.find(w.tobytes())
    assert pos > 0
    (BAD / "truncated.onnx").write_bytes(good[: pos + len(w.tobytes()) // 2])
    bad("truncated.onnx", "conv2d_bn.onnx cut in the middle of the conv weight's raw_data")

    t = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    (BAD / "not_a_model.onnx").write_bytes(t.SerializeToString())
    mp = onnx.ModelProto()
    mp.ParseFromString(t.SerializeToString())
    assert not mp.HasField("graph")
    bad("not_a_model.onnx", "a serialized TensorProto: parses as a ModelProto but has no graph")

    m = simple_conv_bn("data_length_mismatch")
    w = next(t for t in m.graph.initializer if t.name == "W")
    w.raw_data = w.raw_data[: len(w.raw_data) - 8]
    save(m, "bad/data_length_mismatch.onnx", check=False)
    bad("data_length_mismatch.onnx", "conv weight raw_data is 8 bytes shorter than its dims say")

    m = simple_conv_bn("unknown_opset")
    m.opset_import[0].version = 99
    save(m, "bad/unknown_opset.onnx", check=False)
    bad("unknown_opset.onnx", "default-domain opset_import version 99")

    def ext_model(name, location, length):
        m = simple_conv_bn(name)
        w = next(t for t in m.graph.initializer if t.name == "W")
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
            w.external_data.add(key=k, value=v)
        return m, w

    m, w = ext_model("ext_absolute", "/etc/passwd", 6 * 3 * 3 * 3 * 4)
    save(m, "bad/ext_absolute.onnx", check=False)
    bad("ext_absolute.onnx", "external data location is the absolute path /etc/passwd")

    # ../outside.bin relative to Fixtures/bad/ is Fixtures/outside.bin, which exists and has the
    # right length: only a path-traversal check can reject it.
    m, w = ext_model("ext_dotdot", "../outside.bin", 6 * 3 * 3 * 3 * 4)
    (OUT / "outside.bin").write_bytes(RNG.normal(0, 0.2, 6 * 3 * 3 * 3).astype(np.float32).tobytes())
    save(m, "bad/ext_dotdot.onnx", check=False)
    bad("ext_dotdot.onnx", "external data location ../outside.bin escapes the model directory "
                           "(the file exists: Fixtures/outside.bin)")

    m, w = ext_model("ext_missing", "ext_missing.onnx.data", 6 * 3 * 3 * 3 * 4)
    save(m, "bad/ext_missing.onnx", check=False)
    assert not (BAD / "ext_missing.onnx.data").exists()
    bad("ext_missing.onnx", "external data file ext_missing.onnx.data does not exist")


# --------------------------------------------------------------------------
# the other fold patterns (ConvTranspose, Gemm, MatMul, Mul/Add, forward, chains)
# --------------------------------------------------------------------------

# A separate generator, so that adding fixtures here leaves the older ones
# byte-identical.
RNG3 = np.random.default_rng(SEED + 3)


def bn_nodes(prefix, x, y, c, dtype=np.float32, name=None, **attrs):
    """A BatchNormalization x -> y with random statistics: (node, initializers)."""
    st = bn_stats(c, RNG3)
    inits = [tensor(prefix + k, st[k], dtype) for k in ("scale", "B", "mean", "var")]
    node = helper.make_node("BatchNormalization", [x] + [prefix + k for k in ("scale", "B", "mean", "var")], [y],
                            name=name or prefix + "bn", **attrs)
    return node, inits


def pattern_fixtures():
    r = RNG3
    f32 = np.float32

    # ConvTranspose, group 2 with C_out/group = 3 (a wrong-axis fold shows), bias, stride 2.
    for name, dtype in [("convtranspose_group2_bn.onnx", f32), ("convtranspose_bn_fp16.onnx", np.float16)]:
        cin, cout, g = 4, 6, 2
        W = r.normal(0, 0.3, (cin, cout // g, 3, 3))
        nodes = [helper.make_node("ConvTranspose", ["X", "W", "Bc"], ["C"], name="deconv", group=g,
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])]
        bn, bi = bn_nodes("", "C", "Y", cout, dtype, name="bn")
        g_ = helper.make_graph(nodes + [bn], name[:-5], [vi("X", dtype, ["N", cin, 5, 5])],
                               [vi("Y", dtype, ["N", cout, 10, 10])],
                               [tensor("W", W, dtype), tensor("Bc", r.normal(0, 0.2, cout), dtype)] + bi)
        save(make_model(g_, 15), name)
        entry(name, "onnx.helper", 1, 1, {},
              f"ConvTranspose2d (C_in 4, C_out 6, group 2, stride 2, bias) -> BN, {np.dtype(dtype).name}; "
              "weight [C_in, C_out/group, k, k] must be scaled on axis 1 per group")

    # Gemm -> BN (BatchNorm1d after Linear), transB 0 and 1, alpha/beta, bias forms.
    for name, trans_b, alpha, beta, bias in [("gemm_bn_transb0.onnx", 0, 0.5, 2.0, "vector"),
                                             ("gemm_bn_transb1.onnx", 1, 1.0, 1.0, None)]:
        k, n = 8, 5
        B = r.normal(0, 0.4, (n, k) if trans_b else (k, n))
        inputs = ["A", "Bw"] + (["Cb"] if bias else [])
        inits = [tensor("Bw", B)] + ([tensor("Cb", r.normal(0, 0.2, n))] if bias else [])
        nodes = [helper.make_node("Gemm", inputs, ["G"], name="gemm", transB=trans_b, alpha=alpha, beta=beta)]
        bn, bi = bn_nodes("", "G", "Y", n, name="bn")
        g_ = helper.make_graph(nodes + [bn], name[:-5], [vi("A", f32, ["N", k])], [vi("Y", f32, ["N", n])], inits + bi)
        save(make_model(g_, 15), name)
        entry(name, "onnx.helper", 1, 1, {},
              f"Gemm (transB {trans_b}, alpha {alpha}, beta {beta}, C {bias or 'absent'}) -> BN on [N, {n}]")

    # MatMul -> Add(constant) -> BN, rank-2 input: becomes one Gemm.
    k, n = 6, 4
    nodes = [helper.make_node("MatMul", ["A", "Wm"], ["M"], name="matmul"),
             helper.make_node("Add", ["M", "Ba"], ["S"], name="add")]
    bn, bi = bn_nodes("", "S", "Y", n, name="bn")
    g_ = helper.make_graph(nodes + [bn], "matmul_add_bn", [vi("A", f32, [3, k])], [vi("Y", f32, [3, n])],
                           [tensor("Wm", r.normal(0, 0.4, (k, n))), tensor("Ba", r.normal(0, 0.2, n))] + bi)
    save(make_model(g_, 15), "matmul_add_bn.onnx")
    entry("matmul_add_bn.onnx", "onnx.helper", 1, 1, {},
          "MatMul([3,6] x [6,4]) -> Add([4]) -> BN: folded into one Gemm", ops_after={"MatMul": 0, "Add": 0, "Gemm": 1})

    # Decomposed BN after a Conv: Mul([1,C,1,1]) -> Add([C,1,1]).
    c = 5
    nodes, inits, conv_out, _ = conv_bn_parts(prefix="", nd=2, cin=3, cout=c, rng=r)
    nodes += [helper.make_node("Mul", [conv_out, "s"], ["Ms"], name="mul"),
              helper.make_node("Add", ["t", "Ms"], ["Y"], name="add")]
    inits = [t for t in inits if t.name in ("W", "Bc")]
    inits += [tensor("s", r.uniform(0.5, 1.5, (1, c, 1, 1)) * np.where(r.random((1, c, 1, 1)) < 0.3, -1, 1)),
              tensor("t", r.normal(0, 0.3, (c, 1, 1)))]
    g_ = helper.make_graph(nodes, "conv_mul_add", [vi("X", f32, ["N", 3, 6, 6])], [vi("Y", f32, ["N", c, 6, 6])], inits)
    save(make_model(g_, 15), "conv_mul_add.onnx")
    entry("conv_mul_add.onnx", "onnx.helper", 0, 0, {},
          "Conv -> Mul([1,C,1,1]) -> Add([C,1,1]) (a BN exported as Mul + Add): both fold into the Conv",
          ops_after={"Mul": 0, "Add": 0, "Conv": 1})

    # Mul by [C] against NCHW with W == C: broadcasts along W, not per channel -> kept.
    c = 4
    nodes, inits, conv_out, _ = conv_bn_parts(prefix="", nd=2, cin=3, cout=c, spatial=4, rng=r)
    nodes.append(helper.make_node("Mul", [conv_out, "s"], ["Y"], name="mul"))
    inits = [t for t in inits if t.name in ("W", "Bc")] + [tensor("s", r.uniform(0.5, 1.5, c))]
    g_ = helper.make_graph(nodes, "skip_mul_broadcast_w", [vi("X", f32, ["N", 3, 4, 4])], [vi("Y", f32, ["N", c, 4, 4])], inits)
    save(make_model(g_, 15), "skip_mul_broadcast_w.onnx")
    entry("skip_mul_broadcast_w.onnx", "onnx.helper", 0, 0, {},
          "Conv (4 channels, 4x4) -> Mul([4]): the constant lines up with W, not C -> kept",
          ops_after={"Mul": 1}, missed_other={"BroadcastNotPerChannel": 1})

    # Forward folds: BN -> Conv without padding (folds), with padding (kept).
    for name, pads, folded in [("bn_conv_nopad.onnx", 0, True), ("skip_bn_conv_pad.onnx", 1, False)]:
        cin, cout = 3, 4
        bn, bi = bn_nodes("", "X", "N0", cin, name="bn")
        nodes = [bn, helper.make_node("Conv", ["N0", "W", "Bc"], ["Y"], name="conv", **conv_attrs(2, pad=pads))]
        sp_out = 6 if pads else 4
        g_ = helper.make_graph(nodes, name[:-5], [vi("X", f32, ["N", cin, 6, 6])], [vi("Y", f32, ["N", cout, sp_out, sp_out])],
                               [tensor("W", conv_weight(cout, cin, [3, 3], r)), tensor("Bc", r.normal(0, 0.2, cout))] + bi)
        save(make_model(g_, 15), name)
        if folded:
            entry(name, "onnx.helper", 1, 1, {}, "BN -> Conv(pads 0): folded forward into the Conv's weights and bias")
        else:
            entry(name, "onnx.helper", 1, 0, {"PaddingBreaksForwardFold": 1},
                  "BN -> Conv(pads 1): padded zeros are not shifted by the BN -> kept")

    # Chain: BN -> Conv -> BN ends as one Conv.
    cin, cout = 3, 5
    bn0, bi0 = bn_nodes("a_", "X", "N0", cin, name="bn_a")
    bn1, bi1 = bn_nodes("b_", "C", "Y", cout, name="bn_b")
    nodes = [bn0, helper.make_node("Conv", ["N0", "W"], ["C"], name="conv", **conv_attrs(2, pad=0)), bn1]
    g_ = helper.make_graph(nodes, "chain_bn_conv_bn", [vi("X", f32, ["N", cin, 6, 6])], [vi("Y", f32, ["N", cout, 4, 4])],
                           [tensor("W", conv_weight(cout, cin, [3, 3], r))] + bi0 + bi1)
    save(make_model(g_, 15), "chain_bn_conv_bn.onnx")
    entry("chain_bn_conv_bn.onnx", "onnx.helper", 2, 2, {}, "BN -> Conv(no pad, no bias) -> BN: both fold, one Conv left",
          ops_after={"Conv": 1})

    # IR >= 4: an initializer also listed as a graph input may be overridden -> kept.
    m = simple_conv_bn("skip_overridable_initializer", nd=2, cin=3, cout=4, sp=5)
    m.graph.input.append(vi("scale", f32, [4]))
    m.ir_version = 8
    save(m, "skip_overridable_initializer.onnx")
    entry("skip_overridable_initializer.onnx", "onnx.helper", 1, 0, {"OverridableInitializer": 1},
          "IR 8, the BN scale is an initializer and a graph input (callers may override it) -> kept "
          "(folded with --assume-constant-inputs)")


def torch_pattern_fixtures():
    import contextlib
    import io

    import torch
    import torch.nn as nn

    torch.manual_seed(SEED + 3)
    trng = np.random.default_rng(SEED + 4)

    def randomize(model):
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    st = bn_stats(mod.num_features, trng)
                    mod.weight.copy_(torch.from_numpy(st["scale"]).float())
                    mod.bias.copy_(torch.from_numpy(st["B"]).float())
                    mod.running_mean.copy_(torch.from_numpy(st["mean"]).float())
                    mod.running_var.copy_(torch.from_numpy(st["var"]).float())
        return model.eval()

    class DeconvLinear(nn.Module):
        """ConvTranspose2d + BatchNorm2d, then Linear + BatchNorm1d."""
        def __init__(self):
            super().__init__()
            self.deconv = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
            self.bn2d = nn.BatchNorm2d(6)
            self.fc = nn.Linear(6 * 8 * 8, 10)
            self.bn1d = nn.BatchNorm1d(10)

        def forward(self, x):
            y = torch.relu(self.bn2d(self.deconv(x)))
            return self.bn1d(self.fc(torch.flatten(y, 1)))

    # The legacy exporter with its default settings (constant folding on,
    # eval mode): it fuses Conv+BN itself but neither of these.
    name = "torch_deconv_linear_bn.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(randomize(DeconvLinear()), (torch.randn(2, 4, 4, 4),), str(OUT / name), dynamo=False)
    m = onnx.load(str(OUT / name))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("BatchNormalization") == 2 and "ConvTranspose" in ops and "Gemm" in ops, ops
    entry(name, "torch-legacy", 2, 2, {},
          "PyTorch legacy export, default settings: ConvTranspose2d(4,6,groups=2)+BatchNorm2d+ReLU, "
          "Linear(384,10)+BatchNorm1d; no BatchNormalization may be left", ops_after={"BatchNormalization": 0})

    # The dynamo exporter without optimisation: the conv bias is computed by
    # Expand(CastLike(0, X), Shape(W)) when the Conv has none.
    name = "torch_dynamo_nobias_bn.onnx"
    model = randomize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(OUT / name), dynamo=True, optimize=False)
    m = onnx.load(str(OUT / name))
    site = os.path.dirname(os.path.dirname(torch.__file__)) + os.sep
    for node in m.graph.node:
        for prop in node.metadata_props:
            prop.value = prop.value.replace(str(OUT.parent) + os.sep, "").replace(site, "<site-packages>/")
    (OUT / name).write_bytes(m.SerializeToString())   # weights inline (onnx.load read any external data)
    if (OUT / (name + ".data")).exists():
        (OUT / (name + ".data")).unlink()
    assert sum(n.op_type == "BatchNormalization" for n in m.graph.node) == 1
    entry(name, "torch-dynamo", 1, 1, {},
          "Conv2d(3,8,3,bias=False)+BN2d via the dynamo exporter with optimize=False: weights and the "
          "computed zero bias reach the BN through small constant subgraphs (fold-constants)")


# --------------------------------------------------------------------------
# onnxruntime check and manifest
# --------------------------------------------------------------------------


def ort_runs(path: Path) -> tuple[bool, str]:
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        # same settings as Tests/CrossCheck/crosscheck.py (no onnxruntime graph rewrites)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {}
        for i in sess.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in i.shape]
            ty = i.type
            if ty == "tensor(bool)":
                feeds[i.name] = np.array(True)
            elif ty == "tensor(float16)":
                feeds[i.name] = rng.standard_normal(shape).astype(np.float16)
            elif ty == "tensor(double)":
                feeds[i.name] = rng.standard_normal(shape)
            elif ty == "tensor(bfloat16)":
                feeds[i.name] = rng.standard_normal(shape).astype(BF16)
            else:
                feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        sess.run(None, feeds)
        return True, ""
    except Exception as e:  # noqa: BLE001
        return False, str(e).splitlines()[0][:200]


def ort_compat_runs(path: Path) -> tuple[bool, str]:
    """Can onnxruntime run the model after crosscheck.py's ort_compat_rewrite
    (double/bfloat16 -> float32, BN-6 -> BN-7)?"""
    import importlib.util
    import tempfile

    spec = importlib.util.spec_from_file_location(
        "crosscheck", OUT.parent / "Tests" / "CrossCheck" / "crosscheck.py")
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    with tempfile.TemporaryDirectory() as d:
        dst = cc.ort_compat_rewrite(path, Path(d) / "compat.onnx")
        return ort_runs(dst)


def count_main_bn(path: Path) -> int:
    m = onnx.load(str(path), load_external_data=False)
    return sum(n.op_type == "BatchNormalization" for n in m.graph.node)


def unnamed_nodes_fixture():
    """Three Conv -> BN -> Relu blocks and a Conv -> BN whose Conv output an
    Add also reads, with no node names at all (as hand-built and converted
    models often are): reports name nodes `OpType#index` by their position
    in this file, however the folds move them. Its own generator, so the
    file does not depend on the order fixtures are made in."""
    rng = np.random.default_rng(SEED + 13)
    nodes, inits, x, cin = [], [], "X", 3
    for i in range(4):
        k = 3 if i < 3 else 1
        inits.append(tensor(f"W{i}", conv_weight(4, cin, (k, k), rng)))
        nodes.append(helper.make_node("Conv", [x, f"W{i}"], [f"c{i}"], **conv_attrs(2, k=k, pad=(k - 1) // 2)))
        stats = bn_stats(4, rng)
        for key in ("scale", "B", "mean", "var"):
            inits.append(tensor(f"{key}{i}", stats[key]))
        nodes.append(helper.make_node("BatchNormalization", [f"c{i}", f"scale{i}", f"B{i}", f"mean{i}", f"var{i}"], [f"n{i}"]))
        if i < 3:
            nodes.append(helper.make_node("Relu", [f"n{i}"], [f"r{i}"]))
            x, cin = f"r{i}", 4
    nodes.append(helper.make_node("Add", ["n3", "c3"], ["Y"]))
    g = helper.make_graph(nodes, "unnamed_nodes", [vi("X", np.float32, ["N", 3, 8, 8])],
                          [vi("Y", np.float32, ["N", 4, 8, 8])], inits)
    save(make_model(g), "unnamed_nodes.onnx")
    entry("unnamed_nodes.onnx", "onnx.helper", 4, 3, {"ProducerHasOtherUses": 1},
          "no node has a name: reports must number them as the file does (BNs #1, #4, #7, #10)")


def main():
    os.chdir(OUT.parent)
    random.seed(SEED)
    torch_fixtures()
    helper_fixtures()
    bad_fixtures()
    pattern_fixtures()
    torch_pattern_fixtures()
    unnamed_nodes_fixture()
    ort_notes = {}
    for e in MANIFEST:
        p = OUT / e["file"]
        assert count_main_bn(p) == e["bn_total"], e["file"]
        ok, why = ort_runs(p)
        e["ort"] = ok
        if not ok:
            ort_notes[e["file"]] = why
            e["ort_compat"], _ = ort_compat_runs(p)
    order = ["file", "source", "bn_total", "folded", "kept", "subgraph_bn", "ops_after", "missed_other", "ort",
             "ort_compat", "description"]
    manifest = [{k: e[k] for k in order if k in e} for e in MANIFEST] + BAD_MANIFEST
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    for f, why in ort_notes.items():
        print(f"onnxruntime cannot run {f}: {why}", file=sys.stderr)
    print(f"wrote {len(MANIFEST)} fixtures and {len(BAD_MANIFEST)} bad inputs to {OUT}")


if __name__ == "__main__":
    main()
