"""Misc-family ops: LinearAttention and CausalConvWithState (opset 27, checked against
onnxruntime), FlexAttention and the training optimisers (checked against the onnx reference
evaluator, which onnxruntime lacks kernels for) and ImageDecoder (BMP / PNM built here, checked
against the pixels they were built from)."""
import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import util  # noqa: E402


def ref_run(model, feeds):
    return ReferenceEvaluator(model).run(None, feeds)


def compare(got, want, rtol, atol):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        util.assert_same(g, np.asarray(w), rtol, atol, what=f"output {i}")


# ---------------------------------------------------------------- LinearAttention

def la_case(rng, rule, B=2, T=5, Hq=4, Hkv=2, dk=8, dv=6, past=True, decay_per_key=False,
            beta_shared=False, dtype=np.float32, scale=None, threads=2):
    q = util.rand(rng, (B, T, Hq * dk), dtype, -1, 1)
    k = util.rand(rng, (B, T, Hkv * dk), dtype, -1, 1) / np.asarray(np.sqrt(dk), dtype)
    v = util.rand(rng, (B, T, Hkv * dv), dtype, -1, 1)
    ins = [("q", q), ("k", k), ("v", v)]
    ins.append(("past", util.rand(rng, (B, Hkv, dk, dv), dtype, -0.5, 0.5)) if past else ("", None))
    if rule in ("gated", "gated_delta"):
        ins.append(("decay", util.rand(rng, (B, T, Hkv * dk if decay_per_key else Hkv), dtype, -1, 0)))
    else:
        ins.append(("", None))
    if rule in ("delta", "gated_delta"):
        ins.append(("beta", util.rand(rng, (B, T, 1 if beta_shared else Hkv), dtype, 0, 1)))
    while ins and ins[-1][0] == "":
        ins.pop()
    attrs = dict(q_num_heads=Hq, kv_num_heads=Hkv, update_rule=rule)
    if scale is not None:
        attrs["scale"] = scale
    m = util.node_model("LinearAttention", ins, ["y", "state"], attrs=attrs, opset=27)
    feeds = {n: a for n, a in ins if n}
    return m, feeds


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("past", [True, False])
def test_linear_attention_rules_vs_ort(rule, past):
    rng = np.random.default_rng()
    m, feeds = la_case(rng, rule, past=past)
    compare(util.run_kiln(m, feeds), util.run_ort(m, feeds), 1e-4, 1e-5)


@pytest.mark.parametrize("kw", [dict(decay_per_key=True), dict(beta_shared=True), dict(Hq=6, Hkv=1),
                                dict(scale=0.3), dict(T=1), dict(B=1, T=40, Hq=2, Hkv=2, dk=16, dv=16)])
def test_linear_attention_variants_vs_ort(kw):
    rng = np.random.default_rng()
    m, feeds = la_case(rng, "gated_delta", **kw)
    want = util.run_ort(m, feeds)
    for threads in (1, 2):
        compare(util.run_kiln(m, feeds, threads=threads), want, 1e-4, 1e-5)


def test_linear_attention_fp16_vs_reference():
    rng = np.random.default_rng()
    m, feeds = la_case(rng, "gated_delta", dtype=np.float16)
    compare(util.run_kiln(m, feeds), ref_run(m, feeds), 2e-2, 2e-2)


def test_linear_attention_bad_inputs():
    rng = np.random.default_rng()
    m, feeds = la_case(rng, "linear")
    m.graph.node[0].attribute[2].s = b"gated"  # gated without decay
    with pytest.raises(Exception, match="requires the decay input"):
        util.run_kiln(m, feeds)
    m, feeds = la_case(rng, "linear", Hq=3, Hkv=2)
    with pytest.raises(Exception, match="multiple of kv_num_heads"):
        util.run_kiln(m, feeds)


# ---------------------------------------------------------------- CausalConvWithState

def cc_case(rng, B=2, C=5, L=7, K=4, bias=True, past=True, activation=None, dtype=np.float32):
    x = util.rand(rng, (B, C, L), dtype, -1, 1)
    ins = [("x", x), ("w", util.rand(rng, (C, 1, K), dtype, -1, 1))]
    ins.append(("bias", util.rand(rng, (C,), dtype, -1, 1)) if bias else ("", None))
    ins.append(("past", util.rand(rng, (B, C, K - 1), dtype, -1, 1)) if past else ("", None))
    while ins[-1][0] == "":
        ins.pop()
    attrs = {"activation": activation} if activation else {}
    m = util.node_model("CausalConvWithState", ins, ["y", "state"], attrs=attrs, opset=27)
    return m, {n: a for n, a in ins if n}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("past", [True, False])
@pytest.mark.parametrize("activation", [None, "none", "silu", "swish"])
def test_causal_conv_vs_ort(bias, past, activation):
    rng = np.random.default_rng()
    m, feeds = cc_case(rng, bias=bias, past=past, activation=activation)
    compare(util.run_kiln(m, feeds), util.run_ort(m, feeds), 1e-5, 1e-5)


@pytest.mark.parametrize("kw", [dict(K=1), dict(L=1), dict(L=2, K=5), dict(B=3, C=64, L=300, K=4)])
def test_causal_conv_shapes_vs_ort(kw):
    rng = np.random.default_rng()
    m, feeds = cc_case(rng, activation="silu", **kw)
    want = util.run_ort(m, feeds)
    for threads in (1, 2):
        compare(util.run_kiln(m, feeds, threads=threads), want, 1e-5, 1e-5)


def test_causal_conv_fp16_vs_ort():
    rng = np.random.default_rng()
    m, feeds = cc_case(rng, activation="silu", dtype=np.float16)
    compare(util.run_kiln(m, feeds), util.run_ort(m, feeds), 2e-3, 2e-3)


def test_causal_conv_bad_inputs():
    rng = np.random.default_rng()
    m, feeds = cc_case(rng, activation="relu")
    with pytest.raises(Exception, match="activation 'relu'"):
        util.run_kiln(m, feeds)
    m, feeds = cc_case(rng)
    feeds["past"] = feeds["past"][:, :, :2].copy()
    m, _ = cc_case(rng)
    m.graph.input[3].type.tensor_type.shape.dim[2].dim_value = 2
    with pytest.raises(Exception, match="past_state"):
        util.run_kiln(m, feeds)


# ---------------------------------------------------------------- FlexAttention

def causal_score_mod(elem=TensorProto.FLOAT):
    """score_mod writing -inf above the diagonal (reads the shape, so it works for any size)."""
    c = lambda name, vals, dt=TensorProto.INT64: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=helper.make_tensor(name, dt, [len(vals)], vals))
    nodes = [
        c("zero", [0]), c("one", [1]), c("i2", [2]), c("i3", [3]), c("qs", [1, 1, -1, 1]),
        c("ks", [1, 1, 1, -1]), c("ninf", [-np.inf], elem),
        helper.make_node("Shape", ["s"], ["shp"]),
        helper.make_node("Gather", ["shp", "i2"], ["L1"]), helper.make_node("Gather", ["shp", "i3"], ["S1"]),
        helper.make_node("Squeeze", ["L1"], ["L"]), helper.make_node("Squeeze", ["S1"], ["S"]),
        helper.make_node("Squeeze", ["zero"], ["z"]), helper.make_node("Squeeze", ["one"], ["o"]),
        helper.make_node("Range", ["z", "L", "o"], ["qr"]), helper.make_node("Range", ["z", "S", "o"], ["kr"]),
        helper.make_node("Reshape", ["qr", "qs"], ["qi"]), helper.make_node("Reshape", ["kr", "ks"], ["ki"]),
        helper.make_node("GreaterOrEqual", ["qi", "ki"], ["mask"]),
        helper.make_node("Where", ["mask", "s", "ninf"], ["out"]),
    ]
    return helper.make_graph(nodes, "score_mod", [helper.make_tensor_value_info("s", elem, None)],
                             [helper.make_tensor_value_info("out", elem, None)])


def scale_mod(name, factor, elem=TensorProto.FLOAT, op="Mul"):
    k = helper.make_node("Constant", [], ["f"], value=helper.make_tensor("f", elem, [], [factor]))
    return helper.make_graph([k, helper.make_node(op, ["x", "f"], ["y"])], name,
                             [helper.make_tensor_value_info("x", elem, None)],
                             [helper.make_tensor_value_info("y", elem, None)])


def fa_model(q, k, v, **attrs):
    ins = [("Q", q), ("K", k), ("V", v)]
    return util.node_model("FlexAttention", ins, ["Y"], attrs=attrs, opset=23, domain="ai.onnx.preview"), \
        dict(Q=q, K=k, V=v)


@pytest.mark.parametrize("shape", [((2, 4, 5, 8), (2, 4, 7, 8), 8), ((1, 6, 4, 16), (1, 2, 9, 16), 12),
                                   ((2, 8, 33, 32), (2, 1, 40, 32), 32)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flex_attention_plain_vs_reference(shape, dtype):
    rng = np.random.default_rng()
    (qs, ks, ev) = shape
    q, k = util.rand(rng, qs, dtype), util.rand(rng, ks, dtype)
    v = util.rand(rng, ks[:3] + (ev,), dtype)
    m, feeds = fa_model(q, k, v)
    want = ref_run(m, feeds)
    for threads in (1, 2):
        compare(util.run_kiln(m, feeds, threads=threads), want, 1e-5, 1e-6)


def test_flex_attention_fp16_and_precision_vs_reference():
    rng = np.random.default_rng()
    q, k, v = (util.rand(rng, (1, 2, 6, 8), np.float16) for _ in range(3))
    for attrs in ({}, {"softmax_precision": TensorProto.DOUBLE}, {"softmax_precision": TensorProto.FLOAT16}):
        m, feeds = fa_model(q, k, v, scale=0.4, **attrs)
        compare(util.run_kiln(m, feeds), ref_run(m, feeds), 2e-3, 2e-3)


def test_flex_attention_mods_vs_reference():
    rng = np.random.default_rng()
    q, k, v = util.rand(rng, (2, 4, 6, 8)), util.rand(rng, (2, 2, 6, 8)), util.rand(rng, (2, 2, 6, 5))
    for attrs in ({"score_mod": causal_score_mod()}, {"prob_mod": scale_mod("p", 0.5)},
                  {"score_mod": scale_mod("s", 3.0, op="Add"), "prob_mod": scale_mod("p", 2.0)}):
        m, feeds = fa_model(q, k, v, **attrs)
        compare(util.run_kiln(m, feeds), ref_run(m, feeds), 1e-5, 1e-6)
    qd, kd, vd = (a.astype(np.float64) for a in (q, k, v))
    m, feeds = fa_model(qd, kd, vd, score_mod=causal_score_mod(TensorProto.DOUBLE))
    compare(util.run_kiln(m, feeds), ref_run(m, feeds), 1e-10, 1e-12)


def test_flex_attention_bad_inputs():
    rng = np.random.default_rng()
    m, feeds = fa_model(util.rand(rng, (1, 3, 4, 8)), util.rand(rng, (1, 2, 4, 8)), util.rand(rng, (1, 2, 4, 8)))
    with pytest.raises(Exception, match="multiple of"):
        util.run_kiln(m, feeds)
    m, feeds = fa_model(util.rand(rng, (3, 4, 8)), util.rand(rng, (3, 4, 8)), util.rand(rng, (3, 4, 8)))
    with pytest.raises(Exception, match="rank 4"):
        util.run_kiln(m, feeds)


# ---------------------------------------------------------------- training optimisers

TRAIN = "ai.onnx.preview.training"


def opt_model(op, n, per, outs_per, shapes, dtype, t, attrs):
    rng = np.random.default_rng()
    kinds = "XGVH" if per == 4 else ("XGH" if op == "Adagrad" else "XGV")
    ins = [("R", np.array(0.1, dtype)), ("T", np.array(t, np.int64))]
    for kind in kinds:
        for i in range(n):
            lo = 0.1 if kind == "H" else -2.0  # squared-gradient accumulators are positive
            ins.append((f"{kind}{i}", util.rand(rng, shapes[i], dtype, lo, 2.0)))
    outs = [f"out{o}" for o in range(n * outs_per)]
    m = util.node_model(op, ins, outs, attrs=attrs, opset=18, domain=TRAIN)
    return m, dict(ins)


@pytest.mark.parametrize("op,per,outs_per,attrs", [
    ("Adagrad", 3, 2, dict(decay_factor=0.1, epsilon=1e-5, norm_coefficient=0.01)),
    ("Adagrad", 3, 2, {}),
    ("Adam", 4, 3, dict(alpha=0.95, beta=0.9, epsilon=1e-5, norm_coefficient=0.02, norm_coefficient_post=0.1)),
    ("Adam", 4, 3, {}),
    ("Momentum", 3, 2, dict(alpha=0.9, beta=0.5, norm_coefficient=0.01, mode="standard")),
    ("Momentum", 3, 2, dict(alpha=0.9, beta=0.5, norm_coefficient=0.01, mode="nesterov")),
])
@pytest.mark.parametrize("t", [0, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizers_vs_reference(op, per, outs_per, attrs, t, dtype):
    shapes = [(3, 4), (100000,)]
    for n in (1, 2):
        m, feeds = opt_model(op, n, per, outs_per, shapes, dtype, t, attrs)
        want = [np.asarray(w).astype(dtype) for w in ref_run(m, feeds)]
        compare(util.run_kiln(m, feeds), want, 1e-5 if dtype == np.float32 else 1e-12, 1e-6)


def test_optimizers_bad_inputs():
    m, feeds = opt_model("Momentum", 1, 3, 2, [(3,)], np.float32, 1, dict(alpha=0.9, beta=0.5, mode="standard"))
    with pytest.raises(Exception, match="norm_coefficient"):
        util.run_kiln(m, feeds)
    m, feeds = opt_model("Adam", 1, 4, 3, [(3,)], np.float32, 1, {})
    m.graph.node[0].input.pop()  # a missing H makes the inputs fit no grouping
    with pytest.raises(Exception, match="4 tensors per optimised variable"):
        util.run_kiln(m, feeds)


# ---------------------------------------------------------------- ImageDecoder (BMP, PNM)

def bmp_bytes(rgb, bpp=24, top_down=False, palette=None, idx=None):
    """A BITMAPINFOHEADER BMP of rgb (H, W, 3); bpp 1/4/8 use palette (P, 3) and indices idx."""
    h, w, _ = rgb.shape
    stride = (w * bpp + 31) // 32 * 4
    rows = []
    for y in range(h):
        r = rgb[y]
        if bpp == 24:
            raw = r[:, ::-1].tobytes()
        elif bpp == 32:
            raw = np.concatenate([r[:, ::-1], np.full((w, 1), 255, np.uint8)], 1).tobytes()
        elif bpp == 16:  # 5-5-5
            v = (r[:, 0].astype(np.uint16) >> 3 << 10) | (r[:, 1].astype(np.uint16) >> 3 << 5) | (r[:, 2] >> 3)
            raw = v.astype("<u2").tobytes()
        else:
            bits = "".join(format(int(i), f"0{bpp}b") for i in idx[y])
            bits += "0" * (-len(bits) % 8)
            raw = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
        rows.append(raw + b"\0" * (stride - len(raw)))
    if not top_down:
        rows = rows[::-1]
    pal = b"" if bpp > 8 else b"".join(bytes([c[2], c[1], c[0], 0]) for c in palette)
    off = 14 + 40 + len(pal)
    data = b"".join(rows)
    hdr = b"BM" + np.array([off + len(data), 0, off], "<u4").tobytes()
    info = np.array([40, w, -h if top_down else h], "<i4").tobytes() + np.array([1, bpp], "<u2").tobytes()
    info += np.array([0, len(data), 2835, 2835, len(pal) // 4, 0], "<u4").tobytes()
    return hdr + info + pal + data


def decode(data, fmt):
    arr = np.frombuffer(data, np.uint8).copy()
    m = util.node_model("ImageDecoder", [("img", arr)], [("y", np.uint8)], attrs={"pixel_format": fmt}, opset=20)
    return util.run_kiln(m, {"img": arr})[0]


def expect(rgb, fmt):
    if fmt == "RGB":
        return rgb
    if fmt == "BGR":
        return rgb[:, :, ::-1]
    r, g, b = (rgb[:, :, i].astype(np.uint32) for i in range(3))  # Pillow's ITU-R 601-2 luma
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[:, :, None]


@pytest.mark.parametrize("fmt", ["RGB", "BGR", "Grayscale"])
@pytest.mark.parametrize("kind", ["24", "24td", "32", "16", "8", "4", "1"])
def test_image_decoder_bmp(fmt, kind):
    rng = np.random.default_rng()
    h, w = 7, 13
    if kind in ("8", "4", "1"):
        bpp = int(kind)
        palette = rng.integers(0, 256, (1 << bpp, 3)).astype(np.uint8)
        idx = rng.integers(0, 1 << bpp, (h, w))
        rgb = palette[idx]
        data = bmp_bytes(rgb, bpp, palette=palette, idx=idx)
    else:
        rgb = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        if kind == "16":
            # 5-bit channels scaled to 0..255 with rounding, so that 5-5-5 encoding is lossless
            rgb = (((rgb >> 3).astype(np.uint32) * 255 + 15) // 31).astype(np.uint8)
        data = bmp_bytes(rgb, int(kind[:2]), top_down=kind.endswith("td"))
    util.assert_same(decode(data, fmt), expect(rgb, fmt))


@pytest.mark.parametrize("fmt", ["RGB", "BGR", "Grayscale"])
@pytest.mark.parametrize("kind", ["P1", "P2", "P3", "P4", "P5", "P6", "P6-16", "P3-max1000"])
def test_image_decoder_pnm(fmt, kind):
    rng = np.random.default_rng()
    h, w = 5, 11
    header = f"{kind[:2]}\n# a comment\n{w} {h}\n".encode()
    if kind in ("P1", "P4"):
        bits = rng.integers(0, 2, (h, w))
        rgb = np.repeat(np.where(bits, 0, 255).astype(np.uint8)[:, :, None], 3, 2)
        if kind == "P1":
            body = "\n".join(" ".join(str(b) for b in row) for row in bits).encode()
        else:
            body = b"".join(np.packbits(row).tobytes() for row in bits.astype(np.uint8))
        data = header + body
    else:
        ch = 3 if kind[1] in "36" else 1
        maxval = 65535 if kind.endswith("16") else (1000 if "1000" in kind else 255)
        vals = rng.integers(0, maxval + 1, (h, w, ch))
        scaled = vals if maxval == 255 else (vals * 255 + maxval // 2) // maxval
        rgb = np.repeat(scaled, 3 // ch, 2).astype(np.uint8)
        header += f"{maxval}\n".encode()
        if kind[1] in "23":
            body = " ".join(str(v) for v in vals.ravel()).encode()
        else:
            body = vals.astype(">u2" if maxval > 255 else np.uint8).tobytes()
        data = header + body
    util.assert_same(decode(data, fmt), expect(rgb, fmt))


def test_image_decoder_errors():
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    with pytest.raises(Exception, match="ImageDecoder"):
        decode(png, "RGB")
    rgb = np.zeros((4, 4, 3), np.uint8)
    good = bmp_bytes(rgb)
    for bad in (good[:40], good[:-5], b"P6\n4 4\n255\n" + b"\0" * 10, b"P3\n2 2\n255\n1 2 3", b"XYZ"):
        with pytest.raises(Exception, match="ImageDecoder"):
            decode(bad, "RGB")
    with pytest.raises(Exception, match="pixel_format"):
        decode(good, "RGBA")
