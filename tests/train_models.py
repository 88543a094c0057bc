"""Hand-written training artifacts that follow the training contract (docs/training.md), for testing
the training runtime without the graph builder, and numpy versions of torch.optim's AdamW and SGD."""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, inits=(), params=None, loss="mse", output="y"):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    if params is not None:
        for k, v in (("kiln.train.params", ",".join(params)), ("kiln.train.loss", loss), ("kiln.train.output", output)):
            p = m.metadata_props.add()
            p.key, p.value = k, v
    onnx.checker.check_model(m)
    return m


def _vi(name, shape, dt=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dt, shape)


def linear_artifacts(out_dir, n, d, k, W, b):
    """y = x @ W + b with an MSE loss (mean over every element, as torch's MSELoss), gradients by
    hand: dL/dy = 2 (y - labels) / (n k), W_grad = x^T dL/dy, b_grad = sum over rows."""
    os.makedirs(out_dir, exist_ok=True)
    fwd = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    loss = [helper.make_node("Sub", ["y", "labels"], ["diff"]), helper.make_node("Mul", ["diff", "diff"], ["sq"]),
            helper.make_node("ReduceMean", ["sq"], ["loss"], keepdims=0)]
    scale = numpy_helper.from_array(np.array(2.0 / (n * k), np.float32), "scale")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes0")
    bwd = [helper.make_node("Mul", ["diff", "scale"], ["dy"]), helper.make_node("Transpose", ["x"], ["xt"]),
           helper.make_node("MatMul", ["xt", "dy"], ["W_grad"]),
           helper.make_node("ReduceSum", ["dy", "axes0"], ["b_grad"], keepdims=0)]
    ins = [_vi("x", [n, d]), _vi("labels", [n, k]), _vi("W", [d, k]), _vi("b", [k])]
    train = _model(fwd + loss + bwd, ins, [_vi("loss", []), _vi("W_grad", [d, k]), _vi("b_grad", [k])],
                   [scale, axes], params=["W", "b"])
    ev = _model(fwd + loss, ins, [_vi("loss", []), _vi("y", [n, k])])
    inf = _model(fwd, [_vi("x", [n, d])], [_vi("y", [n, k])],
                 [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")])
    for name, m in (("training_model.onnx", train), ("eval_model.onnx", ev), ("inference_model.onnx", inf)):
        onnx.save(m, os.path.join(out_dir, name))


def passthrough_artifacts(out_dir, shapes):
    """One parameter P_i per shape with loss = sum_i sum(P_i * G_i): each gradient is exactly the
    input G_i, so optimizer tests choose the gradients."""
    os.makedirs(out_dir, exist_ok=True)
    nodes, ins, outs, parts = [], [], [_vi("loss", [])], []
    for i, s in enumerate(shapes):
        nodes += [helper.make_node("Mul", ["P%d" % i, "G%d" % i], ["pg%d" % i]),
                  helper.make_node("ReduceSum", ["pg%d" % i], ["s%d" % i], keepdims=0),
                  helper.make_node("Identity", ["G%d" % i], ["P%d_grad" % i])]
        ins.append(_vi("G%d" % i, list(s)))
        outs.append(_vi("P%d_grad" % i, list(s)))
        parts.append("s%d" % i)
    nodes.append(helper.make_node("Sum", parts, ["loss"]))
    ins += [_vi("P%d" % i, list(s)) for i, s in enumerate(shapes)]
    train = _model(nodes, ins, outs, params=["P%d" % i for i in range(len(shapes))], output="")
    onnx.save(train, os.path.join(out_dir, "training_model.onnx"))


def adamw_ref(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01):
    """torch.optim.AdamW's single-tensor update in float32 (scalars as torch rounds them)."""
    f = np.float32
    p = p * f(1.0 - lr * wd)
    w = f(1.0 - beta1)
    m = m + w * (g - m) if w < 0.5 else g - (g - m) * (f(1) - w)
    v = v * f(beta2) + f(1.0 - beta2) * g * g
    bc1, bc2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    denom = np.sqrt(v) / f(bc2 ** 0.5) + f(eps)
    p = p + f(-(lr / bc1)) * (m / denom)
    return p.astype(f), m.astype(f), v.astype(f)


def sgd_ref(p, g, buf, lr, momentum=0.0, dampening=0.0, wd=0.0, nesterov=False):
    f = np.float32
    if wd:
        g = g + f(wd) * p
    if momentum:
        buf = g.copy() if buf is None else buf * f(momentum) + f(1.0 - dampening) * g
        g = g + f(momentum) * buf if nesterov else buf
    return (p + f(-lr) * g).astype(f), buf
