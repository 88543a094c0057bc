"""ONNX node conformance: every test case of two ONNX releases' node suites runs through `kiln test`.
The cases that do not pass yet are listed (with the reason) in failing_onnx_<version>.txt; a case
outside the list that fails is a regression and fails this test, and a listed case that passes must
be removed from the list (the lists only shrink)."""
import os
import re
import subprocess

import onnx
import pytest

from util import ROOT

KILN = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "kiln")
HERE = os.path.dirname(os.path.abspath(__file__))
SUITES = {
    "1.22": os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node"),
    "1.12": "/usr/share/libonnx-testdata/data/node",
}
MIN_PASS_RATE = 0.60


@pytest.mark.parametrize("version", sorted(SUITES))
def test_node_suite(version):
    folder = SUITES[version]
    assert os.path.isdir(folder), f"ONNX {version} node tests not installed at {folder} (scripts/setup.sh)"
    listing = os.path.join(HERE, f"failing_onnx_{version}.txt")
    r = subprocess.run([KILN, "test", folder, "--expect-fail", listing, "--quiet", "--threads", "1"],
                       capture_output=True, text=True, timeout=1800)
    out = r.stdout
    summary = re.search(r"^(\d+) of (\d+) test cases pass", out, re.M)
    assert summary, out[-2000:] + r.stderr[-2000:]
    passed, total = int(summary.group(1)), int(summary.group(2))
    print(f"onnx {version} node tests: {passed}/{total} pass ({100.0 * passed / total:.1f}%)")
    regressions = [l for l in out.splitlines() if l.startswith("FAIL ")]
    fixed = [l for l in out.splitlines() if l.startswith("XPASS ")]
    assert not regressions, "cases that passed before now fail:\n" + "\n".join(regressions[:50])
    assert not fixed, "cases now pass; remove them from " + listing + ":\n" + "\n".join(fixed[:50])
    assert total > 500
    assert passed / total >= MIN_PASS_RATE, f"{passed}/{total} below {MIN_PASS_RATE:.0%}"


def _case(root, name, expected):
    """A one-node test-case folder (Identity) whose reference output is `expected`."""
    from onnx import helper, numpy_helper, TensorProto
    import numpy as np
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), os.path.join(d, "model.onnx"))
    x = np.array([1.5, -2.0, 3.25], np.float32)
    for k, (v, n) in enumerate([(x, "input_0"), (np.asarray(expected, np.float32), "output_0")]):
        t = numpy_helper.from_array(v, "x" if k == 0 else "y")
        open(os.path.join(d, "test_data_set_0", n + ".pb"), "wb").write(t.SerializeToString())


def test_expect_fail_list_semantics(tmp_path):
    # A listed case that passes is reported (XPASS, the list must shrink); a "?name" case (random
    # outcome) passing by chance is neither reported nor counted as a pass; an unlisted failure is
    # a FAIL; a listed failure is expected.
    root = str(tmp_path / "cases")
    _case(root, "test_pass_listed", [1.5, -2.0, 3.25])
    _case(root, "test_pass_random", [1.5, -2.0, 3.25])
    _case(root, "test_fail_listed", [0.0, 0.0, 0.0])
    _case(root, "test_fail_unlisted", [9.0, 9.0, 9.0])
    listing = tmp_path / "failing.txt"
    listing.write_text("# comment\ntest_pass_listed  # reason\n?test_pass_random  # random\ntest_fail_listed\n")
    out = subprocess.run([KILN, "test", root, "--expect-fail", str(listing), "--quiet"],
                         capture_output=True, text=True, timeout=120).stdout
    lines = out.splitlines()
    assert any(l.startswith("XPASS test_pass_listed") for l in lines), out
    assert not any("test_pass_random" in l and not l.startswith("xfail") for l in lines), out
    assert any(l.startswith("FAIL test_fail_unlisted") for l in lines), out
    assert not any(l.startswith("FAIL test_fail_listed") for l in lines), out
    assert re.search(r"^1 of 4 test cases pass", out, re.M), out
