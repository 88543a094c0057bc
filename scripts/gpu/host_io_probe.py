#!/usr/bin/env python3
"""Where the host side of a kiln GPU run with numpy inputs and outputs goes: device-to-host copies
of one large output (GPT-2 prefill's logits, 51 MB in fp16) into fresh pageable memory, into
reused pageable memory and into pinned memory (torch), next to kiln's run of the GPT-2 prefill
model with numpy outputs and with outputs left on the device.

  python3 scripts/gpu/host_io_probe.py --models /tmp/gpu_models
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
import kiln  # noqa: E402


def med_ms(fn, n=15):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    return statistics.median(t) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--mb", type=float, default=51.5)
    a = ap.parse_args()
    n = int(a.mb * 2**20)
    x = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    reuse = torch.empty(n, dtype=torch.uint8)
    pinned = torch.empty(n, dtype=torch.uint8).pin_memory()
    rows = [("x.cpu() (fresh pageable)", med_ms(lambda: x.cpu())),
            ("copy_ into reused pageable", med_ms(lambda: reuse.copy_(x))),
            ("copy_ into pinned", med_ms(lambda: pinned.copy_(x))),
            ("np.empty + copy_ (fresh, numpy)", med_ms(lambda: torch.from_numpy(np.empty(n, np.uint8)).copy_(x)))]
    for name, v in rows:
        print("%-34s %7.2f ms  %5.1f GB/s" % (name, v, n / v / 1e6))

    path = os.path.join(a.models, "gpt2_prefill.fp16.onnx")
    ids = np.random.default_rng(1).integers(0, 50257, size=(1, 512), dtype=np.int64)
    s = kiln.InferenceSession(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    host = med_ms(lambda: s.run(None, {name: ids}), n=10)
    dev_ids = torch.from_numpy(ids).cuda()
    dev = med_ms(lambda: s.run_with_ort_values(None, {name: dev_ids}), n=10)
    logits = med_ms(lambda: s.run(["logits"], {name: ids}), n=10)
    print("kiln GPT-2 prefill B=1 S=512: numpy out %.2f ms, logits only %.2f ms, device out %.2f ms "
          "(specialisations %d)" % (host, logits, dev, s.kiln_specializations()))


if __name__ == "__main__":
    main()
