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
