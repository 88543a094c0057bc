"""kiln bench --plot FILE.png: a PNG of the latency histogram and the time per op type (tools/plot.c).
The image decodes, has the documented size, and its drawing matches the run: one orange bar per op
type kiln ran (as `kiln info` counts them, at most 12 rows), histogram bars, and the longest op bar
spans the bar area."""
import os
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "kiln")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "models")
WIDTH, HEIGHT = 960, 720          # PLOT_WIDTH, PLOT_HEIGHT (tools/plot.h)
BLUE, ORANGE = (70, 120, 190), (230, 140, 50)
OPS_TOP, ROW_H, BAR_X0, BAR_X1 = 56 + 340 + 36, 22, 40 + 20 * 12 + 10, WIDTH - 260   # draw_ops' layout


def bench(*args, timeout=300):
    return subprocess.run([KILN, "bench", *args], capture_output=True, text=True, timeout=timeout)


def op_kinds(model):
    out = subprocess.run([KILN, "info", model], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(re.search(r"ops \((\d+) kinds", out.stdout).group(1))


def mask(img, col):
    return np.all(img == np.array(col, dtype=np.uint8), axis=-1)


def bar_rows(img):
    """Rows of the op panel with an orange bar starting at the bar area's left edge."""
    col = mask(img, ORANGE)[:, BAR_X0]
    starts = [y for y in range(OPS_TOP - 4, HEIGHT) if col[y] and not col[y - 1]]
    return starts, mask(img, ORANGE)


@pytest.mark.parametrize("model,runs,trace", [
    (os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx"), 50, False),
    (os.path.join(SHARED, "bert_tiny.onnx"), 30, False),
    # with --profile the runs are traced, and the op times come from the trace's events
    (os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx"), 20, True),
])
def test_bench_plot(tmp_path, model, runs, trace):
    if not os.path.exists(model):
        pytest.fail("shared model missing: %s" % model)
    png = tmp_path / "bench.png"
    extra = ["--profile", str(tmp_path / "trace.json")] if trace else []
    r = bench(model, "--runs", str(runs), "--warmup", "2", "--threads", "2", "--plot", str(png), *extra)
    assert r.returncode == 0, r.stderr
    assert "latency ms: p50" in r.stdout and "plot written to" in r.stderr
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (WIDTH, HEIGHT) and im.mode == "RGB"
        img = np.asarray(im)
    white = mask(img, (255, 255, 255)).mean()
    assert 0.5 < white < 0.98, "blank or flooded image: %.3f white" % white
    # histogram: blue bars in the upper panel, their heights summing to something
    blue = mask(img, BLUE)
    assert blue[:OPS_TOP - 40].sum() > 50 and blue[OPS_TOP - 40:].sum() == 0
    # op panel: one bar per op type, the longest reaching the right end of the bar area
    starts, orange = bar_rows(img)
    assert len(starts) == min(op_kinds(model), 12), starts
    assert all(b - a == ROW_H for a, b in zip(starts, starts[1:])), starts
    assert orange[starts[0] + 2, BAR_X1 - 2], "the slowest op's bar does not span the bar area"
    widths = [orange[y + 2, BAR_X0:].sum() for y in starts]
    assert widths[:-1] == sorted(widths[:-1], reverse=True), widths   # slowest first (the last row may fold the rest)


def test_bench_plot_errors(tmp_path):
    model = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
    r = bench(model, "--runs", "3", "--plot")
    assert r.returncode == 2 and "--plot" in r.stderr
    bad = tmp_path / "no_such_dir" / "x.png"
    r = bench(model, "--runs", "3", "--plot", str(bad))
    assert r.returncode == 1 and "could not write" in r.stderr and str(bad) in r.stderr
    assert not bad.exists()
