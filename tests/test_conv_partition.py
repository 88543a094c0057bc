"""How convolutions are cut for the threads, against onnxruntime on fresh random data: products with
packed weights cut into equal runs of (column panel, row panel) pairs (runs that end inside a
column, cross images and groups), strided convolutions with narrow outputs run flat over
stride-phase planes, several images in one pass of the direct kernel (and batches too large for
one pass), with odd channel counts, pads, groups, dilations and batches; results are the same bits
at any thread count, and the partition report (KILN_DEBUG_PARTITION) describes every convolution."""
import functools
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import on_this_cpu, assert_same, node_model, rand, run_kiln, run_ort  # noqa: E402

# The direct kernels' partitions, held to direct sums' tolerances: 3x3 stride-1 shapes would
# otherwise go to the Winograd path (test_conv_winograd.py; its report is checked below).
run_kiln = functools.partial(run_kiln, winograd=False)


MS = "com.microsoft"


def model(x, w, b, attrs, op="Conv", z=None):
    inputs = [("x", x), ("w", w), ("b", b)]
    if z is not None:
        inputs.append(("z", z))
    m = node_model(op, inputs, ["y"], attrs, domain=MS if op == "FusedConv" else "",
                   initializers={"w": w, "b": b})
    feeds = {"x": x}
    if z is not None:
        feeds["z"] = z
    return m, feeds


def tol(k):
    return dict(rtol=1e-4, atol=2e-6 * np.sqrt(k) + 1e-5)


def check_threads(xs, ws, attrs, seed, threads=(1, 2, 3, 16), op="Conv", z=False):
    """ORT's result within tolerance, and the same bits from every thread count."""
    rng = np.random.default_rng(seed)
    x = rand(rng, xs)
    w = rand(rng, ws, low=-1, high=1)
    b = rand(rng, (ws[0],))
    plain = {k: v for k, v in attrs.items() if k not in ("activation", "activation_params")}
    zz = None
    if z:
        shape = run_ort(*model(x, w, b, plain))[0].shape
        zz = rand(rng, shape)
    m, feeds = model(x, w, b, attrs, op=op, z=zz)
    ref = run_kiln(m, feeds, threads=threads[0])[0]
    for t in threads[1:]:
        got = run_kiln(m, feeds, threads=t)[0]
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), f"threads={t}"
    if op == "FusedConv":
        want = run_ort(*model(x, w, b, plain))[0].astype(np.float64)
        if zz is not None:
            want = want + zz
        act = attrs.get("activation")
        if act == "Relu":
            want = np.maximum(want, 0)
        elif act == "LeakyRelu":
            want = np.where(want < 0, want * attrs["activation_params"][0], want)
        want = want.astype(np.float32)
    else:
        want = run_ort(m, feeds)[0]
    assert ref.shape == want.shape
    assert_same(ref, want, **tol(int(np.prod(ws[1:]))))


# ---- strided convolutions with narrow outputs: flat over stride-phase planes ----

STRIDED_FLAT = [
    # (x, w, attrs)
    ((1, 64, 14, 14), (64, 64, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # 14 -> 7
    ((2, 40, 28, 28), (29, 40, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # 28 -> 14, odd M
    ((3, 13, 15, 17), (13, 13, 3, 3), {"strides": [2, 2], "pads": [0, 1, 2, 0]}),  # odd sizes, pads
    ((2, 8, 19, 23), (16, 8, 5, 5), {"strides": [3, 3], "pads": [2, 2, 2, 2]}),    # stride 3
    ((1, 6, 21, 30), (12, 6, 3, 4), {"strides": [4, 2], "pads": [1, 2, 1, 1]}),    # 4 x 2, 3x4 kernel
    ((2, 10, 16, 16), (20, 10, 3, 3), {"strides": [2, 2], "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((2, 9, 17, 17), (15, 9, 3, 3), {"strides": [2, 1], "pads": [1, 1, 1, 1]}),    # stride in H only
    ((2, 16, 14, 14), (32, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "group": 4}),
    ((3, 12, 40), (20, 12, 5), {"strides": [2], "pads": [2, 1]}),                 # 1-D
    ((1, 3, 30, 30), (16, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),    # stem-like
    ((2, 8, 13, 13), (12, 8, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
]


@pytest.mark.parametrize("xs,ws,attrs", STRIDED_FLAT)
def test_strided_flat(xs, ws, attrs):
    check_threads(xs, ws, attrs, seed=101)


@pytest.mark.parametrize("act,params", [("Relu", None), ("LeakyRelu", [0.2])])
@pytest.mark.parametrize("xs,ws,attrs", STRIDED_FLAT[:2] + STRIDED_FLAT[3:4])
def test_strided_flat_fused(act, params, xs, ws, attrs):
    a = dict(attrs, activation=act)
    if params:
        a["activation_params"] = params
    check_threads(xs, ws, a, seed=102, op="FusedConv", z=True)


# ---- products cut into equal runs of panel pairs ----

LINEAR = [
    ((1, 96, 7, 7), (200, 96, 1, 1), {}),                          # 49 columns, 17 row panels
    ((1, 64, 14, 14), (100, 64, 1, 1), {}),                        # a run ends inside a column
    ((3, 48, 7, 7), (64, 48, 1, 1), {}),                           # columns across images
    ((5, 40, 9, 11), (37, 40, 1, 1), {}),                          # odd everything
    ((2, 32, 20, 20), (48, 8, 1, 1), {"group": 4}),                # runs across groups
    ((1, 128, 28, 28), (24, 128, 1, 1), {}),                       # few rows, many columns
    ((2, 64, 14, 14), (96, 64, 1, 1), {"strides": [2, 2]}),        # strided 1x1, subsampled
    ((2, 6, 6, 7, 8), (26, 6, 3, 3, 3), {"pads": [1] * 6}),        # 3-D: im2col products
    ((1, 16, 60, 60), (30, 16, 5, 5), {"strides": [5, 5]}),        # stride 5: im2col products
]


@pytest.mark.parametrize("xs,ws,attrs", LINEAR)
def test_linear_runs(xs, ws, attrs):
    check_threads(xs, ws, attrs, seed=201, threads=(1, 2, 5, 7, 16))


@pytest.mark.parametrize("xs,ws,attrs", LINEAR[:3])
def test_linear_runs_fused(xs, ws, attrs):
    check_threads(xs, ws, dict(attrs, activation="Relu"), seed=202, op="FusedConv", z=True,
                  threads=(1, 3, 16))


# ---- the direct kernel over several images at once ----

@pytest.mark.parametrize("xs,ws,attrs", [
    ((4, 24, 14, 14), (36, 24, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((8, 16, 7, 7), (50, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((3, 8, 30, 30), (16, 8, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # lanes along rows
    ((2, 12, 9, 9), (24, 3, 3, 3), {"pads": [1, 1, 1, 1], "group": 4}),
])
def test_direct_batched(xs, ws, attrs):
    check_threads(xs, ws, attrs, seed=301, threads=(1, 2, 16))


def test_direct_batch_in_several_passes():
    """A batch whose padded copies exceed the kept buffer runs in groups of images."""
    check_threads((66, 256, 14, 14), (16, 256, 3, 3), {"pads": [1, 1, 1, 1]}, seed=302,
                  threads=(1, 4))


# ---- bad input still named ----

def test_bad_stride_named():
    rng = np.random.default_rng(401)
    x, w, b = rand(rng, (1, 4, 9, 9)), rand(rng, (8, 4, 3, 3)), rand(rng, (8,))
    m, feeds = model(x, w, b, {"strides": [0, 2]})
    with pytest.raises(Exception, match="stride"):
        run_kiln(m, feeds)


def test_bad_group_named():
    rng = np.random.default_rng(402)
    x, w, b = rand(rng, (1, 6, 9, 9)), rand(rng, (8, 3, 3, 3)), rand(rng, (8,))
    m, feeds = model(x, w, b, {"group": 4})
    with pytest.raises(Exception, match="group"):
        run_kiln(m, feeds)


# ---- the partition report ----

def test_partition_report():
    """KILN_DEBUG_PARTITION=1 prints one line per convolution with its items and balance."""
    code = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from util import node_model, run_kiln
rng = np.random.default_rng(0)
for xs, ws, a in [((1, 64, 56, 56), (48, 64, 3, 3), {"pads": [1, 1, 1, 1]}),  # 4 panels of 12
                  ((1, 64, 28, 28), (128, 64, 1, 1), {}),
                  ((1, 64, 14, 14), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]})]:
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    m = node_model("Conv", [("x", x), ("w", w)], ["y"], a, initializers={"w": w})
    run_kiln(m, {"x": x}, threads=16)
"""
    env = dict(os.environ, KILN_DEBUG_PARTITION="1")
    r = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__))],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kiln-partition ")]
    paths = [dict(kv.split("=", 1) for kv in ln.split()[1:]) for ln in lines]
    # (64 -> 48 on 56x56 at 16 threads: too little work per thread for Winograd, conv_winograd.c)
    assert [p["path"] for p in paths] == [on_this_cpu(p) for p in ("direct-flat", "gemm-packed-linear", "direct-lanes")]
    for p in paths:
        assert p["threads"] == "16"
        assert int(p["items"]) >= 16
        # items of whole kernel tiles split 16 ways unevenly (56 lanes items of 14x14: 0.875)
        assert 0.75 <= float(p["balance"]) <= 1.0
