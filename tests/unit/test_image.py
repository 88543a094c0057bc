"""GridSample, AffineGrid, RoiAlign and NonMaxSuppression against onnxruntime."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import check, node_model, rand, run_kiln, run_ort  # noqa: E402

RNG = np.random.default_rng(5)


@pytest.mark.parametrize("opset,mode", [(16, "bilinear"), (16, "nearest"), (16, "bicubic"),
                                        (20, "linear"), (20, "nearest"), (20, "cubic")])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_2d(opset, mode, padding, align):
    x = rand(RNG, (2, 3, 5, 6))
    grid = rand(RNG, (2, 4, 7, 2), np.float32, -1.6, 1.6)  # some points fall outside
    m = node_model("GridSample", [("x", x), ("g", grid)], ["y"],
                   attrs={"mode": mode, "padding_mode": padding, "align_corners": align}, opset=opset)
    check(m, {"x": x, "g": grid}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_3d(mode, padding, align):
    x = rand(RNG, (1, 2, 3, 4, 5))
    grid = rand(RNG, (1, 2, 3, 4, 3), np.float32, -1.3, 1.3)
    m = node_model("GridSample", [("x", x), ("g", grid)], ["y"],
                   attrs={"mode": mode, "padding_mode": padding, "align_corners": align}, opset=20)
    check(m, {"x": x, "g": grid}, rtol=1e-4, atol=1e-5)


def test_grid_sample_double_default_attrs():
    # onnxruntime has no double kernel: compare with its float result on the same values
    x = rand(RNG, (1, 2, 4, 4), np.float64)
    grid = rand(RNG, (1, 3, 3, 2), np.float64, -1, 1)
    m = node_model("GridSample", [("x", x), ("g", grid)], ["y"], opset=16)
    got = run_kiln(m, {"x": x, "g": grid})[0]
    x32, g32 = x.astype(np.float32), grid.astype(np.float32)
    m32 = node_model("GridSample", [("x", x32), ("g", g32)], ["y"], opset=16)
    want = run_ort(m32, {"x": x32, "g": g32})[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_grid_sample_bad_grid():
    x = rand(RNG, (1, 2, 4, 4))
    grid = rand(RNG, (1, 3, 3, 3))
    m = node_model("GridSample", [("x", x), ("g", grid)], ["y"], opset=16)
    with pytest.raises(Exception):
        run_kiln(m, {"x": x, "g": grid})


@pytest.mark.parametrize("align,size", [(0, [2, 3, 4, 5]), (1, [2, 3, 4, 5]), (0, [1, 1, 1, 3]),
                                        (0, [2, 2, 3, 4, 5]), (1, [2, 2, 3, 4, 5])])
def test_affine_grid(align, size):
    k = len(size) - 2
    theta = rand(RNG, (size[0], k, k + 1))
    sz = np.array(size, np.int64)
    m = node_model("AffineGrid", [("t", theta)], ["y"], attrs={"align_corners": align}, opset=20,
                   initializers={"sz": sz})
    m.graph.node[0].input.append("sz")
    check(m, {"t": theta}, rtol=1e-5, atol=1e-6)


def test_affine_grid_single_position_align_corners():
    # a length-1 axis samples its centre (0), as PyTorch's affine_grid does; onnxruntime and the
    # ONNX reference disagree with each other here (1 and -1)
    theta = rand(RNG, (1, 2, 3))
    m = node_model("AffineGrid", [("t", theta)], ["y"], attrs={"align_corners": 1}, opset=20,
                   initializers={"sz": np.array([1, 1, 1, 3], np.int64)})
    m.graph.node[0].input.append("sz")
    got = run_kiln(m, {"t": theta})[0]
    base = np.array([[-1, 0, 1], [0, 0, 0], [1, 1, 1]], np.float64)  # x, y, 1 per position
    want = (theta[0].astype(np.float64) @ base).T.reshape(1, 1, 3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def roi_inputs(dt=np.float32, n_rois=5):
    x = rand(RNG, (2, 3, 10, 12), dt)
    r = RNG.uniform(0, 9, size=(n_rois, 2))
    wh = RNG.uniform(0.5, 6, size=(n_rois, 2))
    rois = np.concatenate([r, r + wh], axis=1).astype(dt)
    bi = RNG.integers(0, 2, size=n_rois).astype(np.int64)
    return x, rois, bi


@pytest.mark.parametrize("opset", [10, 16])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("attrs", [{}, {"output_height": 3, "output_width": 4, "sampling_ratio": 2},
                                   {"spatial_scale": 0.5, "output_height": 2, "output_width": 2}])
def test_roi_align(opset, mode, attrs):
    x, rois, bi = roi_inputs()
    attrs = dict(attrs, mode=mode)
    m = node_model("RoiAlign", [("x", x), ("r", rois), ("b", bi)], ["y"], attrs=attrs, opset=opset)
    check(m, {"x": x, "r": rois, "b": bi}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
def test_roi_align_ctm_double(ctm):
    x, rois, bi = roi_inputs(np.float64)
    m = node_model("RoiAlign", [("x", x), ("r", rois), ("b", bi)], ["y"],
                   attrs={"coordinate_transformation_mode": ctm, "output_height": 4, "output_width": 3},
                   opset=16)
    check(m, {"x": x, "r": rois, "b": bi}, rtol=1e-9, atol=1e-10)


def test_roi_align_bad_batch_index():
    x, rois, bi = roi_inputs()
    bi[0] = 7
    m = node_model("RoiAlign", [("x", x), ("r", rois), ("b", bi)], ["y"], opset=16)
    with pytest.raises(Exception):
        run_kiln(m, {"x": x, "r": rois, "b": bi})


def nms_inputs(nb=2, nbox=30, nc=3, center=0):
    xy = RNG.uniform(0, 10, size=(nb, nbox, 2))
    wh = RNG.uniform(0.5, 4, size=(nb, nbox, 2))
    if center:
        boxes = np.concatenate([xy, wh], axis=2)
    else:  # [y1, x1, y2, x2] with some corners flipped
        boxes = np.concatenate([xy, xy + wh], axis=2)
        boxes[:, ::3] = boxes[:, ::3][:, :, [2, 3, 0, 1]]
    scores = RNG.uniform(0, 1, size=(nb, nc, nbox))
    return boxes.astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("max_out,iou,score", [(5, 0.5, None), (100, 0.3, 0.4), (3, 0.0, 0.9),
                                               (0, 0.5, None), (10, 1.0, 0.2)])
def test_nms(center, max_out, iou, score):
    boxes, scores = nms_inputs(center=center)
    inits = {"m": np.array([max_out], np.int64), "i": np.array([iou], np.float32)}
    ins = [("b", boxes), ("s", scores), ("m", None), ("i", None)]
    if score is not None:
        inits["t"] = np.array([score], np.float32)
        ins.append(("t", None))
    m = node_model("NonMaxSuppression", ins, ["y"], attrs={"center_point_box": center}, opset=11,
                   initializers=inits)
    check(m, {"b": boxes, "s": scores})


def test_nms_defaults_and_ties():
    boxes, scores = nms_inputs(nb=1, nbox=10, nc=2)
    scores[0, 0, :] = 0.5  # ties go to the lower box index
    m = node_model("NonMaxSuppression", [("b", boxes), ("s", scores), ("m", None)], ["y"], opset=10,
                   initializers={"m": np.array([4], np.int64)})
    got = check(m, {"b": boxes, "s": scores})[0]
    assert got.shape[1] == 3 and got.dtype == np.int64
    m = node_model("NonMaxSuppression", [("b", boxes), ("s", scores)], ["y"], opset=11)
    got = check(m, {"b": boxes, "s": scores})[0]
    assert got.shape == (0, 3)


def test_nms_bad_shapes():
    boxes, scores = nms_inputs()
    m = node_model("NonMaxSuppression", [("b", boxes[:, :, :3]), ("s", scores)], ["y"], opset=11)
    with pytest.raises(Exception):
        run_kiln(m, {"b": boxes[:, :, :3].copy(), "s": scores})
