#!/usr/bin/env python3
"""Which attention kernel each fused Attention node of a benchmark model takes (and why others
were passed over): runs a fixed-dims CUDA session once with KILN_ATTENTION_VERBOSE=1 (set by the
caller) and lets the kernel lines reach stderr.

  KILN_ATTENTION_VERBOSE=1 python3 scripts/gpu/attn_choice.py /tmp/gpu_models vit:8 bert:8:512
"""
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "gpu_models"))
sys.path.append(os.path.join(ROOT, "python"))
import kiln  # noqa: E402
import models as M  # noqa: E402

models = sys.argv[1]
man = json.load(open(os.path.join(models, "manifest.json")))
for spec in sys.argv[2:]:
    parts = spec.split(":")
    graph, batch, seq = parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else None
    entry = man["graphs"][graph]
    mod = M.build_graphs(entry["model"], tiny=man["tiny"], attn="sdpa")[graph]
    xs = list(M.make_inputs(graph, mod, batch, seq, None, torch.float16, seed=1))
    opts = kiln.SessionOptions()
    for sp, x in zip(entry["inputs"]["fp16"], xs):
        for d, size in zip(sp["dims"], x.shape):
            if isinstance(d, str):
                opts.add_free_dimension_override_by_name(d, int(size))
    s = kiln.InferenceSession(os.path.join(models, entry["files"]["fp16"]), sess_options=opts,
                              providers=["CUDAExecutionProvider"])
    print("== %s" % spec, file=sys.stderr, flush=True)
    s.run(None, dict(zip([i["name"] for i in entry["inputs"]["fp16"]], [x.numpy() for x in xs])))
    sys.stderr.flush()
