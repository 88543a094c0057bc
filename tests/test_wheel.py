"""The wheel is self-contained: `pip wheel ./python` (CPU only, KILN_CUDA=OFF) builds it, a fresh
venv without system site-packages installs it, and a model runs through `import kiln` and through
the `kiln` entry point from outside the repository with a clean environment (no PYTHONPATH,
KILN_LIBRARY or LD_LIBRARY_PATH), matching onnxruntime. Every library in it resolves inside the
installation except glibc's pieces and the GCC runtime, and importing and running kiln maps no
other library from the system."""
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
INPUTS = os.path.join(ROOT, "examples", "models", "tiny_mlp_inputs.npz")
# what a manylinux wheel may take from the system
ALLOWED = re.compile(r"^(linux-vdso\.so|ld-linux-x86-64\.so|lib(c|m|pthread|dl|rt|stdc\+\+|gcc_s)\.so)")


def clean_env(venv=None):
    """An environment as on a new machine: PATH and HOME only (and the venv first on PATH)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    if venv:
        env["PATH"] = os.path.join(venv, "bin") + ":" + env["PATH"]
    return env


def run(cmd, env, cwd, timeout=300):
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "%s failed (%d):\n%s\n%s" % (" ".join(cmd), p.returncode, p.stdout[-3000:],
                                                          p.stderr[-3000:])
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, its site-packages, work folder outside the repository) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    build_env = clean_env()
    # a build folder of its own: the suite's (or the sanitizer's, KILN_BUILD_DIR) stays untouched
    build_env.update(KILN_CUDA="OFF", KILN_BUILD_DIR=os.path.join(ROOT, "build-wheel"))
    if shutil.which("ccache"):
        build_env["CMAKE_C_COMPILER_LAUNCHER"] = "ccache"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), os.path.join(ROOT, "python")],
        build_env, cwd=str(tmp))
    wheels = glob.glob(str(tmp / "dist" / "kiln-*.whl"))
    assert len(wheels) == 1, wheels
    assert wheels[0].endswith("linux_x86_64.whl"), wheels[0]
    venv = str(tmp / "venv")
    run([sys.executable, "-m", "venv", venv], clean_env(), cwd=str(tmp))
    py = os.path.join(venv, "bin", "python")
    # numpy from PyPI (the wheel's only dependency), then the wheel, with nothing of this machine's
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "numpy", wheels[0]],
        clean_env(venv), cwd=str(tmp))
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_path('platlib'))"], clean_env(venv),
               cwd=str(tmp)).stdout.strip()
    work = tmp / "work"
    work.mkdir()
    shutil.copy(MODEL, work / "model.onnx")
    shutil.copy(INPUTS, work / "inputs.npz")
    return venv, site, work


def reference():
    feeds = dict(np.load(INPUTS))
    s = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    return {o.name: v for o, v in zip(s.get_outputs(), s.run(None, feeds))}


def test_wheel_layout_resolves_inside(installed):
    venv, site, _ = installed
    assert not os.path.exists(os.path.join(site, "kiln", "libkiln_cuda.so")), "KILN_CUDA=OFF shipped a CUDA provider"
    elves = [os.path.join(site, "kiln", "libkiln.so"), os.path.join(site, "kiln", "bin", "kiln")]
    elves += glob.glob(os.path.join(site, "kiln", "_native*.so"))
    bundled = glob.glob(os.path.join(site, "kiln.libs", "*.so*"))
    assert any("openblas" in b for b in bundled), bundled
    assert os.access(elves[1], os.X_OK), "the bundled kiln binary is not executable"
    for elf in elves + bundled:
        ldd = run(["ldd", elf], clean_env(), cwd="/").stdout
        for line in ldd.splitlines():
            parts = line.split()
            if not parts or parts[0].startswith("statically"):
                continue
            assert "not found" not in line, "%s: %s" % (elf, line)
            name = parts[0]
            path = parts[2] if len(parts) > 2 and parts[1] == "=>" else parts[0]
            inside = os.path.realpath(path).startswith(os.path.realpath(site) + os.sep)
            assert inside or ALLOWED.match(os.path.basename(name)), \
                "%s needs %s from outside the wheel (%s)" % (elf, name, path)
        # no folder of the build machine in the search path
        dyn = run(["readelf", "-d", elf], clean_env(), cwd="/").stdout
        for rp in re.findall(r"R(?:UN)?PATH.*\[(.*)\]", dyn):
            assert all(p.startswith("$ORIGIN") for p in rp.split(":")), "%s: RUNPATH %s" % (elf, rp)


SCRIPT = r"""
import ctypes, re, sys
import numpy as np
feeds = dict(np.load("inputs.npz"))   # Python's own modules (ctypes, zipfile, bz2...) loaded first

def mapped():
    return {line.split()[-1] for line in open("/proc/self/maps") if ".so" in line}

before = mapped()
import kiln
assert kiln.__file__.startswith(sys.argv[1]), kiln.__file__
s = kiln.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
out = s.run(None, feeds)
np.savez("py_out.npz", **{o.name: v for o, v in zip(s.get_outputs(), out)})
# what kiln brought in: from the wheel, or glibc / the GCC runtime
allowed = re.compile(sys.argv[2])
for path in sorted(mapped() - before):
    assert path.startswith(sys.argv[1]) or allowed.match(path.rsplit("/", 1)[-1]), "loaded from the system: " + path
"""


def test_import_kiln_in_clean_venv(installed):
    venv, site, work = installed
    run([os.path.join(venv, "bin", "python"), "-c", SCRIPT, site, ALLOWED.pattern], clean_env(venv), cwd=str(work))
    got = dict(np.load(work / "py_out.npz"))
    ref = reference()
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6)


def test_kiln_entry_point_in_clean_venv(installed):
    venv, site, work = installed
    kiln_cmd = os.path.join(venv, "bin", "kiln")
    assert os.path.exists(kiln_cmd), "the wheel installed no kiln command"
    out_dir = work / "cli_out"
    p = run([kiln_cmd, "run", "model.onnx", "--inputs", "inputs.npz", "--output-dir", str(out_dir)],
            clean_env(venv), cwd=str(work))
    ref = reference()
    for k, v in ref.items():
        np.testing.assert_allclose(np.load(out_dir / (k + ".npy")), v, rtol=1e-5, atol=1e-6)
    # --plot through the bundled libpng
    run([kiln_cmd, "bench", "model.onnx", "--runs", "20", "--plot", "bench.png"], clean_env(venv), cwd=str(work))
    from PIL import Image
    with Image.open(work / "bench.png") as im:
        assert im.format == "PNG" and im.size == (960, 720)
    # a failing command keeps its exit status through the launcher
    bad = subprocess.run([kiln_cmd, "run", "missing.onnx"], env=clean_env(venv), cwd=str(work),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "missing.onnx" in bad.stderr, (bad.returncode, bad.stderr, p.stdout)


def test_provider_with_a_missing_dependency_names_it(tmp_path):
    """A CUDA provider library that is found but whose CUDA libraries are not (a wheel installed
    without the nvidia-* wheels or toolkit): the error names the missing library and where it comes
    from, not a later 'libkiln_cuda.so not found'."""
    dep, prov = tmp_path / "dep", tmp_path / "prov"
    dep.mkdir(), prov.mkdir()
    (tmp_path / "d.c").write_text("int kiln_test_dep(void) { return 1; }\n")
    (tmp_path / "p.c").write_text("int kiln_test_dep(void);\nint kiln_provider_abi(void) { return kiln_test_dep(); }\n")
    run(["gcc", "-shared", "-fPIC", "-o", str(dep / "libkiln_test_cudart.so"), str(tmp_path / "d.c")], clean_env(), str(tmp_path))
    run(["gcc", "-shared", "-fPIC", "-o", str(prov / "libkiln_cuda.so"), str(tmp_path / "p.c"), "-L", str(dep),
         "-lkiln_test_cudart"], clean_env(), str(tmp_path))
    code = ("import sys; sys.path.insert(0, %r); import kiln\n"
            "try:\n    kiln.InferenceSession(%r, providers=['CUDAExecutionProvider'])\n"
            "except kiln.KilnError as e:\n    print(e)\n") % (os.path.join(ROOT, "python"), MODEL)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, KILN_PROVIDER_PATH=str(prov)))
    assert "libkiln_test_cudart.so" in out.stdout and "nvidia-cuda-runtime" in out.stdout, out.stdout + out.stderr


def test_cuda_provider_packaging_without_cuda(tmp_path):
    """What the wheel build does to libkiln_cuda.so (python/wheel_libs.py), on a stand-in built
    here: its CUDA libraries are left out of the wheel, any other dependency is bundled, and its
    RUNPATH finds the CUDA runtime in the nvidia-* wheels' folder of the same site-packages."""
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import wheel_libs
    cuda_dir, site = tmp_path / "cuda", tmp_path / "site"
    pkg, libs = site / "kiln", site / "kiln.libs"
    for d in (cuda_dir, pkg, site / "nvidia" / "cu13" / "lib"):
        d.mkdir(parents=True)
    (tmp_path / "rt.c").write_text("int cudaStub(void) { return 13; }\n")
    (tmp_path / "prov.c").write_text("#include <zlib.h>\nint cudaStub(void);\n"
                                     "int kiln_provider_abi(void) { return cudaStub() + (int)zlibVersion()[0]; }\n")
    run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcudart.so.13", "-o", str(cuda_dir / "libcudart.so.13"),
         str(tmp_path / "rt.c")], clean_env(), str(tmp_path))
    prov = pkg / "libkiln_cuda.so"
    run(["gcc", "-shared", "-fPIC", "-o", str(prov), str(tmp_path / "prov.c"), str(cuda_dir / "libcudart.so.13"), "-lz"],
        clean_env(), str(tmp_path))
    runpath = wheel_libs.runpaths(str(pkg), str(libs), str(prov))
    assert runpath[:3] == ["$ORIGIN", "$ORIGIN/../kiln.libs", "$ORIGIN/../nvidia/cu13/lib"], runpath
    copied = wheel_libs.bundle(str(pkg), str(libs), {str(prov): runpath})
    assert [c for c in copied if c.startswith("libz-")] and not [c for c in copied if "cudart" in c], copied
    shutil.copy(cuda_dir / "libcudart.so.13", site / "nvidia" / "cu13" / "lib")
    ldd = run(["ldd", str(prov)], clean_env(), cwd="/").stdout
    found = {parts[0]: os.path.dirname(os.path.realpath(parts[2]))
             for parts in map(str.split, ldd.splitlines()) if len(parts) > 2 and parts[1] == "=>"}
    assert found.get("libcudart.so.13") == str(site / "nvidia" / "cu13" / "lib"), ldd
    assert [d for n, d in found.items() if re.match(r"libz-[0-9a-f]{8}\.so\.1$", n)] == [str(libs)], ldd
