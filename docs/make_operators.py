#!/usr/bin/env python3
"""Writes docs/operators.md: every operator kiln has a kernel for (from `kiln ops`), the ONNX
operators of the standard domains it does not have (from the installed onnx package's schemas),
and, per domain, every operator ONNX Runtime's CPU execution provider registers a kernel for
(from docs/ort_cpu_ops.txt) with kiln's status and, for each one kiln lacks, the reason.

`python3 docs/make_operators.py --update-ort-list` first rewrites docs/ort_cpu_ops.txt from the
installed onnxruntime's kernel registry (the same call ORT's gen_opkernel_doc.py makes to write
its docs/OperatorKernels.md)."""
import collections
import os
import subprocess
import sys

import onnx
import onnx.defs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORT_LIST = os.path.join(ROOT, "docs", "ort_cpu_ops.txt")


def update_ort_list():
    """docs/ort_cpu_ops.txt from the installed onnxruntime's CPU kernel registry."""
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state as C
    ops = sorted({(k.domain or "ai.onnx", k.op_name) for k in C.get_all_opkernel_def()
                  if k.provider == "CPUExecutionProvider"})
    head = ["# ONNX Runtime CPUExecutionProvider: every operator it registers a kernel for, one",
            "# 'domain op' per line (kernel versions and types left out).",
            "# source: onnxruntime %s" % onnxruntime.__version__,
            "# Taken with onnxruntime.capi.onnxruntime_pybind11_state.get_all_opkernel_def(),",
            "# provider CPUExecutionProvider (the registry ORT's docs/OperatorKernels.md is generated",
            "# from). Rewrite with: python3 docs/make_operators.py --update-ort-list"]
    open(ORT_LIST, "w").write("\n".join(head + ["%s %s" % o for o in ops]) + "\n")
    print("wrote docs/ort_cpu_ops.txt: %d operators (onnxruntime %s)" % (len(ops), onnxruntime.__version__))


if "--update-ort-list" in sys.argv[1:]:
    update_ort_list()

# Why kiln has no kernel for an operator ORT's CPU provider registers. Every missing operator
# needs an entry: the script stops if one is not explained.
NCHWC = "internal to ORT's graph transformers (NCHWc blocked layout, inserted at the highest optimisation level; never in a model file)"
NHWC_Q = "internal to ORT's graph transformers (NHWC layout for quantized convolutions)"
MEMCPY = "internal to ORT (copy nodes its session inserts between providers; never in a model file); kiln places its own copies"
OLD_EXPERIMENTAL = "deprecated: experimental ONNX op removed from the standard (no schema in onnx); ORT keeps a kernel for old models"
SUPERSEDED = "deprecated: early contrib form of the standard ai.onnx op of the same name, which kiln has"
GENERATION = "not implemented: whole generation loop (decoder subgraphs run inside one op, ORT's transformer converters emit it)"
NEW_ORT = "not yet implemented (recent ORT contrib op)"
TODO = "not yet implemented"
MISSING_REASON = {
    ("ai.onnx", "Affine"): OLD_EXPERIMENTAL,
    ("ai.onnx", "Crop"): OLD_EXPERIMENTAL,
    ("ai.onnx", "DynamicSlice"): OLD_EXPERIMENTAL,
    ("ai.onnx", "ImageScaler"): OLD_EXPERIMENTAL,
    ("ai.onnx", "ParametricSoftplus"): OLD_EXPERIMENTAL,
    ("ai.onnx", "Scale"): OLD_EXPERIMENTAL,
    ("ai.onnx", "ScaledTanh"): OLD_EXPERIMENTAL,
    ("ai.onnx", "MemcpyFromHost"): MEMCPY,
    ("ai.onnx", "MemcpyToHost"): MEMCPY,
    ("com.microsoft.nchwc", "AveragePool"): NCHWC,
    ("com.microsoft.nchwc", "Conv"): NCHWC,
    ("com.microsoft.nchwc", "GlobalAveragePool"): NCHWC,
    ("com.microsoft.nchwc", "GlobalMaxPool"): NCHWC,
    ("com.microsoft.nchwc", "MaxPool"): NCHWC,
    ("com.microsoft.nchwc", "ReorderInput"): NCHWC,
    ("com.microsoft.nchwc", "ReorderOutput"): NCHWC,
    ("com.microsoft.nchwc", "Upsample"): NCHWC,
    ("com.microsoft", "NhwcMaxPool"): NHWC_Q,
    ("com.microsoft", "QLinearConv"): NHWC_Q + "; kiln has ai.onnx QLinearConv",
    ("com.microsoft", "FusedGemm"): "not yet implemented: made by ORT's Gemm + activation fusion, so seen only in models ORT saved after optimising",
    ("com.microsoft", "TransposeMatMul"): "deprecated: old name of FusedMatMul (same ORT kernel), which kiln has",
    ("com.microsoft", "GatherND"): SUPERSEDED,
    ("com.microsoft", "GridSample"): SUPERSEDED,
    ("com.microsoft", "Pad"): SUPERSEDED,
    ("com.microsoft", "Range"): SUPERSEDED,
    ("com.microsoft", "Trilu"): SUPERSEDED,
    ("com.microsoft", "Unique"): SUPERSEDED,
    ("com.microsoft", "SampleOp"): "ORT's example op for writing contrib kernels; no use in models",
    ("com.microsoft", "SparseToDenseMatMul"): "needs sparse tensors at run time; kiln densifies sparse initializers at load and has no sparse value type",
    ("com.microsoft", "BeamSearch"): GENERATION,
    ("com.microsoft", "GreedySearch"): GENERATION,
    ("com.microsoft", "Sampling"): GENERATION,
    ("com.microsoft", "WhisperBeamSearch"): GENERATION,
    ("com.microsoft", "BifurcationDetector"): TODO + " (generation helper for speculative decoding)",
    ("com.microsoft", "NGramRepeatBlock"): TODO + " (generation helper: n-gram repeat blocking)",
    ("com.microsoft", "DecoderMaskedMultiHeadAttention"): TODO + " (one-token decoding attention with beam cache indirection)",
    ("com.microsoft", "SparseAttention"): TODO + " (block-sparse attention)",
    ("com.microsoft", "MoE"): TODO + " (mixture of experts)",
    ("com.microsoft", "QMoE"): TODO + " (quantized mixture of experts)",
    ("com.microsoft", "QEmbedLayerNormalization"): TODO + " (quantized EmbedLayerNormalization)",
    ("com.microsoft", "QLinearWhere"): TODO,
    ("com.microsoft", "DynamicQuantizeLSTM"): TODO + " (LSTM with dynamically quantized weights)",
    ("com.microsoft", "AttnLSTM"): TODO + " (legacy attention LSTM)",
    ("com.microsoft", "MatMulInteger16"): TODO,
    ("com.microsoft", "MatMulBnb4"): TODO + " (bitsandbytes FP4/NF4 weights)",
    ("com.microsoft", "MatMulFpQ4"): TODO + " (older blockwise 4-bit MatMul; ORT's quantizer now emits MatMulNBits, which kiln has)",
    ("com.microsoft", "CDist"): TODO,
    ("com.microsoft", "ConvTransposeWithDynamicPads"): TODO,
    ("com.microsoft", "CropAndResize"): TODO,
    ("com.microsoft", "DynamicTimeWarping"): TODO,
    ("com.microsoft", "ExpandDims"): TODO + " (Unsqueeze with the axis as an input)",
    ("com.microsoft", "Inverse"): TODO,
    ("com.microsoft", "MaxpoolWithMask"): TODO,
    ("com.microsoft", "MurmurHash3"): TODO,
    ("com.microsoft", "UnfoldTensor"): TODO,
    ("com.microsoft", "WordConvEmbedding"): TODO,
    ("com.microsoft", "CausalConvWithState"): NEW_ORT + "; kiln has the standard ai.onnx CausalConvWithState (opset 27)",
    ("com.microsoft", "LinearAttention"): NEW_ORT + "; kiln has the standard ai.onnx LinearAttention (opset 27)",
    ("com.microsoft", "VarlenCausalConvWithState"): NEW_ORT,
    ("com.microsoft", "BranchwiseRMSNorm"): NEW_ORT,
    ("com.microsoft", "EngramGate"): NEW_ORT,
    ("com.microsoft", "GatedAdd"): NEW_ORT,
    ("com.microsoft", "GatedDeltaNet"): NEW_ORT,
    ("com.microsoft", "GatedRMSNorm"): NEW_ORT,
    ("com.microsoft", "GatherPacked"): NEW_ORT,
    ("com.microsoft", "HyperConnectionPostMix"): NEW_ORT,
    ("com.microsoft", "HyperConnectionPreMix"): NEW_ORT,
    ("com.microsoft", "LinearAttentionGate"): NEW_ORT,
    ("com.microsoft", "MoEGroupRouter"): NEW_ORT,
    ("com.microsoft", "MRotaryEmbedding"): NEW_ORT,
    ("com.microsoft", "NGramHashMapping"): NEW_ORT,
    ("com.microsoft", "ScaledSiLU"): NEW_ORT,
    ("com.microsoft", "VarlenNGramHashMapping"): NEW_ORT,
}
# kiln operators ORT's CPU provider has no kernel for, where the reason is not one of those the
# script works out (an ONNX function body, an ORT schema without a CPU kernel).
EXTRA_NOTE = {
    ("ai.onnx", "Constant"): "ORT turns Constant nodes into initializers instead of running a kernel",
    ("ai.onnx", "ImageDecoder"): "ORT has no kernel for it",
    ("ai.onnx.preview", "FlexAttention"): "preview op; ORT has no kernel for it (ONNX gives it a function body)",
    ("ai.onnx.preview.training", "Adagrad"): "training op; ORT's inference CPU provider has no kernel",
    ("ai.onnx.preview.training", "Adam"): "training op; ORT's inference CPU provider has no kernel",
    ("ai.onnx.preview.training", "Momentum"): "training op; ORT's inference CPU provider has no kernel",
    ("com.microsoft", "LayerNormalization"): "ORT registers LayerNormalization in the default (ai.onnx) domain only; kiln accepts both",
    ("com.microsoft", "SimplifiedLayerNormalization"): "ORT registers SimplifiedLayerNormalization in the default (ai.onnx) domain only; kiln accepts both",
    ("kiln", "MatMulBias"): "kiln's own fused op, made by its graph optimiser",
}

kiln = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "kiln")
rows = [l.split("\t") for l in subprocess.run([kiln, "ops"], capture_output=True, text=True, check=True).stdout.splitlines()]
ops = collections.OrderedDict()
for dom, name, since, prov in rows:
    e = ops.setdefault((dom, name), {"since": set(), "prov": set()})
    e["since"].add(int(since))
    e["prov"].add(prov)
have = {(("" if d == "ai.onnx" else d), n) for d, n in ops}
missing = collections.defaultdict(set)
for s in onnx.defs.get_all_schemas_with_history():
    if s.domain in ("", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training") and not s.deprecated:
        if (s.domain, s.name) not in have:
            missing[s.domain or "ai.onnx"].add(s.name)

# ONNX Runtime's CPU provider list
ort_version = "?"
ort_ops = []
for line in open(ORT_LIST):
    line = line.strip()
    if line.startswith("# source: onnxruntime "):
        ort_version = line.split()[-1]
    if line and not line.startswith("#"):
        d, n = line.split()
        ort_ops.append((d, n))
ort_set = set(ort_ops)
ort_doms = sorted({d for d, _ in ort_ops}, key=lambda d: (d != "ai.onnx", d))


def kiln_status(key):
    p = ops.get(key, {"prov": set()})["prov"]
    if "cpu" in p:
        return "CPU + CUDA" if "cuda" in p else "CPU"
    return "CUDA only" if p else "missing"


unexplained = [k for k in ort_ops if kiln_status(k) in ("missing", "CUDA only") and k not in MISSING_REASON]
if unexplained:
    sys.exit("make_operators.py: no reason given in MISSING_REASON for: " +
             ", ".join("%s %s" % k for k in unexplained))
for k in MISSING_REASON:
    if k not in ort_set:
        print("note: MISSING_REASON has %s %s, which ORT's CPU list does not" % k, file=sys.stderr)
    elif kiln_status(k) in ("CPU", "CPU + CUDA"):
        print("note: MISSING_REASON has %s %s, which kiln now has" % k, file=sys.stderr)

out = ["# Operator coverage", "",
       "Generated by `python3 docs/make_operators.py` from `kiln ops`, onnx %s's schemas and "
       "`docs/ort_cpu_ops.txt` (ONNX Runtime %s's CPU provider)." % (onnx.__version__, ort_version), ""]
by_dom = collections.Counter(d for d, _ in ops)
out.append("| domain | operators with kernels |")
out.append("|---|---|")
for d, c in sorted(by_dom.items()):
    out.append("| %s | %d |" % (d, c))
out += ["", "Not implemented (standard domains): " +
        ("; ".join("%s: %s" % (d, ", ".join(sorted(v))) for d, v in sorted(missing.items())) or "none") + ".", ""]

# ---- against ONNX Runtime's CPU execution provider ----
out += ["## Against ONNX Runtime's CPU provider", "",
        "Every operator ONNX Runtime %s's CPU execution provider registers a kernel for, per domain, "
        "and whether kiln has it (matched by domain and name; opset ranges and types are not "
        "compared). The list is `docs/ort_cpu_ops.txt`, taken from ORT's kernel registry. "
        "\"CPU + CUDA\": kiln also has a CUDA kernel." % ort_version, "",
        "| domain | ORT CPU operators | kiln has | of which also CUDA | missing |", "|---|---|---|---|---|"]
tot = [0, 0, 0, 0]
for d in ort_doms:
    st = [kiln_status(k) for k in ort_ops if k[0] == d]
    c = [len(st), sum(s in ("CPU", "CPU + CUDA") for s in st), st.count("CPU + CUDA"),
         sum(s in ("missing", "CUDA only") for s in st)]
    tot = [a + b for a, b in zip(tot, c)]
    out.append("| %s | %d | %d | %d | %d |" % ((d,) + tuple(c)))
out.append("| all | %d | %d | %d | %d |" % tuple(tot))
for d in ort_doms:
    keys = [k for k in ort_ops if k[0] == d]
    gone = [k for k in keys if kiln_status(k) in ("missing", "CUDA only")]
    out += ["", "### %s" % d, ""]
    out.append("kiln has %d of %d; missing: %s." % (len(keys) - len(gone), len(keys),
                                                     ", ".join(n for _, n in gone) or "none"))
    out += ["", "| operator | kiln | reason it is missing |", "|---|---|---|"]
    for k in keys:
        st = kiln_status(k)
        out.append("| %s | %s | %s |" % (k[1], "**%s**" % st if k in gone else st,
                                         MISSING_REASON[k] if k in gone else ""))

# kiln operators ORT's CPU provider has no kernel for
ort_schemas = set()
try:
    from onnxruntime.capi import onnxruntime_pybind11_state as _C
    ort_schemas = {(s.domain or "ai.onnx", s.name) for s in _C.get_all_operator_schema()}
except ImportError:
    pass
extra = [k for k in ops if k not in ort_set]
out += ["", "### kiln operators ORT's CPU provider has no kernel for", "",
        "| domain | operator | note |", "|---|---|---|"]
for d, n in extra:
    note = EXTRA_NOTE.get((d, n))
    if note is None and d in ("ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training"):
        try:
            s = onnx.defs.get_schema(n, "" if d == "ai.onnx" else d)
            if s.has_function or s.has_context_dependent_function:
                note = "ONNX gives it a function body; ORT has no kernel (it runs such ops by inlining the body)"
        except onnx.defs.SchemaError:
            pass
    if note is None and (d, n) in ort_schemas:
        note = "ORT defines the op but registers no CPU kernel for it"
    out.append("| %s | %s | %s |" % (d, n, note or ""))
out.append("")

out += ["## Operators with kernels", "",
        "| domain | operator | entries from opset | providers |", "|---|---|---|---|"]
for (d, n), e in ops.items():
    out.append("| %s | %s | %s | %s |" % (d, n, ", ".join(map(str, sorted(e["since"]))), ", ".join(sorted(e["prov"]))))
open(os.path.join(ROOT, "docs", "operators.md"), "w").write("\n".join(out) + "\n")
print("wrote docs/operators.md: %d operators; ORT CPU: %d, kiln has %d, missing %d" % (len(ops), tot[0], tot[1], tot[3]))
