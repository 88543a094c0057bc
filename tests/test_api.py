"""The Python API and the kiln command on the bundled example."""
import os
import subprocess

import numpy as np
import onnxruntime as ort

from util import ROOT, kiln

EXAMPLE = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
KILN = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "kiln")


def test_session_api():
    s = kiln.InferenceSession(EXAMPLE, providers=["CPUExecutionProvider"], threads=1)
    ins, outs = s.get_inputs(), s.get_outputs()
    assert [i.name for i in ins] == ["x"] and ins[0].shape == ["N", 4] and ins[0].type == "tensor(float)"
    assert [o.name for o in outs] == ["y"] and outs[0].shape == ["N", 3]
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    want = ort.InferenceSession(EXAMPLE).run(None, {"x": x})[0]
    got = s.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got2 = s.run(["y"], {"x": x})[0]
    np.testing.assert_array_equal(got, got2)
    # a new batch size re-plans
    x3 = x[:3]
    np.testing.assert_allclose(s.run(None, {"x": x3})[0], want[:3], rtol=1e-5, atol=1e-6)


def test_unknown_provider_and_output():
    try:
        kiln.InferenceSession(EXAMPLE, providers=["TPUExecutionProvider"])
        assert False, "expected an error"
    except kiln.KilnError as e:
        assert "TPUExecutionProvider" in str(e)
    s = kiln.InferenceSession(EXAMPLE)
    try:
        s.run(["nope"], {"x": np.ones((1, 4), np.float32)})
        assert False, "expected an error"
    except kiln.KilnError as e:
        assert "nope" in str(e)


def test_cli_run_info_bench(tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([KILN, "run", EXAMPLE, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "y: float32[2,3]" in r.stdout
    want = ort.InferenceSession(EXAMPLE).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-5, atol=1e-6)
    r = subprocess.run([KILN, "info", EXAMPLE], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # opt_level 2 is the default: the model's MatMul + Add is listed as the Gemm it became
    for word in ("x: float32[N, 4]", "Relu", "Gemm", "initializers:", "planned memory", "missing ops: none"):
        assert word in r.stdout, (word, r.stdout)
    r = subprocess.run([KILN, "bench", EXAMPLE, "--runs", "20", "--threads", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "p50" in r.stdout and "p99" in r.stdout and "peak RSS" in r.stdout and "runs/s" in r.stdout


def test_cli_bad_input_file(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    r = subprocess.run([KILN, "run", EXAMPLE, "--input", f"x={tmp_path / 'bad.npy'}"], capture_output=True, text=True)
    assert r.returncode != 0 and "not a .npy file" in r.stderr


def test_example_program():
    r = subprocess.run([os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "example_basic"), EXAMPLE], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "y: shape [1, 3]" in r.stdout


def test_pip_install_from_repo(tmp_path):
    """`pip install ./python` builds and bundles libkiln.so; the installed package runs a model."""
    target = tmp_path / "site"
    clean = {k: v for k, v in os.environ.items() if k not in ("KILN_BUILD_DIR", "KILN_LIBRARY", "LD_PRELOAD")}
    r = subprocess.run(["python3", "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), os.path.join(ROOT, "python")], capture_output=True, text=True,
                       env=clean)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "kiln" / "libkiln.so").exists()
    code = ("import kiln, numpy as np; s = kiln.InferenceSession(%r); "
            "print(s.run(None, {'x': np.ones((2, 4), np.float32)})[0].shape)" % EXAMPLE)
    env = dict(clean, PYTHONPATH=str(target))
    r = subprocess.run(["python3", "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 3)"


def test_cli_run_creates_output_folders(tmp_path):
    """--output-dir a/b/c with missing parents is created (mkdir -p); a path through a file is a
    clear error, with nothing claimed written."""
    npz = os.path.join(ROOT, "examples", "models", "tiny_mlp_inputs.npz")
    deep = tmp_path / "a" / "b" / "c"
    r = subprocess.run([KILN, "run", EXAMPLE, "--inputs", npz, "--output-dir", str(deep)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert (deep / "y.npy").exists() and "outputs written to" in r.stdout
    (tmp_path / "file").write_text("x")
    bad = subprocess.run([KILN, "run", EXAMPLE, "--inputs", npz, "--output-dir", str(tmp_path / "file" / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "cannot create the output folder" in bad.stderr
    assert "outputs written" not in bad.stdout and "cannot write" not in bad.stderr
