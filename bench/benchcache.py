"""Shared by the bench model generators: cache keys (a model is regenerated
when its parameters or the script that makes it change), the empty model
they fill in place, float32 initializers, and the
Conv -> BatchNormalization -> Relu block they are made of."""
import hashlib
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper


def new_model(graph_name, ir_version, opset):
    """An empty ModelProto to fill in place (helper.make_graph / make_model
    would copy every tensor); returns (model, graph)."""
    model = onnx.ModelProto()
    model.ir_version = ir_version
    model.producer_name = "bnfold-bench"
    model.opset_import.add(domain="", version=opset)
    model.graph.name = graph_name
    return model, model.graph


def add_tensor(graph, name, array):
    """Appends a float32 initializer in place (no copy of the message)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    t = graph.initializer.add()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(array.shape)
    t.raw_data = array.tobytes()


def write_complete(path, data):
    """Writes `data` to `path` through `path.partial` and a rename: only a
    complete file is ever cached."""
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def cache_key(params, script):
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True).encode())
    with open(os.path.abspath(script), "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]

def conv_bn_relu(nodes, x, conv_prefix, bn_prefix, i):
    """Appends Conv(3x3, pad 1) -> BatchNormalization -> Relu reading `x`;
    returns the Relu's output name. Parameter names follow PyTorch's."""
    conv_out, bn_out, relu_out = f"conv{i}", f"bn{i}", f"relu{i}"
    nodes.append(helper.make_node("Conv", [x, conv_prefix + ".weight", conv_prefix + ".bias"], [conv_out],
                                  name=conv_out, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]))
    b = bn_prefix
    nodes.append(helper.make_node("BatchNormalization",
                                  [conv_out, b + ".weight", b + ".bias", b + ".running_mean", b + ".running_var"],
                                  [bn_out], name=bn_out, epsilon=1e-5))
    nodes.append(helper.make_node("Relu", [bn_out], [relu_out], name=relu_out))
    return relu_out


def cached_model_path(out_dir, prefix, key):
    """(path, cached): where the model for `key` lives in `out_dir`, and
    whether it is already there. When it is not, models of other parameters
    (same prefix) are removed first, so the cache holds one model per kind."""
    import os
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{prefix}{key}.onnx")
    if os.path.isfile(path):
        return path, True
    for name in os.listdir(out_dir):
        if name.startswith(prefix) and name.endswith(".onnx"):
            os.remove(os.path.join(out_dir, name))
    return path, False
