#!/usr/bin/env python3
"""How evenly each node's parallel loops would share their work among T threads, measured on any
machine (even one with fewer cores): kiln runs with KILN_PARTITION=T (src/ops/par_trace.c), which
times every chunk of every loop alone and assigns the chunks to T simulated threads the way the
pool does. Per node: loops, items and chunks of its largest loop, serial time, the time on T
threads (span, no fork or memory-bandwidth cost) and eff = serial / (T * span).

  python3 bench/partition_report.py --threads 16 --synthetic gpt2 --batch 1
  python3 bench/partition_report.py --threads 16 --model gpt2.onnx --dim batch=8 --dim seq=128

--synthetic builds one transformer layer's node shapes (GPT-2 / BERT: 128 tokens, ViT-B/16: 197),
the unfused 4-D attention products included, with random weights.
"""
import argparse
import collections
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "kiln-partition-run"


def synthetic(kind, batch):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    S = 197 if kind == "vit" else 128
    d, nh, hd, ff = 768, 12, 64, 3072
    B = batch
    rng = np.random.default_rng(0)
    nodes, ins, outs, inits, feeds = [], [], [], [], {}

    def inp(name, shape):
        ins.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        feeds[name] = rng.standard_normal(shape).astype(np.float32)
        return name

    def weight(name, shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.02).astype(np.float32), name))
        return name

    def node(op, i, o, name, domain="", **attrs):
        nodes.append(helper.make_node(op, i, [o], name=name, domain=domain, **attrs))
        outs.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, None))

    x = inp("x", [B, S, d])
    h = inp("h", [B, S, ff])
    q, k, v = (inp(n, [B, nh, S, hd]) for n in ("q", "k", "v"))
    kt = inp("kt", [B, nh, hd, S])
    sc = inp("scores", [B, nh, S, S])
    node("MatMul", [x, weight("w_qkv", [d, 3 * d])], "qkv", "qkv_proj")
    node("Add", ["qkv_raw", weight("b_qkv", [3 * d])], "qkv_b", "qkv_bias")
    ins.append(helper.make_tensor_value_info("qkv_raw", TensorProto.FLOAT, [B, S, 3 * d]))
    feeds["qkv_raw"] = rng.standard_normal([B, S, 3 * d]).astype(np.float32)
    node("Attention", [q, k, v], "attn", "attention_fused", is_causal=1 if kind == "gpt2" else 0)
    node("MatMul", [q, kt], "qk", "attn_qk_4d")
    node("Softmax", [sc], "probs", "attn_softmax", axis=-1)
    node("MatMul", [sc, v], "pv", "attn_pv_4d")
    node("Transpose", [q], "qT", "head_merge", perm=[0, 2, 1, 3])
    node("MatMul", [x, weight("w_o", [d, d])], "o", "out_proj")
    node("Add", [x, inp("res", [B, S, d])], "r", "residual")
    node("LayerNormalization", [x, weight("ln_g", [d]), weight("ln_b", [d])], "ln", "layernorm", axis=-1)
    node("MatMul", [x, weight("w_fc", [d, ff])], "fc", "ffn_up")
    node("Gelu", [h], "g", "gelu")
    node("MatMul", [h, weight("w_pr", [ff, d])], "pr", "ffn_down")
    node("FastGelu", [h], "fg", "fast_gelu", domain="com.microsoft")
    # GPT-2's Conv1D layers export as 2-D Gemm with a bias row
    x2 = inp("x2", [B * S, d])
    node("Gemm", [x2, weight("w_fc2", [d, ff]), weight("b_fc2", [ff])], "gemm_fc", "gemm_ffn_up")
    nodes.append(helper.make_node("Split", ["qkv_raw"], ["sq", "sk", "sv"], name="qkv_split", axis=2,
                                  num_outputs=3))
    outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("sq", "sk", "sv")]
    node("Concat", [k], "present", "present_concat", axis=2)
    g = helper.make_graph(nodes, kind, ins, outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    return m.SerializeToString(), feeds


def model_feeds(path, dims):
    import onnx
    m = onnx.load(path, load_external_data=False)
    inited = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in m.graph.input:
        if vi.name in inited:
            continue
        t = vi.type.tensor_type
        shape = [dims.get(x.dim_param, 1) if x.dim_param or not x.dim_value else x.dim_value for x in t.shape.dim]
        dt = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dt, np.integer):
            feeds[vi.name] = rng.integers(0, 100, shape).astype(dt)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dt)
    with open(path, "rb") as f:
        return f.read(), feeds


def child(blob_path, feeds_path, runs):
    """Runs in a process whose environment has KILN_PARTITION: traces `runs` runs."""
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import kiln
    feeds = dict(np.load(feeds_path))
    s = kiln.InferenceSession(open(blob_path, "rb").read(), threads=2)
    for _ in range(runs):
        os.write(2, (MARK + "\n").encode())
        s.run(None, feeds)


def trace(blob, feeds, threads, runs=4):
    import tempfile
    tmp = tempfile.mkdtemp()
    bp, fp = os.path.join(tmp, "m.onnx"), os.path.join(tmp, "f.npz")
    open(bp, "wb").write(blob)
    np.savez(fp, **feeds)
    env = dict(os.environ, KILN_PARTITION=str(threads))
    r = subprocess.run([sys.executable, __file__, "--child", bp, fp, str(runs)], env=env,
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr[-3000:])
    # the first run warms caches; of the others, each loop's least disturbed run (smallest span)
    per_run = [[ln.split("\t") for ln in part.splitlines() if ln.startswith("kiln-partition\t")]
               for part in r.stderr.split(MARK + "\n")[2:]]
    per_run = [p for p in per_run if len(p) == len(per_run[0])]
    span = lambda f: float(f[-2].split("=")[1])  # noqa: E731
    return [min((p[i] for p in per_run), key=span) for i in range(len(per_run[0]))]


def report(lines, threads, title, fork_us=3.0):
    nodes = collections.OrderedDict()
    for f in lines:
        name, op = f[1], f[2]
        kv = dict(x.split("=") for x in f[3:])
        n = nodes.setdefault(name, dict(op=op, loops=0, items=0, chunks=0, serial=0.0, span=0.0, big=-1.0))
        n["loops"] += 1
        n["serial"] += float(kv["serial_us"])
        n["span"] += float(kv["span_us"])
        if float(kv["serial_us"]) > n["big"]:
            n["big"] = float(kv["serial_us"])
            n["items"], n["chunks"] = int(kv["items"]), int(kv["chunks"])
    print(f"### {title}: {threads} threads\n")
    print("| node | op | loops | items | chunks | serial us | span us | eff |")
    print("|---|---|---|---|---|---|---|---|")
    tot_s = tot_p = 0.0
    for name, n in nodes.items():
        eff = n["serial"] / (threads * n["span"]) if n["span"] > 0 else 1.0
        tot_s += n["serial"]
        tot_p += n["span"]
        print(f"| {name} | {n['op']} | {n['loops']} | {n['items']} | {n['chunks']} | {n['serial']:.0f} "
              f"| {n['span']:.0f} | {eff:.2f} |")
    if tot_p:
        print(f"| **all** | | | | | {tot_s:.0f} | {tot_p:.0f} | {tot_s / (threads * tot_p):.2f} |")
    print()
    # a fork pays off when serial / T + fork < serial: about serial > fork. Flag loops that fork
    # with less than 2 forks' worth of work, and serial loops with more than 20.
    tiny = [(f[1], f[2], float(f[6].split("=")[1])) for f in lines
            if int(f[5].split("=")[1]) > 1 and float(f[6].split("=")[1]) < 2 * fork_us]
    big = [(f[1], f[2], float(f[6].split("=")[1])) for f in lines
           if int(f[5].split("=")[1]) == 1 and float(f[6].split("=")[1]) > 20 * fork_us]
    print(f"Loops that fork with under {2 * fork_us:g} us of work: {len(tiny)}"
          + "".join(f"\n- {n} ({op}): {us:.1f} us" for n, op, us in tiny[:20]))
    print(f"\nLoops that stay serial with over {20 * fork_us:g} us of work: {len(big)}"
          + "".join(f"\n- {n} ({op}): {us:.1f} us" for n, op, us in big[:20]))
    print()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--synthetic", choices=["gpt2", "bert", "vit"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--model")
    ap.add_argument("--dim", action="append", default=[], help="symbolic dim=value")
    ap.add_argument("--fork-us", type=float, default=3.0,
                    help="cost of one parallel-for (bench/fork_cost.c) for the too-small/too-big lists")
    a = ap.parse_args()
    if a.model:
        blob, feeds = model_feeds(a.model, {k: int(v) for k, v in (x.split("=") for x in a.dim)})
        title = os.path.basename(a.model)
    elif a.synthetic:
        blob, feeds = synthetic(a.synthetic, a.batch)
        title = f"{a.synthetic} layer shapes, batch {a.batch}"
    else:
        ap.error("--model or --synthetic")
    report(trace(blob, feeds, a.threads), a.threads, title, a.fork_us)


if __name__ == "__main__":
    main()
