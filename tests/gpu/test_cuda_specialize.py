"""Shape specialisation on the GPU (issue 7): a default CUDA session of a model with symbolic
batch/seq opens a child per shape it sees twice; the child's shape arithmetic folds away, graph
capture takes it whole, its outputs match the CPU's, and a second child shares the first one's
device weights (GPU memory does not grow by another copy of them). Needs the CUDA provider; the
GPU-memory check needs torch (torch.cuda.mem_get_info)."""
import os
import re
import sys

import numpy as np
import pytest

from cuda_diff import cuda_available, kiln

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from spec_models import bert_feeds, bert_like  # noqa: E402


def _need_cuda():
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)


def test_default_gpu_session_specialises_and_captures(capfd):
    _need_cuda()
    m = bert_like(layers=2, hidden=128, heads=4).SerializeToString()
    cpu = kiln.InferenceSession(m, specialize=False)
    gpu = kiln.InferenceSession(m, providers=["CUDAExecutionProvider"], verbose=True)  # defaults: auto
    rng = np.random.default_rng(21)
    shapes = [(1, 16), (4, 32), (1, 16), (4, 32), (1, 16), (4, 32), (2, 7)]
    for b, s in shapes:
        feeds = bert_feeds(rng, b, s)
        np.testing.assert_allclose(gpu.run(None, feeds)[0], cpu.run(None, feeds)[0], rtol=1e-3, atol=1e-3,
                                   err_msg="shape %s" % ((b, s),))
    assert gpu.kiln_specializations() == 2  # (2, 7) ran once: generic
    assert gpu.get_inputs()[0].shape == ["batch", "seq"]
    assert gpu.get_providers()[0] == "CUDAExecutionProvider"
    err = capfd.readouterr().err
    made = re.findall(r"kiln: specialised for (\S+): (\d+) nodes \(was (\d+)\), graph capture (on|off), "
                      r"(\d+) constants shared \(opened in ([\d.]+) ms\)", err)
    assert [k for k, *_ in made] == ["batch=1,seq=16", "batch=4,seq=32"], err
    for key, n, was, capture, shared, ms in made:
        assert int(n) < int(was), (key, n, was)
        assert capture == "on", "the child of %s is not captured whole:\n%s" % (key, err)
        assert int(shared) > 0, key  # the parent's weights, not a second upload
        print("child %s: %s nodes (was %s), %s constants shared, opened in %s ms" % (key, n, was, shared, ms))


def test_second_child_shares_device_weights():
    _need_cuda()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no GPU")
    hidden, layers = 512, 4
    m = bert_like(layers=layers, hidden=hidden, heads=8, vocab=30000).SerializeToString()
    weight_bytes = 4 * (30000 * hidden + 512 * hidden + layers * (4 * hidden * hidden + 8 * hidden * hidden))
    gpu = kiln.InferenceSession(m, providers=["CUDAExecutionProvider"])
    rng = np.random.default_rng(22)

    def used():
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        return total - free

    for b, s in [(1, 64), (1, 64)]:
        gpu.run(None, bert_feeds(rng, b, s, vocab=30000))
    assert gpu.kiln_specializations() == 1
    one = used()
    for b, s in [(2, 64), (2, 64)]:
        gpu.run(None, bert_feeds(rng, b, s, vocab=30000))
    assert gpu.kiln_specializations() == 2
    grown = used() - one
    # a second copy of the weights would add weight_bytes; the child's own arenas are far smaller
    assert grown < weight_bytes // 2, (grown, weight_bytes)
