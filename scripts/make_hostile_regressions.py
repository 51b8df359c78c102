"""Writes the memory- and value-class hostile models of Fuzz/regressions/
(issue 9, round two). Tiny files that ask the reference runtime for a lot;
run from the repository root: python3 scripts/make_hostile_regressions.py"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(9)
OUT = "Fuzz/regressions/"


def bn(name, x, y, c):
    inits = [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), name + "_s"),
        numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), name + "_b"),
        numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), name + "_m"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), name + "_v"),
    ]
    node = helper.make_node("BatchNormalization", [x, name + "_s", name + "_b", name + "_m", name + "_v"], [y], name=name)
    return node, inits


def out(name, elem=TensorProto.FLOAT):
    """An output of known type and unknown shape."""
    v = helper.make_tensor_value_info(name, elem, None)
    v.type.tensor_type.ClearField("shape")
    return v


def save(graph, file, opset=15):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)

    onnx.save(model, OUT + file)


# Conv 3x3 with dilation 8000 on a symbolic input: the pair check's input is
# 16001 x 16001 (256 M elements); the whole-model check runs it at 1 x 1.
w = numpy_helper.from_array(rng.normal(0, 1, (2, 1, 3, 3)).astype(np.float32), "w")
conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv", dilations=[8000, 8000])
b, inits = bn("bn", "c", "y", 2)
save(helper.make_graph([conv, b], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "H", "W"])],
                       [out("y")], [w] + inits),
     "mem-conv-dilation-8000.onnx")

# A declared input of 46000 x 46000 (2.1 G elements, 8.5 GB of float32).
save(helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 46000, 46000])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 46000, 46000])]),
     "mem-input-46000.onnx")

# Conv -> BN, plus ConstantOfShape to 10^9 elements added to a graph input
# (not constant, so fold-constants leaves it; the whole-model check would
# materialise it).
shape = numpy_helper.from_array(np.array([1000, 1000, 1000], dtype=np.int64), "shape")
w1 = numpy_helper.from_array(rng.normal(0, 1, (2, 1, 3, 3)).astype(np.float32), "w1")
nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv"),
         helper.make_node("ConstantOfShape", ["shape"], ["big"], name="cos",
                          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
         helper.make_node("Add", ["big", "s"], ["z"], name="add")]
b, inits = bn("bn", "c", "y", 2)
save(helper.make_graph(nodes + [b], "g",
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8]),
                        helper.make_tensor_value_info("s", TensorProto.FLOAT, [1])],
                       [out("y"),
                        out("z")], [shape, w1] + inits),
     "mem-constantofshape-1e9.onnx")

# 200 ConstantOfShape nodes of 2^22 elements each, all read: 3.4 GB if every
# one were materialised (fold-constants' cap was per tensor only).
nodes, outs = [], []
shape = numpy_helper.from_array(np.array([1 << 22], dtype=np.int64), "shape")
for i in range(200):
    nodes.append(helper.make_node("ConstantOfShape", ["shape"], [f"k{i}"], name=f"cos{i}",
                                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [float(i)])))
    nodes.append(helper.make_node("Mul", ["x", f"k{i}"], [f"y{i}"], name=f"mul{i}"))
    outs.append(out(f"y{i}"))
save(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], outs, [shape]),
     "mem-many-constantofshape.onnx")

# Conv -> BN, and an unrelated output: Cast(int64 max -> float16) is +inf in
# both models but 9.2e18 in the float64 reference (the ratio was NaN).
w2 = numpy_helper.from_array(rng.normal(0, 1, (2, 1, 3, 3)).astype(np.float32), "w2")
big = helper.make_tensor("big", TensorProto.INT64, [1], [2**63 - 1])
nodes = [helper.make_node("Conv", ["x", "w2"], ["c"], name="conv"),
         helper.make_node("Cast", ["big"], ["h"], name="cast", to=TensorProto.FLOAT16),
         helper.make_node("Add", ["h", "h"], ["z"], name="add16")]
b, inits = bn("bn", "c", "y", 2)
save(helper.make_graph(nodes + [b], "g",
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                       [out("y"),
                        out("z", TensorProto.FLOAT16)], [w2, big] + inits),
     "value-float16-overflow.onnx")

# Conv 3x3 with dilation 100 on a fixed 8 x 8 input: no output exists
# (an input error for validation, not a verification failure).
w3 = numpy_helper.from_array(rng.normal(0, 1, (2, 1, 3, 3)).astype(np.float32), "w3")
conv = helper.make_node("Conv", ["x", "w3"], ["c"], name="conv", dilations=[100, 100])
b, inits = bn("bn", "c", "y", 2)
graph = helper.make_graph([conv, b], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [out("y")], [w3] + inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
onnx.save(model, OUT + "arith-conv-dilation-exceeds-input.onnx")  # the checker would refuse it too
