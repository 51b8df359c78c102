"""Shared by the bench model generators: cache keys (a model is regenerated
when its parameters or the script that makes it change) and the
Conv -> BatchNormalization -> Relu block they are made of."""
import hashlib
import json
import os

from onnx import helper


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
