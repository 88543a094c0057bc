"""Exact references for kiln's 8-bit integer products, shared by the int8 tests.

Why not onnxruntime alone: on x86 CPUs without VNNI (AVX2, or AVX-512 without avx512_vnni),
onnxruntime's u8 x s8 GEMM kernels (MatMulInteger, QLinearMatMul, QLinearConv, QGemm,
MatMulIntegerToFloat, DynamicQuantizeMatMul, QAttention, and the fused QDQ forms) add pairs of
u8*s8 products with vpmaddubsw, which saturates at int16: 255*127*2 = 64770 does not fit, so its
integer results are off by whatever was clipped. kiln accumulates exactly, so there onnxruntime is
no oracle. The other type pairs (u8 x u8, s8 x s8, s8 x u8) and CPUs with VNNI (vpdpbusd adds four
products into int32 without saturation) are exact in onnxruntime.

So the oracle here is numpy: integer products summed in int64 (then wrapped to the ops' int32),
followed by the op's requantisation in float32, in the order kiln and onnxruntime's MLAS use:
float32(acc) * float32 multiplier, clamped to the output range less the zero point, rounded half
to even, plus the zero point. Every other node of a model (QLinearAdd, Softmax, pooling, float
ops, ...) has no integer product and is computed by onnxruntime one node at a time (`exact_run`),
so a whole quantised model gets a reference in which only the saturating kernels are replaced.

`ORT_U8S8_EXACT` tells whether onnxruntime's u8 x s8 products are exact on this CPU; tests use it
only to decide whether onnxruntime is a second oracle next to numpy, never to change what kiln is
checked against."""
import os
import platform

import numpy as np
import onnx
from onnx import helper, numpy_helper

from util import cpu_flags

MS = "com.microsoft"


def _ort_u8s8_exact():
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True  # ARM's MLAS kernels widen to 16 bits or use sdot/udot/usmmla: exact
    flags = cpu_flags()
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


ORT_U8S8_EXACT = _ort_u8s8_exact()


def ort_exact(adt, bdt):
    """Whether onnxruntime's integer product of adt x bdt is exact on this CPU. (Convolutions
    record both orders: onnxruntime's ConvInteger multiplies weights by the image's columns,
    QLinearConv the image's rows by the weights, so either operand can be its u8 side.)"""
    return ORT_U8S8_EXACT or not (np.dtype(adt) == np.uint8 and np.dtype(bdt) == np.int8)


# ---- integer products ----

def _i64(v):
    return np.asarray(v).astype(np.int64)


def matmul_int(a, b, za=None, zb=None):
    """MatMulInteger: (a - za) @ (b - zb) summed in int64 and wrapped to int32. za: scalar or one
    per row of a; zb: scalar or one per column of b. Batched / 1-D operands as numpy.matmul."""
    a, b = _i64(a), _i64(b)
    if za is not None:
        za = _i64(za)
        if za.size > 1:
            za = za.reshape(-1, 1)
        a = a - za
    if zb is not None:
        zb = _i64(zb)
        if zb.size > 1 and b.ndim >= 2:
            zb = zb.reshape(zb.shape[-1] if zb.ndim else 1)
        b = b - zb
    return np.matmul(a, b).astype(np.int32)


def conv_pads(in_sp, k_sp, strides, dil, pads, auto_pad):
    n = len(in_sp)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(n):
            out = -(-in_sp[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (k_sp[i] - 1) * dil[i] + 1 - in_sp[i])
            lo = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            begin.append(lo)
            end.append(total - lo)
        return begin + end
    if auto_pad == "VALID" or pads is None:
        return [0] * (2 * n)
    return list(pads)


def conv_int(x, w, xz=0, wz=0, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET"):
    """ConvInteger sums in int64 (padding reads as xz, so it adds 0), any number of spatial dims.
    wz: scalar or one per output channel."""
    x, w = _i64(x), _i64(w)
    nsp = x.ndim - 2
    strides = list(strides or [1] * nsp)
    dil = list(dilations or [1] * nsp)
    ksp = w.shape[2:]
    p = conv_pads(x.shape[2:], ksp, strides, dil, pads, auto_pad)
    xd = x - _i64(xz).reshape(())
    wz = _i64(wz)
    wd = w - (wz.reshape((-1,) + (1,) * (w.ndim - 1)) if wz.size > 1 else wz.reshape(()))
    xp = np.pad(xd, [(0, 0), (0, 0)] + [(p[i], p[i + nsp]) for i in range(nsp)])
    out_sp = [(xp.shape[2 + i] - dil[i] * (ksp[i] - 1) - 1) // strides[i] + 1 for i in range(nsp)]
    N, M, Cg = x.shape[0], w.shape[0], w.shape[1]
    Mg = M // group
    y = np.zeros((N, M) + tuple(out_sp), np.int64)
    for g in range(group):
        xs = xp[:, g * Cg:(g + 1) * Cg]
        wg = wd[g * Mg:(g + 1) * Mg]
        for kidx in np.ndindex(*ksp):
            sl = tuple(slice(kidx[i] * dil[i], kidx[i] * dil[i] + strides[i] * (out_sp[i] - 1) + 1, strides[i])
                       for i in range(nsp))
            patch = xs[(slice(None), slice(None)) + sl]  # N, Cg, *out
            wk = wg[(slice(None), slice(None)) + tuple(kidx)]  # Mg, Cg
            y[:, g * Mg:(g + 1) * Mg] += np.tensordot(patch, wk, axes=([1], [1])).transpose(
                (0, nsp + 1) + tuple(range(1, nsp + 1)))
    return y.astype(np.int32)


def requant(acc, mult, zp, dt):
    """float32(acc) * mult (float32), clamped to [lo - zp, hi - zp], rounded half to even, + zp."""
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    z = int(np.asarray(zp).reshape(-1)[0]) if zp is not None else 0
    r = np.asarray(acc).astype(np.int32).astype(np.float32) * np.asarray(mult, np.float32)
    r = np.minimum(np.maximum(r, np.float32(lo - z)), np.float32(hi - z))
    return (np.rint(r).astype(np.int32) + z).astype(dt)


def _f32(v):
    return np.asarray(v, np.float32)


def dynamic_quantize(x):
    """DynamicQuantizeLinear's uint8 quantisation of x (range widened to include 0)."""
    x = _f32(x)
    lo, hi = min(np.float32(0), x.min()), max(np.float32(0), x.max())
    scale = np.float32(1) if hi == lo else np.float32((hi - lo) / np.float32(255))
    z = np.float32(np.clip(np.rint(np.float32(0) - lo / scale), 0, 255))
    v = np.minimum(np.maximum(x / scale, np.float32(0) - z), np.float32(255) - z)
    return (np.rint(v) + z).astype(np.uint8), np.float32(scale), np.uint8(z)


# ---- exact implementations of the ops with integer products ----

def _col(v, n):
    """a per-column (or single) float32 vector broadcast over n columns"""
    v = _f32(v).reshape(-1)
    return np.broadcast_to(v, (n,)) if v.size == 1 else v


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _get(ins, i):
    return ins[i] if i < len(ins) else None


def op_matmul_integer(node, ins):
    return [matmul_int(ins[0], ins[1], _get(ins, 2), _get(ins, 3))], (ins[0].dtype, ins[1].dtype)


def op_qlinear_matmul(node, ins):
    a, as_, az, b, bs, bz, ys, yz = ins
    acc = matmul_int(a, b, az, bz)
    n = acc.shape[-1]
    mult = (_f32(as_).reshape(()) * _col(bs, n) / _f32(ys).reshape(())).astype(np.float32)
    return [requant(acc, mult, yz, yz.dtype)], (a.dtype, b.dtype)


def _conv_attrs(node):
    return dict(strides=_attr(node, "strides", None), pads=_attr(node, "pads", None),
                dilations=_attr(node, "dilations", None), group=_attr(node, "group", 1),
                auto_pad=(lambda v: v.decode() if isinstance(v, bytes) else v)(_attr(node, "auto_pad", "NOTSET")))


def op_conv_integer(node, ins):
    x, w = ins[0], ins[1]
    xz, wz = _get(ins, 2), _get(ins, 3)
    return [conv_int(x, w, 0 if xz is None else xz, 0 if wz is None else wz, **_conv_attrs(node))], \
        [(x.dtype, w.dtype), (w.dtype, x.dtype)]


def op_qlinear_conv(node, ins):
    x, xs, xz, w, ws, wz, ys, yz = ins[:8]
    b = _get(ins, 8)
    acc = conv_int(x, w, xz, wz, **_conv_attrs(node)).astype(np.int64)
    M = w.shape[0]
    shape = (1, M) + (1,) * (x.ndim - 2)
    if b is not None:
        acc = acc + _i64(b).reshape(shape)
    mult = (_f32(xs).reshape(()) * _col(ws, M) / _f32(ys).reshape(())).astype(np.float32).reshape(shape)
    return [requant(acc.astype(np.int32), mult, yz, yz.dtype)], [(x.dtype, w.dtype), (w.dtype, x.dtype)]


def op_qgemm(node, ins):
    a, as_, az, b, bs, bz = ins[:6]
    c, ys, yz = _get(ins, 6), _get(ins, 7), _get(ins, 8)
    if _attr(node, "transA", 0):
        a = a.T
    if _attr(node, "transB", 0):
        b = b.T
    acc = matmul_int(a, b, az, bz).astype(np.int64)
    if c is not None:
        acc = acc + _i64(c)
    acc = acc.astype(np.int32)  # wrapped as the int32 accumulator
    n = acc.shape[-1]
    scale = (np.float32(_attr(node, "alpha", 1.0)) * _f32(as_).reshape(()) * _col(bs, n)).astype(np.float32)
    if ys is not None:
        scale = (scale / _f32(ys).reshape(())).astype(np.float32)
    if yz is None:
        return [(acc.astype(np.float32) * scale).astype(np.float32)], (a.dtype, b.dtype)
    return [requant(acc, scale, yz, yz.dtype)], (a.dtype, b.dtype)


def _mm_to_float(a, az, as_, b, bz, bs, bias):
    acc = matmul_int(a, b, az, bz)
    n = acc.shape[-1]
    y = acc.astype(np.float32) * (np.float32(as_) * _col(bs, n)).astype(np.float32)
    if bias is not None:
        y = y + _f32(bias)
    return y.astype(np.float32)


def op_matmul_integer_to_float(node, ins):
    a, b, as_, bs = ins[:4]
    az, bz, bias = _get(ins, 4), _get(ins, 5), _get(ins, 6)
    return [_mm_to_float(a, az, _f32(as_).reshape(()), b, bz, bs, bias)], (a.dtype, b.dtype)


def op_dynamic_quantize_matmul(node, ins):
    a, b, bs = ins[:3]
    bz, bias = _get(ins, 3), _get(ins, 4)
    aq, s, z = dynamic_quantize(a)
    return [_mm_to_float(aq, z, s, b, bz, bs, bias)], (np.dtype(np.uint8), b.dtype)


def op_qattention(node, ins):
    """The QKV projection exactly in numpy; the float attention core by onnxruntime's Attention
    fed that projection through identity weights (x @ I + bias is exact in float)."""
    x, w, bias, is_, ws = ins[:5]
    mask, iz, wz, past = _get(ins, 5), _get(ins, 6), _get(ins, 7), _get(ins, 8)
    qkv = _mm_to_float(x, iz, _f32(is_).reshape(()), w, wz, ws, None)
    D3 = qkv.shape[-1]
    eye = np.eye(D3, dtype=np.float32)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    names = ["qkv", "eye", "bias", "mask" if mask is not None else "", "past" if past is not None else ""]
    while names and names[-1] == "":
        names.pop()
    vals = {"qkv": qkv, "eye": eye, "bias": _f32(bias), "mask": mask, "past": past}
    outs = [o for o in node.output]
    n = helper.make_node("Attention", names, [f"o{i}" if o else "" for i, o in enumerate(outs)], domain=MS, **attrs)
    res = _ort_node(n, [(k, vals[k] if k else None) for k in names], {},
                    [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    return res, (x.dtype, w.dtype)


EXACT_OPS = {
    ("", "MatMulInteger"): op_matmul_integer,
    ("", "QLinearMatMul"): op_qlinear_matmul,
    ("", "ConvInteger"): op_conv_integer,
    ("", "QLinearConv"): op_qlinear_conv,
    (MS, "QGemm"): op_qgemm,
    (MS, "MatMulIntegerToFloat"): op_matmul_integer_to_float,
    (MS, "DynamicQuantizeMatMul"): op_dynamic_quantize_matmul,
    (MS, "QAttention"): op_qattention,
}


# ---- one node through onnxruntime ----

def _ort_node(node, inputs, inits, opsets):
    """node run alone by onnxruntime (no graph optimisations). inputs: [(name, array or None)]."""
    import onnxruntime as ort
    vis, feeds = [], {}
    for name, v in inputs:
        if not name or name in inits or name in feeds:
            continue
        v = np.asarray(v)
        vis.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape))
        feeds[name] = v
    outs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    g = helper.make_graph([node], "g", vis, outs,
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    res = s.run(None, feeds)
    it = iter(res)
    return [next(it) if o else None for o in node.output]


def exact_run(model, feeds):
    """Runs model node by node: the integer-product ops (EXACT_OPS) in exact numpy, every other
    node alone through onnxruntime. Returns (graph outputs, list of (a dtype, b dtype) of the
    integer products computed)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    g = model.graph
    vals = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    const = set(vals)
    vals.update({k: np.asarray(v) for k, v in feeds.items()})
    const -= set(feeds)
    opsets = list(model.opset_import)
    products = []
    for node in g.node:
        dom = "" if node.domain in ("", "ai.onnx") else node.domain
        if node.op_type == "Constant" and dom == "":
            const.add(node.output[0])
            vals[node.output[0]] = numpy_helper.to_array(_attr(node, "value", None))
            continue
        ins = [vals[i] if i else None for i in node.input]
        fn = EXACT_OPS.get((dom, node.op_type))
        if fn is not None:
            outs, types = fn(node, ins)
            for t in (types if isinstance(types, list) else [types]):
                products.append(tuple(np.dtype(d) for d in t))
        else:
            inits = {i: vals[i] for i in node.input if i and i in const}
            outs = _ort_node(node, [(i, vals[i] if i else None) for i in node.input], inits, opsets)
        for name, v in zip(node.output, outs):
            if name:
                vals[name] = v
    return [vals[o.name] for o in g.output], products


def ort_exact_for(products):
    return all(ort_exact(a, b) for a, b in products)


def check_int8(model, feeds, rtol=1e-5, atol=1e-6):
    """kiln's outputs against exact_run's (integers bit for bit, floats within rtol / atol), and
    against onnxruntime's as well where its integer products are exact. Returns kiln's outputs."""
    from util import assert_same, run_kiln, run_ort
    got = run_kiln(model, feeds)
    want, products = exact_run(model, feeds)
    assert products, "no integer product was checked"
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_same(g, w, rtol, atol, what=f"output {i} vs numpy")
    if ort_exact_for(products):
        for i, (g, w) in enumerate(zip(got, run_ort(model, feeds))):
            assert_same(g, w, rtol, atol, what=f"output {i} vs onnxruntime")
    return got
