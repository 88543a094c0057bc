"""Large host blocks that released outputs hand back are reused by later runs (src/core/host_blocks.c):
outputs the caller still holds must never be reused, and reused blocks must carry nothing over."""
import numpy as np
from onnx import TensorProto as TP, helper, numpy_helper

from util import kiln

SHAPE = [2, 12, 128, 96]  # 1.2 MB of float32: above the cache's 256 KiB floor


def many_outputs_model(n=12):
    nodes, outs, inits = [], [], []
    for i in range(n):
        inits.append(numpy_helper.from_array(np.array(float(i + 1), np.float32), "c%d" % i))
        nodes.append(helper.make_node("Mul", ["x", "c%d" % i], ["y%d" % i]))
        outs.append(helper.make_tensor_value_info("y%d" % i, TP.FLOAT, SHAPE))
    # a padded output: Pad writes its border itself, so a reused block must not leak old values there
    nodes.append(helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"))
    inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"))
    outs.append(helper.make_tensor_value_info("p", TP.FLOAT, None))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, SHAPE)], outs,
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString(), n


def expected(x, n):
    return [x * (i + 1) for i in range(n)] + [np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))]


def test_held_outputs_are_not_reused_and_released_ones_are_correct():
    m, n = many_outputs_model()
    s = kiln.InferenceSession(m, threads=2)
    rng = np.random.default_rng(11)
    held = []
    for k in range(6):
        x = rng.uniform(-3, 3, SHAPE).astype(np.float32)
        outs = s.run(None, {"x": x})
        if k % 2 == 0:
            held.append((x, outs))  # kept while later runs allocate
        else:
            for got, want in zip(outs, expected(x, n)):
                np.testing.assert_array_equal(got, want)
            del outs  # handed back: the next run may take these blocks
    for x, outs in held:
        for got, want in zip(outs, expected(x, n)):
            np.testing.assert_array_equal(got, want)


def test_runs_after_arena_shrinkage():
    """ONNX Runtime's arena shrinkage run option frees the cached blocks too (kiln_session_release_memory)."""
    import kiln.onnxruntime as ort
    m, n = many_outputs_model(4)
    s = ort.InferenceSession(m, providers=["CPUExecutionProvider"])
    ro = ort.RunOptions()
    ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    rng = np.random.default_rng(12)
    for _ in range(3):
        x = rng.uniform(-3, 3, SHAPE).astype(np.float32)
        s.run(None, {"x": x}, ro)
        for got, want in zip(s.run(None, {"x": x}), expected(x, n)):
            np.testing.assert_array_equal(got, want)
