"""Models written once against two back ends: Onnx emits an inference model with onnx.helper, Ref
evaluates the same model in float64 numpy with reverse-mode gradients of its own (written here, apart
from kiln's graph builder), so a training run of kiln can be checked step by step against numpy."""
import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_erf = np.vectorize(math.erf)


# ---- the ONNX back end ----

class Onnx:
    def __init__(self, params):
        self.params, self.nodes, self.inits, self.n = params, [], [], 0

    def _out(self):
        self.n += 1
        return "t%d" % self.n

    def _node(self, op, ins, **attrs):
        out = self._out()
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def const(self, value, dtype=np.float32):
        self.n += 1
        name = "c%d" % self.n
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def p(self, name):
        return name

    def gemm(self, x, w, b):  # w is [out, in] as torch's Linear
        return self._node("Gemm", [x, w, b], transB=1)

    def linear3(self, x, w, b):  # [B, S, in] @ w^T + b
        return self._node("Add", [self._node("MatMul", [x, self._node("Transpose", [w], perm=[1, 0])]), b])

    def relu(self, x):
        return self._node("Relu", [x])

    def conv(self, x, w, b):
        return self._node("Conv", [x, w, b], pads=[1, 1, 1, 1])

    def bn(self, x, s, b, mean, var):
        return self._node("BatchNormalization", [x, s, b, mean, var], epsilon=1e-5)

    def maxpool(self, x):
        return self._node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])

    def gap(self, x):
        return self._node("Flatten", [self._node("GlobalAveragePool", [x])])

    def embed(self, table, ids):
        return self._node("Gather", [table, ids])

    def add(self, a, b):
        return self._node("Add", [a, b])

    def layernorm(self, x, g, b):
        return self._node("LayerNormalization", [x, g, b], axis=-1, epsilon=1e-5)

    def heads(self, x, shape):  # [B, S, D] -> [B, H, S, dk]
        return self._node("Transpose", [self._node("Reshape", [x, self.const(shape, np.int64)])], perm=[0, 2, 1, 3])

    def merge(self, x, shape):  # [B, H, S, dk] -> [B, S, D]
        return self._node("Reshape", [self._node("Transpose", [x], perm=[0, 2, 1, 3]), self.const(shape, np.int64)])

    def attn_scores(self, q, k, scale):
        kt = self._node("Transpose", [k], perm=[0, 1, 3, 2])
        return self._node("Softmax", [self._node("Mul", [self._node("MatMul", [q, kt]), self.const(scale)])], axis=-1)

    def matmul(self, a, b):
        return self._node("MatMul", [a, b])

    def gelu(self, x):
        e = self._node("Erf", [self._node("Div", [x, self.const(math.sqrt(2.0))])])
        return self._node("Mul", [self._node("Mul", [x, self._node("Add", [e, self.const(1.0)])]), self.const(0.5)])

    def first_token(self, x):
        return self._node("Gather", [x, self.const(0, np.int64)], axis=1)

    def model(self, out, x_name, x_dtype, x_shape, y_shape):
        self.nodes.append(helper.make_node("Identity", [out], ["logits"]))
        inits = self.inits + [numpy_helper.from_array(v.astype(np.float32), k) for k, v in self.params.items()]
        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info(x_name, x_dtype, x_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, y_shape)], initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


# ---- the numpy back end (float64, reverse mode) ----

class V:
    def __init__(self, value, parents=(), back=None):
        self.value, self.parents, self.back, self.grad = value, parents, back, None


def _unbroadcast(g, shape):
    while g.ndim > len(shape):
        g = g.sum(0)
    for i, s in enumerate(shape):
        if s == 1 and g.shape[i] != 1:
            g = g.sum(i, keepdims=True)
    return g


class Ref:
    def __init__(self, params, inputs):
        self.vars = {k: V(np.asarray(v, np.float64)) for k, v in params.items()}
        self.inputs = inputs

    def p(self, name):
        return self.vars[name]

    def gemm(self, x, w, b):
        return V(x.value @ w.value.T + b.value, (x, w, b),
                 lambda g: (g @ w.value, g.T @ x.value, g.sum(0)))

    def linear3(self, x, w, b):
        return V(x.value @ w.value.T + b.value, (x, w, b),
                 lambda g: (g @ w.value, np.einsum("bso,bsi->oi", g, x.value), g.sum((0, 1))))

    def relu(self, x):
        return V(np.maximum(x.value, 0), (x,), lambda g: (g * (x.value > 0),))

    def conv(self, x, w, b):  # 3x3, stride 1, pad 1, via im2col
        n, c, h, wd = x.value.shape
        xp = np.pad(x.value, ((0, 0), (0, 0), (1, 1), (1, 1)))
        cols = np.stack([xp[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3)], 2)  # n c 9 h w
        out = np.einsum("ocq,ncqhw->nohw", w.value.reshape(-1, c, 9), cols)

        def back(g):
            gw = np.einsum("nohw,ncqhw->ocq", g, cols).reshape(w.value.shape)
            gcols = np.einsum("nohw,ocq->ncqhw", g, w.value.reshape(-1, c, 9))
            gxp = np.zeros_like(xp)
            for q, (i, j) in enumerate((i, j) for i in range(3) for j in range(3)):
                gxp[:, :, i:i + h, j:j + wd] += gcols[:, :, q]
            return gxp[:, :, 1:-1, 1:-1], gw, g.sum((0, 2, 3))
        return V(out + b.value[None, :, None, None], (x, w, b), back)

    def bn(self, x, s, b, mean, var):
        inv = 1.0 / np.sqrt(var.value + 1e-5)
        xh = (x.value - mean.value[None, :, None, None]) * inv[None, :, None, None]
        return V(xh * s.value[None, :, None, None] + b.value[None, :, None, None], (x, s, b),
                 lambda g: (g * (s.value * inv)[None, :, None, None], (g * xh).sum((0, 2, 3)), g.sum((0, 2, 3))))

    def maxpool(self, x):
        n, c, h, w = x.value.shape
        blocks = x.value.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        arg = blocks.argmax(-1)

        def back(g):
            gb = np.zeros_like(blocks)
            np.put_along_axis(gb, arg[..., None], g[..., None], -1)
            return (gb.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w),)
        return V(blocks.max(-1), (x,), back)

    def gap(self, x):
        n, c, h, w = x.value.shape
        return V(x.value.mean((2, 3)), (x,), lambda g: (np.broadcast_to(g[:, :, None, None] / (h * w), x.value.shape),))

    def embed(self, table, ids):
        idx = self.inputs[ids] if isinstance(ids, str) else ids

        def back(g):
            gt = np.zeros_like(table.value)
            np.add.at(gt, idx, g)
            return (gt,)
        return V(table.value[idx], (table,), back)

    def add(self, a, b):
        return V(a.value + b.value, (a, b), lambda g: (_unbroadcast(g, a.value.shape), _unbroadcast(g, b.value.shape)))

    def layernorm(self, x, gm, bt):
        mu = x.value.mean(-1, keepdims=True)
        xc = x.value - mu
        inv = 1.0 / np.sqrt((xc ** 2).mean(-1, keepdims=True) + 1e-5)
        xh = xc * inv

        def back(g):
            gx_h = g * gm.value
            d = x.value.shape[-1]
            gx = inv / d * (d * gx_h - gx_h.sum(-1, keepdims=True) - xh * (gx_h * xh).sum(-1, keepdims=True))
            red = tuple(range(x.value.ndim - 1))
            return gx, (g * xh).sum(red), g.sum(red)
        return V(xh * gm.value + bt.value, (x, gm, bt), back)

    def heads(self, x, shape):
        return V(x.value.reshape(shape).transpose(0, 2, 1, 3), (x,),
                 lambda g: (g.transpose(0, 2, 1, 3).reshape(x.value.shape),))

    def merge(self, x, shape):
        return V(x.value.transpose(0, 2, 1, 3).reshape(shape), (x,),
                 lambda g: (g.reshape(x.value.transpose(0, 2, 1, 3).shape).transpose(0, 2, 1, 3),))

    def attn_scores(self, q, k, scale):
        s = (q.value @ k.value.transpose(0, 1, 3, 2)) * scale
        e = np.exp(s - s.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)

        def back(g):
            gs = p * (g - (g * p).sum(-1, keepdims=True)) * scale
            return gs @ k.value, gs.transpose(0, 1, 3, 2) @ q.value
        return V(p, (q, k), back)

    def matmul(self, a, b):
        return V(a.value @ b.value, (a, b),
                 lambda g: (g @ b.value.swapaxes(-1, -2), a.value.swapaxes(-1, -2) @ g))

    def gelu(self, x):
        v = x.value
        cdf = 0.5 * (1 + _erf(v / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)
        return V(v * cdf, (x,), lambda g: (g * (cdf + v * pdf),))

    def first_token(self, x):
        def back(g):
            gx = np.zeros_like(x.value)
            gx[:, 0] = g
            return (gx,)
        return V(x.value[:, 0], (x,), back)


def ref_step(build, params, x, labels):
    """Loss (cross entropy, mean) and gradients of every parameter, in float64."""
    r = Ref(params, {"x": x})
    xin = V(np.asarray(x, np.float64)) if x.dtype != np.int64 else "x"
    logits = build(r, xin)
    z = logits.value - logits.value.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    n = len(labels)
    loss = -logp[np.arange(n), labels].mean()
    g = np.exp(logp)
    g[np.arange(n), labels] -= 1
    logits.grad = g / n
    order, seen = [], set()

    def visit(v):  # topological order (the graphs here are a few dozen nodes deep)
        if id(v) in seen or not isinstance(v, V):
            return
        seen.add(id(v))
        for p in v.parents:
            visit(p)
        order.append(v)
    visit(logits)
    for v in reversed(order):
        if v.grad is None or v.back is None:
            continue
        for p, gp in zip(v.parents, v.back(v.grad)):
            p.grad = gp if p.grad is None else p.grad + gp
    return loss, {k: (v.grad if v.grad is not None else np.zeros_like(v.value)) for k, v in r.vars.items()}


def adamw64(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01):
    p = p * (1 - lr * wd)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = np.sqrt(v) / math.sqrt(1 - beta2 ** step) + eps
    return p - lr / (1 - beta1 ** step) * m / denom, m, v


# ---- the three models ----

def mlp(o, x):
    h = o.relu(o.gemm(x, o.p("fc1.w"), o.p("fc1.b")))
    h = o.relu(o.gemm(h, o.p("fc2.w"), o.p("fc2.b")))
    return o.gemm(h, o.p("fc3.w"), o.p("fc3.b"))


def mlp_params(rng):
    def lin(i, j):
        return rng.uniform(-1, 1, (j, i)) / math.sqrt(i), rng.uniform(-1, 1, j) / math.sqrt(i)
    p = {}
    for k, (i, j) in (("fc1", (16, 32)), ("fc2", (32, 32)), ("fc3", (32, 5))):
        p[k + ".w"], p[k + ".b"] = lin(i, j)
    return p


def cnn(o, x):
    h = o.relu(o.bn(o.conv(x, o.p("c1.w"), o.p("c1.b")), o.p("bn.s"), o.p("bn.b"), o.p("bn.mean"), o.p("bn.var")))
    h = o.maxpool(h)
    h = o.relu(o.conv(h, o.p("c2.w"), o.p("c2.b")))
    return o.gemm(o.gap(h), o.p("fc.w"), o.p("fc.b"))


def cnn_params(rng):
    return {"c1.w": rng.uniform(-1, 1, (6, 3, 3, 3)) / 5, "c1.b": rng.uniform(-.1, .1, 6),
            "bn.s": 1 + 0.1 * rng.standard_normal(6), "bn.b": 0.1 * rng.standard_normal(6),
            "bn.mean": 0.1 * rng.standard_normal(6), "bn.var": 1 + 0.2 * rng.random(6),
            "c2.w": rng.uniform(-1, 1, (8, 6, 3, 3)) / 7, "c2.b": rng.uniform(-.1, .1, 8),
            "fc.w": rng.uniform(-1, 1, (4, 8)) / 3, "fc.b": rng.uniform(-.1, .1, 4)}


CNN_FROZEN = ["bn.mean", "bn.var"]
B_, S_, D_, H_, V_ = 4, 8, 16, 2, 30


def bert(o, ids):
    x = o.layernorm(o.add(o.embed(o.p("emb"), ids), o.p("pos")), o.p("ln.g"), o.p("ln.b"))
    for l in range(2):
        pre = "l%d." % l

        def lin(t, n):
            return o.linear3(t, o.p(pre + n + ".w"), o.p(pre + n + ".b"))
        q, k, v = (o.heads(lin(x, n), [B_, S_, H_, D_ // H_]) for n in "qkv")
        ctx = o.merge(o.matmul(o.attn_scores(q, k, 1 / math.sqrt(D_ // H_)), v), [B_, S_, D_])
        x = o.layernorm(o.add(x, lin(ctx, "o")), o.p(pre + "ln1.g"), o.p(pre + "ln1.b"))
        x = o.layernorm(o.add(x, lin(o.gelu(lin(x, "f1")), "f2")), o.p(pre + "ln2.g"), o.p(pre + "ln2.b"))
    return o.gemm(o.first_token(x), o.p("cls.w"), o.p("cls.b"))


def bert_params(rng):
    p = {"emb": 0.5 * rng.standard_normal((V_, D_)), "pos": 0.1 * rng.standard_normal((S_, D_)),
         "ln.g": 1 + 0.1 * rng.standard_normal(D_), "ln.b": 0.1 * rng.standard_normal(D_),
         "cls.w": rng.uniform(-1, 1, (3, D_)) / 4, "cls.b": rng.uniform(-.1, .1, 3)}
    for l in range(2):
        for n, (i, j) in (("q", (D_, D_)), ("k", (D_, D_)), ("v", (D_, D_)), ("o", (D_, D_)), ("f1", (D_, 2 * D_)),
                          ("f2", (2 * D_, D_))):
            p["l%d.%s.w" % (l, n)] = rng.uniform(-1, 1, (j, i)) / math.sqrt(i)
            p["l%d.%s.b" % (l, n)] = rng.uniform(-.1, .1, j)
        for n in ("ln1", "ln2"):
            p["l%d.%s.g" % (l, n)] = 1 + 0.1 * rng.standard_normal(D_)
            p["l%d.%s.b" % (l, n)] = 0.1 * rng.standard_normal(D_)
    return p
