"""The provider architecture as a user meets it without a GPU (what CI has): the CUDA provider is
its own library that a CPU-only session never loads, CUDA falls back to the CPU with a warning when
the CPU is also named and fails clearly when it is named alone, and the session says where every
node runs. The GPU side is tests/gpu/ (run on the GPU machine)."""
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from util import ROOT, kiln

BUILD = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
LIBKILN = os.path.join(BUILD, "libkiln.so")
LIBCUDA = os.path.join(BUILD, "libkiln_cuda.so")
EXAMPLE = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
CUDA_LIBS = re.compile(r"libcudart|libcublas|libcudnn|libkiln_cuda|libcuda\.so")


def example_feed():
    return {"x": np.random.default_rng(3).uniform(-1, 1, (2, 4)).astype(np.float32)}


def gpu_present(s):
    return "CUDAExecutionProvider" in s.get_providers()


def test_core_and_op_definitions_name_no_provider():
    """src/core and src/ops know providers only through core/provider.h."""
    hits = []
    for folder in ("src/core", "src/ops"):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            path = os.path.join(ROOT, folder, name)
            with open(path, encoding="utf-8") as f:
                for k, line in enumerate(f, 1):
                    if re.search(r"cuda|cublas|cudnn|KILN_WITH_", line, re.IGNORECASE):
                        hits.append("%s/%s:%d: %s" % (folder, name, k, line.strip()))
    assert not hits, "\n".join(hits)


def test_cuda_kernels_call_no_cpu_kernel():
    """CUDA glue uses op definitions (infer) through the runtime only: no CPU op lookups."""
    hits = []
    for folder in ("src/cuda", "src/cuda/ops", "src/cuda/kernels"):
        d = os.path.join(ROOT, folder)
        for name in sorted(os.listdir(d)):
            if not name.endswith((".c", ".cu", ".h", ".cuh")):
                continue
            with open(os.path.join(d, name), encoding="utf-8") as f:
                text = f.read()
            for bad in ("kiln_find_op", "kiln_ops_", "->compute("):
                if bad in text:
                    hits.append("%s/%s uses %s" % (folder, name, bad))
            if re.search(r'#include\s+"[^"]*cpu/', text):
                hits.append("%s/%s includes a CPU provider header" % (folder, name))
    assert not hits, "\n".join(hits)


def test_libkiln_does_not_link_cuda():
    out = subprocess.run(["ldd", LIBKILN], capture_output=True, text=True).stdout
    assert not CUDA_LIBS.search(out), out


@pytest.mark.skipif(not os.path.exists(LIBCUDA), reason="this build has no CUDA provider library (no nvcc)")
def test_cuda_library_is_separate():
    out = subprocess.run(["ldd", LIBCUDA], capture_output=True, text=True).stdout
    assert "libcudart" in out and "libcublas" in out, out
    syms = subprocess.run(["nm", "-D", "--defined-only", LIBCUDA], capture_output=True, text=True).stdout
    assert " kiln_provider_open" in syms and " kiln_provider_abi" in syms


PROBE = r"""
import os, sys, time, warnings
sys.path.insert(0, %(py)r)
import numpy as np
t0 = time.perf_counter()
import kiln
warnings.simplefilter("ignore")
s = kiln.InferenceSession(%(model)r, providers=%(providers)r)
s.run(None, {"x": np.ones((2, 4), np.float32)})
t1 = time.perf_counter()
maps = open("/proc/self/maps").read()
cuda = sorted({l.split()[-1] for l in maps.splitlines() if any(k in l for k in
              ("libcudart", "libcublas", "libcudnn", "libkiln_cuda"))})
# VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss across exec
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print("RESULT", hwm, t1 - t0, len(cuda), ",".join(cuda))
"""


def probe(providers):
    code = PROBE % {"py": os.path.join(ROOT, "python"), "model": EXAMPLE, "providers": providers}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT")]
    assert line, out.stdout + out.stderr
    _, rss_kb, seconds, n, names = (line[0].split(" ") + [""])[:5]
    return int(rss_kb) / 1024.0, float(seconds), int(n), names


def test_cpu_session_loads_no_cuda_library():
    """A CPU-only session of a CUDA build maps no CUDA library, so it costs what a build without
    CUDA costs; a session that asks for CUDA is what pays for loading it."""
    rss_cpu, t_cpu, n_cuda_libs, names = probe(["CPUExecutionProvider"])
    assert n_cuda_libs == 0, names
    assert rss_cpu < 120, "CPU-only session peak RSS %.0f MiB" % rss_cpu
    if os.path.exists(LIBCUDA):
        rss_cuda, t_cuda, n_loaded, _ = probe(["CUDAExecutionProvider", "CPUExecutionProvider"])
        assert n_loaded > 0  # asking for CUDA does load it (then falls back without a GPU)
        print("peak RSS: CPU-only %.0f MiB, asking for CUDA %.0f MiB; open+run %.3f s vs %.3f s"
              % (rss_cpu, rss_cuda, t_cpu, t_cuda))
        assert rss_cuda > rss_cpu + 20


def test_cuda_with_cpu_falls_back_with_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = kiln.InferenceSession(EXAMPLE, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if gpu_present(s):
        assert s.get_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("CUDA" in m and "falling back to CPUExecutionProvider" in m for m in msgs), msgs
    assert s.get_providers() == ["CPUExecutionProvider"]
    cpu = kiln.InferenceSession(EXAMPLE)
    feed = example_feed()
    np.testing.assert_array_equal(s.run(None, feed)[0], cpu.run(None, feed)[0])
    assert all(p == "CPUExecutionProvider" for _, p in s.node_placement())


def test_cuda_alone_fails_clearly_without_a_gpu():
    try:
        s = kiln.InferenceSession(EXAMPLE, providers=["CUDAExecutionProvider"])
    except kiln.KilnError as e:
        msg = str(e)
        assert "CUDA" in msg, msg
        assert "could not" in msg, msg
        return
    assert gpu_present(s), "CUDA alone opened without a GPU and without an error"


def test_unknown_provider_is_refused():
    with pytest.raises(kiln.KilnError, match="unknown execution provider"):
        kiln.InferenceSession(EXAMPLE, providers=["TensorrtExecutionProvider"])


def test_placement_is_reported():
    s = kiln.InferenceSession(EXAMPLE)
    assert s.get_providers() == ["CPUExecutionProvider"]
    nodes = s.nodes()
    assert nodes and all(n["provider"] == "CPUExecutionProvider" for n in nodes)
    assert {n["name"] for n in nodes} == {name for name, _ in s.node_placement()}
    assert s.placement_reason(nodes[0]["name"]) == ""
    with pytest.raises(kiln.KilnError):
        s.placement_reason("no such node")


def test_cli_providers_option():
    kiln_cmd = os.path.join(BUILD, "kiln")
    out = subprocess.run([kiln_cmd, "info", EXAMPLE, "--providers", "cuda,cpu"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "providers:" in out.stdout
    if "CUDAExecutionProvider" not in out.stdout.split("providers:")[1].splitlines()[0]:
        assert "falling back to CPUExecutionProvider" in out.stderr
    bad = subprocess.run([kiln_cmd, "run", EXAMPLE, "--providers", "tpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown provider 'tpu'" in bad.stderr
    alone = subprocess.run([kiln_cmd, "bench", EXAMPLE, "--providers", "cuda", "--runs", "2"],
                           capture_output=True, text=True)
    if alone.returncode != 0:
        assert "CUDA" in alone.stderr and "could not" in alone.stderr, alone.stderr


def test_graph_capture_needs_a_device():
    with pytest.raises(kiln.KilnError, match="graph capture needs a device provider"):
        kiln.InferenceSession(EXAMPLE, providers=[("CPUExecutionProvider", {"enable_cuda_graph": "1"})])


def test_enable_cuda_graph_takes_only_known_values():
    """enable_cuda_graph is 0, 1 or auto (absent); anything else is refused before any provider
    starts, so the mistake shows on a machine without a GPU too."""
    with pytest.raises(kiln.KilnError, match="enable_cuda_graph must be 0, 1 or auto, not 'yes please'"):
        kiln.InferenceSession(os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx"),
                              providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "yes please"}),
                                         "CPUExecutionProvider"])


def test_available_providers_same_before_any_session():
    """A fresh process asking first (before the library was loaded by a session) gets the same list as
    after opening one: it once answered CPU only there, so a training script saw no CUDA."""
    import subprocess
    import sys
    code = ("import sys; sys.path.insert(0, %r); import kiln; a = kiln.get_available_providers(); "
            "import numpy; from onnx import helper, TensorProto as T; "
            "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', "
            "[helper.make_tensor_value_info('x', T.FLOAT, [2])], [helper.make_tensor_value_info('y', T.FLOAT, [2])]); "
            "kiln.InferenceSession(helper.make_model(g).SerializeToString()); "
            "b = kiln.get_available_providers(); print(a == b, a, b)") % os.path.join(ROOT, "python")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True"), out.stdout


@pytest.mark.skipif(not os.path.exists(LIBCUDA), reason="a build without the CUDA provider library")
def test_device_session_packs_weights_only_for_cpu_nodes(tmp_path):
    """With a device provider the CPU packs weights after placement, for its own nodes only: a
    MatMul the CUDA provider takes (placement-only mode, no GPU needed) holds no packed host copy,
    while an LSTM left on the CPU still packs its weights."""
    from onnx import TensorProto as TP, helper, numpy_helper
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((1, 32, 8)).astype(np.float32), "lw"),
             numpy_helper.from_array(rng.standard_normal((1, 32, 8)).astype(np.float32), "lr")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("LSTM", ["s", "lw", "lr"], ["h"], hidden_size=8)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [4, 256]),
                                       helper.make_tensor_value_info("s", TP.FLOAT, [5, 2, 8])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None),
                           helper.make_tensor_value_info("h", TP.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "mm_lstm.onnx"
    path.write_bytes(m.SerializeToString())
    env = dict(os.environ, KILN_CUDA_PLACEMENT_ONLY="1")

    def info(*providers):
        out = subprocess.run([os.path.join(BUILD, "kiln"), "info", str(path), *providers], capture_output=True,
                             text=True, env=env)
        hit = re.search(r"packed weights: (\d+) bytes", out.stdout)
        assert hit, out.stdout + out.stderr
        return int(hit.group(1)), out.stdout

    cpu_bytes, _ = info()
    cuda_bytes, text = info("--providers", "cuda,cpu")
    assert re.search(r"^\s+\S+\s+MatMul\s+CUDAExecutionProvider", text, re.M), text
    assert re.search(r"^\s+\S+\s+LSTM\s+CPUExecutionProvider", text, re.M), text
    assert 0 < cuda_bytes and cpu_bytes - cuda_bytes >= 256 * 256 * 4, (cpu_bytes, cuda_bytes)
