#!/usr/bin/env python3
"""Writes the GPU benchmark's models as ONNX, float32 and float16, plus manifest.json.

Models (random weights, fixed seed, no downloads; see models.py): BERT-base, GPT-2 small as a
prefill graph and a one-token decode graph with a K/V cache, ViT-B/16 at 224x224, ResNet-50
(skipped with a message where torchvision is missing). Each graph is exported with the TorchScript
exporter (dynamo=False; kiln's optimizer knows its patterns), opset 17, dynamic batch / sequence /
past axes; the dynamo exporter is the fallback. The float16 file is the same module after .half(),
exported again (on the GPU where there is one), so its constants and casts are float16 natively.

  python3 bench/gpu_models/export.py --out /tmp/gpu_models
  python3 bench/gpu_models/export.py --out /tmp/tiny --tiny      # toy configs: seconds, on a CPU

--check (on by default) runs each float32 file in onnxruntime at a shape other than the one traced
(and BERT with a padded attention mask) against PyTorch, so a traced-in shape or mask shows at once.
"""
import argparse
import json
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as M  # noqa: E402

BATCHES = [1, 8, 32]
OPSET = 17
_NP_NAMES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool"}


def cases_of(graph, tiny, batches):
    """The benchmark rows of a graph (run.py reads them from the manifest)."""
    long_seq, short_seq = (32, 16) if tiny else (512, 128)
    if graph == "bert":
        return [dict(batch=b, seq=s) for s in (short_seq, long_seq) for b in batches]
    if graph == "gpt2_prefill":
        return [dict(batch=b, seq=long_seq) for b in batches]
    if graph == "gpt2_decode":
        return [dict(batch=b, seq=1, past=long_seq, steps=8 if tiny else 32) for b in batches]
    return [dict(batch=b) for b in batches]


def export_one(module, args, path, dims, opset):
    """torch.onnx.export, TorchScript first; returns the exporter that wrote the file."""
    axes = {n: {i: d for i, d in enumerate(ds) if d} for n, ds in dims.items()}
    common = dict(input_names=module.inputs, output_names=module.outputs, dynamic_axes=axes)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, path, opset_version=opset, do_constant_folding=True,
                              dynamo=False, **common)
            return "torchscript"
        except Exception as e:  # noqa: BLE001 - any exporter failure: try the other one
            print("    TorchScript exporter failed (%s: %s); trying dynamo" % (type(e).__name__, str(e)[:300]))
        auto = torch.export.Dim.AUTO
        shapes = [{i: auto for i, d in enumerate(dims[n]) if d} for n in module.inputs]
        if len(module.inputs) > 1 and module.inputs[1].startswith("past"):  # forward(input_ids, *past)
            shapes = [shapes[0], tuple(shapes[1:])]
        prog = torch.onnx.export(module, args, opset_version=max(opset, 18), dynamo=True,
                                 input_names=module.inputs, output_names=module.outputs, dynamic_shapes=shapes)
        prog.save(path, external_data=False)
        return "dynamo"


def describe(path):
    """Inputs, outputs and op counts of an ONNX file, as the manifest records them."""
    import onnx
    g = onnx.load(path, load_external_data=False).graph

    def io(v):
        t = v.type.tensor_type
        dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
        return {"name": v.name, "dtype": _NP_NAMES.get(t.elem_type, str(t.elem_type)), "dims": dims}
    ops = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return [io(v) for v in g.input], [io(v) for v in g.output], len(g.node), dict(sorted(ops.items()))


def check_with_ort(graph, module, path):
    """Largest |ORT - torch| / max|torch| over all outputs, at a shape unlike the traced one."""
    import numpy as np
    import onnxruntime as ort
    ins = M.make_inputs(graph, module, batch=3, seq=21, past=19, seed=7)  # traced: batch 2, seq / past 16
    if graph == "bert":  # pad the last 5 positions of row 0: a traced-in mask would not see it
        ins[1][0, -5:] = 0
    with torch.no_grad():
        ref = module(*ins)
    ref = ref if isinstance(ref, tuple) else (ref,)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = s.run(None, {n: t.numpy() for n, t in zip(module.inputs, ins)})
    err = 0.0
    for r, g in zip(ref, got):
        r = r.float().numpy()
        if r.shape != g.shape:
            raise RuntimeError("%s: output shape %s, torch %s" % (path, g.shape, r.shape))
        err = max(err, float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-6)))
    return err


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the .onnx files and manifest.json")
    ap.add_argument("--models", nargs="*", default=M.MODELS, choices=M.MODELS)
    ap.add_argument("--precisions", nargs="*", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    ap.add_argument("--batches", nargs="*", type=int, default=None, help="rows to list (default 1 8 32; tiny 1 2)")
    ap.add_argument("--device", default="auto", help="where to trace: cuda, cpu or auto (cuda if present)")
    ap.add_argument("--tiny", action="store_true", help="toy configs (2 layers, width 32) for testing")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the onnxruntime check")
    ap.add_argument("--opset", type=int, default=OPSET)
    a = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    batches = a.batches or ([1, 2] if a.tiny else BATCHES)
    os.makedirs(a.out, exist_ok=True)
    import transformers
    manifest = {"format": 1, "seed": M.SEED, "tiny": a.tiny, "opset": a.opset, "traced_on": device,
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "graphs": {}, "skipped": {}}
    t_all = time.time()
    for name in a.models:
        try:
            graphs = M.build_graphs(name, tiny=a.tiny, attn="eager")
        except ImportError as e:
            print("%s: skipped (%s)" % (name, e))
            manifest["skipped"][name] = str(e)
            continue
        checksum = M.weight_checksum(next(iter(graphs.values())))
        for graph, mod in graphs.items():
            manifest["graphs"][graph] = {"model": name, "checksum": checksum, "files": {}, "exporter": {},
                                         "cases": cases_of(graph, a.tiny, batches)}
            if graph not in ("vit", "resnet50"):
                manifest["graphs"][graph]["vocab"] = mod.m.config.vocab_size
        for prec in [p for p in ("fp32", "fp16") if p in a.precisions]:  # .half() is in place: fp32 first
            dtype = torch.float16 if prec == "fp16" else torch.float32
            for graph, mod in graphs.items():
                mod.to(device, dtype)
                entry, fname = manifest["graphs"][graph], "%s.%s.onnx" % (graph, prec)
                t0 = time.time()
                ex = M.make_inputs(graph, mod, batch=2, seq=1 if graph == "gpt2_decode" else 16, past=16,
                                   dtype=dtype, device=device)
                path = os.path.join(a.out, fname)
                entry["exporter"][prec] = export_one(mod, ex, path, M.dims_of(graph, mod), a.opset)
                entry["files"][prec] = fname
                ins, outs, n_nodes, ops = describe(path)
                entry.setdefault("inputs", {})[prec] = ins
                entry.setdefault("outputs", {})[prec] = outs
                entry.setdefault("nodes", {})[prec] = {"count": n_nodes, "ops": ops}
                msg = "%-13s %s  %4d nodes  %6.1f MB  %5.1fs  (%s)" % (
                    graph, prec, n_nodes, os.path.getsize(path) / 1e6, time.time() - t0, entry["exporter"][prec])
                if a.check and prec == "fp32":
                    mod.to("cpu")
                    entry["ort_check_rel_err"] = err = check_with_ort(graph, mod, path)
                    msg += "  ort check %.1e%s" % (err, "" if err < 1e-3 else "  <-- MISMATCH")
                print(msg, flush=True)
        for graph, mod in graphs.items():
            for case in manifest["graphs"][graph]["cases"]:
                case["shapes"] = M.input_shapes(graph, mod, case["batch"], case.get("seq"), case.get("past"))
        del graphs
        if device == "cuda":
            torch.cuda.empty_cache()
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("wrote %d graphs to %s in %.0fs" % (len(manifest["graphs"]), a.out, time.time() - t_all))


if __name__ == "__main__":
    main()
