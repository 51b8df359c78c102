#!/usr/bin/env python3
"""Compare bnfold's reference runtime with onnxruntime on single-operator models.

Usage (from the repository root, in the cross-check venv, after `swift build`):

    .venv-crosscheck/bin/python Tests/CrossCheck/runtime_oracle.py --refrun .build/debug/RefRun

For every case below: build a one-node model with onnx.helper, run it with
onnxruntime on seeded random inputs, then run the same model with the inputs
stored as initializers through `RefRun IN OUT` (which writes the outputs as the
initializers of OUT) and compare.

Tolerances:
* layout/selection operators (exact=True: Transpose, Slice, MaxPool, nearest
  Resize, ...) move values without arithmetic: the outputs must be identical;
* float32 arithmetic: max|a - b| <= 1e-5 * max|a| -- both runtimes round each
  product/sum in float32 (or better), and for the dot products here (K <= 54
  terms of magnitude <= 1) the difference of two such evaluations is a few
  hundred ulp of the output scale at most, far below 1e-5 (~170 ulp of 1)
  times max|a| only when the outputs are O(1) -- which the seeded U(-1, 1)
  inputs make them; the rule is the one Tests/CrossCheck/crosscheck.py uses;
* float64: max|a - b| <= 1e-12 * max|a|.

One line per case, then "N passed, N failed"; exit code 1 if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

F, D, I64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64
NP = {F: np.float32, D: np.float64, I64: np.int64}


def case(name, op, inputs, attrs=None, opset=17, outputs=1, exact=False, consts=None):
    """inputs: list of (shape, type) for random inputs, or None for an omitted optional input;
    consts: {input position: numpy array} for inputs given as fixed values (shapes, axes...)."""
    return dict(name=name, op=op, inputs=inputs, attrs=attrs or {}, opset=opset, outputs=outputs,
                exact=exact, consts=consts or {})


CASES = [
    # Sizes large enough that the runtime splits the work over its threads
    # (gemm by rows or columns, im2col by channel, groups, elementwise ranges).
    case("Conv 2d large (split gemm + im2col)", "Conv", [([1, 16, 32, 32], F), ([32, 16, 3, 3], F), ([32], F)],
         dict(pads=[1, 1, 1, 1])),
    case("Conv pointwise large", "Conv", [([1, 32, 24, 24], F), ([64, 32, 1, 1], F)]),
    case("Conv many groups (split by group)", "Conv", [([2, 8, 16, 16], F), ([8, 2, 3, 3], F), ([8], F)],
         dict(group=4, strides=[2, 1], pads=[0, 1, 2, 1])),
    case("Add large per-channel broadcast", "Add", [([1, 64, 32, 32], F), ([1, 64, 1, 1], F)]),
    case("Mul large same shape", "Mul", [([2, 32, 32, 32], F), ([2, 32, 32, 32], F)]),
    case("Div large broadcast both", "Div", [([4, 1, 64, 64], F), ([1, 8, 1, 64], F)]),
    case("Relu large", "Relu", [([1, 64, 64, 64], F)], exact=True),
    case("MaxPool large 3x3/2", "MaxPool", [([1, 32, 56, 56], F)],
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), exact=True),
    case("AveragePool large", "AveragePool", [([1, 16, 40, 40], F)],
         dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1)),
    case("BatchNormalization large", "BatchNormalization",
         [([2, 64, 32, 32], F), ([64], F), ([64], F), ([64], F), ([64], "var")]),
    case("Gemm large", "Gemm", [([64, 512], F), ([256, 512], F), ([256], F)], dict(transB=1)),
    case("Conv 2d group stride pads dilations", "Conv", [([2, 4, 9, 8], F), ([6, 2, 3, 2], F), ([6], F)],
         dict(group=2, strides=[2, 1], pads=[1, 0, 2, 1], dilations=[2, 1])),
    case("Conv 2d SAME_UPPER", "Conv", [([1, 3, 7, 6], F), ([4, 3, 3, 4], F)], dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    case("Conv 2d SAME_LOWER", "Conv", [([1, 3, 5, 6], F), ([2, 3, 2, 3], F)], dict(auto_pad="SAME_LOWER")),
    case("Conv 1d depthwise", "Conv", [([1, 3, 10], F), ([3, 1, 3], F), ([3], F)], dict(group=3, pads=[1, 1])),
    case("Conv 3d", "Conv", [([1, 2, 4, 5, 4], F), ([3, 2, 2, 3, 2], F)], dict(strides=[1, 2, 1], pads=[1, 0, 1, 0, 1, 1])),
    # (onnxruntime's CPU provider has no double Conv; MatMul/Gemm cover dgemm.)
    case("MatMul double", "MatMul", [([2, 3, 4], D), ([4, 5], D)]),
    case("Gemm double", "Gemm", [([3, 4], D), ([5, 4], D), ([5], D)], dict(transB=1)),
    case("ConvTranspose 2d", "ConvTranspose", [([1, 3, 4, 5], F), ([3, 2, 3, 3], F), ([2], F)],
         dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 0])),
    case("ConvTranspose grouped dilated", "ConvTranspose", [([2, 4, 3, 4], F), ([4, 3, 2, 3], F)],
         dict(group=2, strides=[1, 2], dilations=[2, 1])),
    case("ConvTranspose output_shape", "ConvTranspose", [([1, 2, 3, 3], F), ([2, 2, 3, 3], F)],
         dict(strides=[2, 2], output_shape=[6, 6])),
    case("ConvTranspose SAME_UPPER", "ConvTranspose", [([1, 2, 3, 4], F), ([2, 3, 3, 3], F)],
         dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    case("ConvTranspose SAME_LOWER", "ConvTranspose", [([1, 2, 3, 4], F), ([2, 3, 3, 3], F)],
         dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    case("BatchNormalization", "BatchNormalization",
         [([2, 3, 4, 5], F), ([3], F), ([3], F), ([3], F), ([3], "var")], dict(epsilon=1e-3)),
    case("Gemm transA transB C row", "Gemm", [([7, 4], F), ([5, 7], F), ([1, 5], F)],
         dict(transA=1, transB=1, alpha=0.75, beta=-1.5)),
    case("Gemm C column", "Gemm", [([4, 7], F), ([7, 5], F), ([4, 1], F)]),
    case("MatMul batched broadcast", "MatMul", [([2, 1, 3, 4], F), ([3, 4, 2], F)]),
    case("MatMul 1-D", "MatMul", [([4], F), ([2, 4, 3], F)]),
    case("Add broadcast", "Add", [([2, 3, 4], F), ([3, 1], F)]),
    case("Sub broadcast", "Sub", [([3, 1, 2], F), ([1, 4, 1], F)]),
    case("Mul scalar", "Mul", [([2, 3], F), ([], F)]),
    case("Div broadcast", "Div", [([2, 3, 4], F), ([4], "pos")]),
    case("Add double", "Add", [([2, 3], D), ([3], D)]),
    case("Relu", "Relu", [([3, 4], F)], exact=True),
    case("LeakyRelu", "LeakyRelu", [([3, 4], F)], dict(alpha=0.3)),
    case("Sigmoid", "Sigmoid", [([3, 4], F)]),
    case("Tanh", "Tanh", [([3, 4], F)]),
    case("HardSigmoid", "HardSigmoid", [([3, 4], F)], dict(alpha=0.3, beta=0.4)),
    case("HardSwish", "HardSwish", [([3, 4], F)]),
    case("Clip", "Clip", [([3, 4], F)], consts={1: np.array(-0.5, np.float32), 2: np.array(0.25, np.float32)}, exact=True),
    case("Softmax axis 1", "Softmax", [([2, 3, 4], F)], dict(axis=1)),
    case("Softmax-11 axis 1", "Softmax", [([2, 3, 4], F)], dict(axis=1), opset=11),
    case("Flatten", "Flatten", [([2, 3, 4], F)], dict(axis=2), exact=True),
    case("Reshape", "Reshape", [([2, 3, 4], F)], consts={1: np.array([0, -1, 2], np.int64)}, exact=True),
    case("Transpose", "Transpose", [([2, 3, 4], F)], dict(perm=[2, 0, 1]), exact=True),
    case("Concat", "Concat", [([2, 1, 3], F), ([2, 2, 3], F)], dict(axis=-2), exact=True),
    case("Split", "Split", [([2, 5], F)], dict(axis=1), consts={1: np.array([2, 3], np.int64)}, outputs=2, exact=True),
    case("Slice negative step", "Slice", [([2, 3, 4], F)], exact=True,
         consts={1: np.array([1, -1], np.int64), 2: np.array([3, -100], np.int64), 3: np.array([1, 2], np.int64),
                 4: np.array([1, -2], np.int64)}),
    case("Gather", "Gather", [([2, 3, 4], F)], dict(axis=1), consts={1: np.array([[2, -3], [0, 1]], np.int64)}, exact=True),
    case("Unsqueeze", "Unsqueeze", [([2, 3], F)], consts={1: np.array([0, -1], np.int64)}, exact=True),
    case("Squeeze", "Squeeze", [([1, 3, 1], F)], consts={1: np.array([2], np.int64)}, exact=True),
    case("Expand", "Expand", [([3, 1], F)], consts={1: np.array([2, 1, 4], np.int64)}, exact=True),
    case("Pad reflect", "Pad", [([2, 4], F)], dict(mode="reflect"), consts={1: np.array([1, 2, 0, 1], np.int64)}, exact=True),
    case("Pad constant", "Pad", [([2, 3], F)], consts={1: np.array([0, 1, 2, 0], np.int64), 2: np.array(1.5, np.float32)},
         exact=True),
    case("Pad edge", "Pad", [([2, 3], F)], dict(mode="edge"), consts={1: np.array([1, 1, 1, 1], np.int64)}, exact=True),
    case("Cast to float16", "Cast", [([3, 4], "wide")], dict(to=TensorProto.FLOAT16), exact=True),
    case("Cast to int64", "Cast", [([3, 4], "wide")], dict(to=TensorProto.INT64), exact=True),
    case("MaxPool ceil pads", "MaxPool", [([1, 2, 7, 6], F)],
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1), exact=True),
    case("MaxPool dilated", "MaxPool", [([1, 1, 7, 7], F)], dict(kernel_shape=[2, 2], dilations=[2, 3], pads=[1, 1, 0, 0]),
         exact=True),
    case("MaxPool SAME_UPPER", "MaxPool", [([1, 2, 5, 5], F)], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
         exact=True),
    case("AveragePool include pad", "AveragePool", [([1, 2, 5, 6], F)],
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1], count_include_pad=1)),
    case("AveragePool ceil exclude pad", "AveragePool", [([2, 1, 6, 7], F)],
         dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 0, 0], ceil_mode=1)),
    case("AveragePool 1d", "AveragePool", [([1, 3, 10], F)], dict(kernel_shape=[4], strides=[3], pads=[1, 2])),
    case("GlobalAveragePool", "GlobalAveragePool", [([2, 3, 4, 5], F)]),
    case("GlobalMaxPool", "GlobalMaxPool", [([2, 3, 4, 5], F)], exact=True),
    case("ReduceMean", "ReduceMean", [([2, 3, 4], F)], dict(axes=[-1, 0], keepdims=0), opset=13),
    case("ReduceSum", "ReduceSum", [([2, 3, 4], F)], consts={1: np.array([1], np.int64)}, opset=13),
    case("Resize nearest scales", "Resize", [([1, 1, 2, 3], F), None], dict(mode="nearest"),
         consts={2: np.array([1, 1, 2, 1.5], np.float32)}, exact=True),
    case("Resize linear half_pixel", "Resize", [([1, 2, 3, 5], F), None, None], dict(mode="linear"),
         consts={3: np.array([1, 2, 7, 4], np.int64)}),
    case("Resize linear align_corners", "Resize", [([1, 1, 3, 4], F), None, None],
         dict(mode="linear", coordinate_transformation_mode="align_corners"), consts={3: np.array([1, 1, 5, 7], np.int64)}),
    case("Resize cubic", "Resize", [([1, 1, 4, 4], F), None], dict(mode="cubic"),
         consts={2: np.array([1, 1, 1.5, 2], np.float32)}),
    case("Resize cubic exclude_outside", "Resize", [([1, 1, 4, 5], F), None],
         dict(mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5), consts={2: np.array([1, 1, 2, 0.6], np.float32)}),
    case("Resize nearest asymmetric floor", "Resize", [([1, 1, 3, 4], F), None, None],
         dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
         consts={3: np.array([1, 1, 7, 3], np.int64)}, exact=True),
    case("Resize linear pytorch_half_pixel", "Resize", [([1, 1, 3, 5], F), None, None],
         dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"), consts={3: np.array([1, 1, 1, 7], np.int64)}),
    case("Resize linear half_pixel_symmetric", "Resize", [([1, 1, 4, 5], F), None],
         dict(mode="linear", coordinate_transformation_mode="half_pixel_symmetric"),
         consts={2: np.array([1, 1, 1.7, 0.8], np.float32)}, opset=19),
    case("Resize tf_crop_and_resize", "Resize", [([1, 1, 4, 4], F), None, None],
         dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-1.0),
         consts={1: np.array([0, 0, 0.4, 0.6, 1, 1, 0.6, 1.2], np.float32), 3: np.array([1, 1, 3, 3], np.int64)}),
    case("Resize nearest round_prefer_ceil", "Resize", [([1, 1, 4, 5], F), None, None],
         dict(mode="nearest", nearest_mode="round_prefer_ceil"), consts={3: np.array([1, 1, 7, 3], np.int64)}, exact=True),
    case("Resize-10 nearest", "Resize", [([1, 1, 2, 3], F)], dict(mode="nearest"),
         consts={1: np.array([1, 1, 2.5, 2], np.float32)}, opset=10, exact=True),
    case("Resize-10 linear", "Resize", [([1, 1, 3, 3], F)], dict(mode="linear"),
         consts={1: np.array([1, 1, 2, 1.5], np.float32)}, opset=10),
    case("Resize axes sizes not_larger", "Resize", [([1, 1, 4, 6], F), None, None],
         dict(mode="linear", axes=[2, 3], keep_aspect_ratio_policy="not_larger"), consts={3: np.array([6, 6], np.int64)},
         opset=19),
    case("Upsample-7 linear", "Upsample", [([1, 1, 2, 3], F)], dict(mode="linear", scales=[1.0, 1.0, 2.0, 2.0]), opset=7),
    case("Split num_outputs", "Split", [([2, 5], F)], dict(axis=1, num_outputs=2), outputs=2, opset=18, exact=True),
    case("Upsample-9 nearest", "Upsample", [([1, 1, 2, 3], F)], dict(mode="nearest"),
         consts={1: np.array([1, 1, 2, 2], np.float32)}, opset=9, exact=True),
    # Operators added for the backend node suite (Kernels/Math.swift, Kernels/TensorOps.swift).
    case("Sqrt", "Sqrt", [([3, 4], "pos")]),
    case("Exp", "Exp", [([3, 4], F)]),
    case("Log", "Log", [([3, 4], "pos")]),
    case("Reciprocal", "Reciprocal", [([3, 4], "pos")]),
    case("Erf", "Erf", [([3, 4], F)]),
    case("Neg int64", "Neg", [([3, 4], "int")], exact=True),
    case("Abs", "Abs", [([3, 4], F)], exact=True),
    case("Sign", "Sign", [([3, 4], F)], exact=True),
    case("Ceil", "Ceil", [([3, 4], "wide")], exact=True),
    case("Floor", "Floor", [([3, 4], "wide")], exact=True),
    case("Round", "Round", [([3, 4], "wide")], exact=True),
    case("Sin", "Sin", [([3, 4], F)]),
    case("Cos", "Cos", [([3, 4], F)]),
    case("Tan", "Tan", [([3, 4], F)]),
    case("Atan", "Atan", [([3, 4], F)]),
    case("Elu", "Elu", [([3, 4], F)], dict(alpha=0.7)),
    case("Selu", "Selu", [([3, 4], F)]),
    case("Softplus", "Softplus", [([3, 4], "wide")]),
    case("Softsign", "Softsign", [([3, 4], F)]),
    case("Gelu tanh", "Gelu", [([3, 4], F)], dict(approximate="tanh"), opset=20),
    case("Gelu", "Gelu", [([3, 4], F)], opset=20),
    case("PRelu broadcast", "PRelu", [([2, 3, 4], F), ([3, 1], F)]),
    case("Pow", "Pow", [([3, 4], "pos"), ([3, 4], F)]),
    case("Pow int exponent", "Pow", [([3, 4], F)], consts={1: np.array(3, np.int64)}),
    case("Equal int64 broadcast", "Equal", [([3, 4], "int"), ([4], "int")], exact=True),
    case("Less", "Less", [([3, 4], F), ([3, 1], F)], exact=True),
    case("LessOrEqual", "LessOrEqual", [([3, 4], "int"), ([1], "int")], exact=True),
    case("Greater", "Greater", [([2, 3], F), ([3], F)], exact=True),
    case("GreaterOrEqual", "GreaterOrEqual", [([3, 4], "int"), ([3, 4], "int")], exact=True),
    case("And", "And", [([3, 4], "bool"), ([4], "bool")], exact=True),
    case("Or", "Or", [([3, 4], "bool"), ([3, 1], "bool")], exact=True),
    case("Xor", "Xor", [([3, 4], "bool"), ([3, 4], "bool")], exact=True),
    case("Not", "Not", [([3, 4], "bool")], exact=True),
    case("Where broadcast", "Where", [([2, 1, 4], "bool"), ([3, 4], F), ([1], F)], exact=True),
    case("Mod int64", "Mod", [([3, 4], "int"), ([4], "int")], exact=True),
    case("Mod fmod float", "Mod", [([3, 4], "wide"), ([3, 4], "pos")], dict(fmod=1)),
    case("Max", "Max", [([3, 4], F), ([4], F), ([3, 1], F)], exact=True),
    case("Min int64", "Min", [([3, 4], "int"), ([4], "int")], exact=True),
    case("Sum", "Sum", [([3, 4], F), ([4], F), ([3, 4], F)]),
    case("Mean", "Mean", [([3, 4], F), ([3, 1], F)]),
    case("Range float", "Range", [], consts={0: np.array(1.5, np.float32), 1: np.array(-2, np.float32),
                                             2: np.array(-0.75, np.float32)}),
    case("Range int64", "Range", [], consts={0: np.array(10, np.int64), 1: np.array(-3, np.int64),
                                             2: np.array(-4, np.int64)}, exact=True),
    case("LogSoftmax", "LogSoftmax", [([2, 3, 4], F)], dict(axis=1)),
    case("LogSoftmax-11", "LogSoftmax", [([2, 3, 4], F)], dict(axis=1), opset=11),
    case("ArgMax keepdims", "ArgMax", [([3, 4, 5], F)], dict(axis=1), exact=True),
    case("ArgMin last index", "ArgMin", [([3, 4], "int")], dict(axis=-1, keepdims=0, select_last_index=1), exact=True),
    case("Trilu lower k", "Trilu", [([2, 3, 4], F)], dict(upper=0), consts={1: np.array(1, np.int64)}, opset=14, exact=True),
    case("Trilu upper", "Trilu", [([4, 3], F)], opset=14, exact=True),
    case("GatherElements", "GatherElements", [([3, 4], F)], dict(axis=1),
         consts={1: np.array([[0, 3], [-1, 1], [2, 2]], np.int64)}, exact=True),
    case("Tile", "Tile", [([2, 3], F)], consts={1: np.array([2, 3], np.int64)}, exact=True),
    case("CumSum exclusive reverse", "CumSum", [([3, 4], F)], dict(exclusive=1, reverse=1),
         consts={1: np.array(1, np.int64)}, opset=14),
    case("DepthToSpace DCR", "DepthToSpace", [([1, 8, 2, 3], F)], dict(blocksize=2), exact=True),
    case("DepthToSpace CRD", "DepthToSpace", [([2, 8, 2, 3], F)], dict(blocksize=2, mode="CRD"), exact=True),
    case("SpaceToDepth", "SpaceToDepth", [([2, 2, 4, 6], F)], dict(blocksize=2), exact=True),
    case("LayerNormalization", "LayerNormalization", [([2, 3, 4], F), ([3, 4], F), ([4], F)], dict(axis=1), outputs=3),
    case("InstanceNormalization", "InstanceNormalization", [([2, 3, 4, 5], F), ([3], F), ([3], F)]),
    case("ReduceProd", "ReduceProd", [([2, 3, 4], F)], dict(axes=[1], keepdims=0), opset=13),
    case("ReduceL2", "ReduceL2", [([2, 3, 4], F)], dict(axes=[0, 2]), opset=13),
    case("ReduceLogSumExp", "ReduceLogSumExp", [([2, 3, 4], "wide")], dict(axes=[2]), opset=13),
]


def random_input(rng, shape, kind):
    if kind == "var":
        return rng.uniform(0.1, 2.0, shape).astype(np.float32)
    if kind == "pos":
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if kind == "int":
        # Non-zero integers (divisors of Mod), both signs.
        return (rng.integers(1, 10, shape) * rng.choice([-1, 1], shape)).astype(np.int64)
    if kind == "bool":
        return rng.random(shape) < 0.5
    if kind == "wide":
        return rng.uniform(-300.0, 300.0, shape).astype(np.float32)
    return rng.uniform(-1.0, 1.0, shape).astype(NP[kind])


def build(c, rng):
    names, feeds, inits, graph_inputs = [], {}, [], []
    count = max(len(c["inputs"]), max(c["consts"], default=-1) + 1)
    for i in range(count):
        name = f"in{i}"
        if i in c["consts"]:
            names.append(name)
            inits.append(numpy_helper.from_array(c["consts"][i], name))
        elif i < len(c["inputs"]) and c["inputs"][i] is not None:
            shape, kind = c["inputs"][i]
            value = random_input(rng, shape, kind)
            names.append(name)
            feeds[name] = value
            graph_inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), shape))
        else:
            names.append("")
    outputs = [f"out{k}" for k in range(c["outputs"])]
    node = helper.make_node(c["op"], names, outputs, name="n", **c["attrs"])
    graph = helper.make_graph([node], "oracle", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outputs],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", c["opset"])], ir_version=8)
    return model, feeds


def run_case(c, refrun, tmp, rng):
    model, feeds = build(c, rng)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    # The same model with the inputs stored as initializers, for RefRun.
    stored = onnx.ModelProto()
    stored.CopyFrom(model)
    del stored.graph.input[:]
    for name, value in feeds.items():
        stored.graph.initializer.append(numpy_helper.from_array(value, name))
    src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
    onnx.save(stored, src)
    if dst.exists():
        dst.unlink()
    proc = subprocess.run([refrun, str(src), str(dst)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return False, f"RefRun exit {proc.returncode}: {proc.stderr.strip()}"
    got = {t.name: numpy_helper.to_array(t) for t in onnx.load(dst).graph.initializer}
    for k, want in enumerate(expected):
        have = got.get(f"out{k}")
        if have is None:
            return False, f"output {k} missing"
        if have.shape != want.shape or have.dtype != want.dtype:
            return False, f"output {k}: {have.dtype}{list(have.shape)}, onnxruntime {want.dtype}{list(want.shape)}"
        a, b = want.astype(np.float64), have.astype(np.float64)
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        if c["exact"]:
            if not np.array_equal(a, b):
                return False, f"output {k} differs (max |a-b| = {diff:g}); exact match required"
        else:
            rtol = 1e-12 if want.dtype == np.float64 else 1e-5
            if diff > rtol * scale:
                return False, f"output {k}: max |a-b| = {diff:g} > {rtol:g} * {scale:g}"
    return True, ""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refrun", required=True, help="the RefRun executable (swift build)")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for index, c in enumerate(CASES):
            if args.filter not in c["name"]:
                continue
            rng = np.random.default_rng(1000 + index)
            try:
                ok, why = run_case(c, args.refrun, tmp, rng)
            except Exception as error:  # noqa: BLE001 - report and go on
                ok, why = False, f"{type(error).__name__}: {error}"
            print(f"{'ok  ' if ok else 'FAIL'} {c['name']}" + ("" if ok else f": {why}"))
            passed += ok
            failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
