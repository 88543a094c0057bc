"""Differential mode of the graph fuzzer (docs/fuzzing.md; run by hand, not in CI).

Decodes fuzz_graph recipes into ONNX models and their feeds (the target's FUZZ_GRAPH_DUMP_DIR mode),
runs each model in kiln and in onnxruntime with the same feeds and, where onnxruntime accepts the
graph and runs it, compares every output: type, dtype, shape, then values (integers, bools and
strings exactly; floats within a tolerance that fits the dtype, NaN in the same places, infinities
with the same sign). kiln refusing a graph that onnxruntime runs is reported too. Recipes are made
for kiln's op table, so each graph is first fitted to onnxruntime's operator schemas
(fit_to_schemas; KILN_DIFF_AS_IS=1 skips it), or onnxruntime would refuse nearly all of them.

Graphs are chains of up to six nodes, so one wrong value makes every later output that uses it
wrong as well: a case is charged to the first node (in graph order) with a differing output, and
its difference is keyed "<domain:>Op kind" (kind: kiln-error, type, dtype, shape, nan, values).
Keys listed in tests/fuzz/differential_known.txt are triaged (with the reason there); any other
key is new, and the script exits 1.

    python3 tests/fuzz/differential.py build-fuzz/graph_corpus [more corpus dirs or recipe files]
        [--mutations N] [--fuzz-bin build-fuzz/fuzz_graph] [--limit N] [--json report.json]
        [--keep DIR] [--show 3]
    python3 tests/fuzz/differential.py --cases DIR/cases    # cases kept by an earlier --keep DIR

Each case runs in a worker process with an address-space limit and a deadline, so that a hang, an
allocation storm or a crash in either runtime costs one case, not the whole run; a crash is
charged to the runtime that was running (a kiln crash is a new key, "crash" kind)."""
import argparse
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KNOWN = os.path.join(HERE, "differential_known.txt")

CASE_SECONDS = 60            # a worker silent for this long on one case is killed
WORKER_ADDRESS_SPACE = 6 << 30
KILN_MEMORY_LIMIT = 256 << 20  # as in fuzz_graph.c
KILN_TIMEOUT_MS = 2000.0
FIT = os.environ.get("KILN_DIFF_AS_IS") is None  # --as-is: compare the decoded graphs unrepaired
# (rtol, atol) by numpy dtype name; outputs of a few ops on hostile values (3e38, denormals)
# legitimately differ in the last bits between two correct implementations
TOLERANCE = {"float16": (1e-2, 1e-3), "float32": (1e-4, 1e-5), "float64": (1e-9, 1e-12),
             "bfloat16": (2e-2, 1e-2)}


# ---------------------------------------------------------------- worker: one case at a time
def _load_case(case):
    import numpy as np
    import onnx
    from onnx import numpy_helper
    model = onnx.load(os.path.join(case, "model.onnx"))
    feeds, k = {}, 0
    while os.path.exists(os.path.join(case, "test_data_set_0", f"input_{k}.pb")):
        t = onnx.load_tensor(os.path.join(case, "test_data_set_0", f"input_{k}.pb"))
        if t.data_type == onnx.TensorProto.STRING:
            # the recipe's strings are any bytes but NUL; both runtimes take str, so bytes that are
            # not UTF-8 travel as surrogate escapes (each runtime then refuses or encodes them)
            a = np.array([v.decode("utf-8", "surrogateescape") for v in t.string_data],
                         dtype=object).reshape(tuple(t.dims))
        else:
            a = numpy_helper.to_array(t)
        feeds[t.name] = a
        k += 1
    return model, feeds


# Preferred element types when a node's type parameter must be bound (first allowed one wins).
_PREFERRED = ["float", "int64", "int32", "float16", "bool", "uint8", "string", "double", "int8",
              "uint16", "int16", "uint32", "uint64", "bfloat16"]


_SCHEMAS = {}


def _schema(domain, name, opset):
    """onnxruntime's own schema for an op at an opset (its table covers every domain it runs)."""
    if not _SCHEMAS:
        import onnxruntime.capi._pybind_state as C
        for sc in C.get_all_operator_schema():
            _SCHEMAS.setdefault((sc.domain if sc.domain != "ai.onnx" else "", sc.name), []).append(sc)
    best = None
    for sc in _SCHEMAS.get((domain if domain != "ai.onnx" else "", name), []):
        if sc.since_version <= opset and (best is None or sc.since_version > best.since_version):
            best = sc
    return best


# a value for a required attribute the recipe left out, by AttributeProto type
_REQUIRED_DEFAULT = {2: 1, 1: 1.0, 7: [1], 6: [1.0]}


def fit_to_schemas(model):
    """Makes a decoded recipe fit the operator schemas onnxruntime checks, so that it accepts more
    of them: per node (in order), attributes the schema lacks or types differently and repeats are
    dropped (a required int or float one that is missing is set to 1), inputs and outputs are
    trimmed or filled to the schema's counts (a required input that is absent takes an existing
    value), and an input whose element type its parameter does not allow, or that differs from the
    type already bound to that type parameter, goes through a Cast. The recipe's values, shapes and
    hostile attribute values stay: what is repaired is only what onnxruntime refuses before
    running anything, where a fix is cheap."""
    import onnx
    from onnx import helper, shape_inference

    g = model.graph
    opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in model.opset_import}
    known = {}  # value name -> elem type (0: unknown)
    for vi in g.input:
        known[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        known[t.name] = t.data_type
    nodes, dropped = list(g.node), set()
    del g.node[:]

    def learn_types(names):
        """Element types of the values just made, from ONNX's own inference."""
        # types only: with the recipe's shapes (dims of 2^40) and initializer data, ONNX's
        # inference can take minutes on one graph
        light = onnx.ModelProto()
        light.CopyFrom(model)
        del light.graph.initializer[:]
        for vi in light.graph.input:
            vi.type.tensor_type.ClearField("shape")
        for t in model.graph.initializer:
            light.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, None))
        try:
            inf = shape_inference.infer_shapes(light, strict_mode=False)
        except Exception:
            return
        for vi in list(inf.graph.value_info) + list(inf.graph.output):
            if vi.name in names and vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                known[vi.name] = vi.type.tensor_type.elem_type

    def type_name(t):
        return helper.tensor_dtype_to_string(t)[len("TensorProto."):].lower()

    for k, node in enumerate(nodes):
        pool = [x for x in node.input if x and x not in dropped] or [x for x in known if x]
        ins = [(x if x not in dropped else (pool[0] if pool else "")) for x in node.input]
        schema = _schema(node.domain, node.op_type, opsets.get(node.domain, 1))
        if schema is None:
            del node.input[:]
            node.input.extend(ins)
            g.node.append(node)
            continue
        seen, attrs = set(), []
        for a in node.attribute:
            spec = schema.attributes.get(a.name)
            if spec is None or a.name in seen or int(spec.type) != a.type:
                continue
            seen.add(a.name)
            attrs.append(a)
        for name, spec in schema.attributes.items():
            if spec.required and name not in seen and int(spec.type) in _REQUIRED_DEFAULT:
                attrs.append(helper.make_attribute(name, _REQUIRED_DEFAULT[int(spec.type)]))
        del node.attribute[:]
        node.attribute.extend(attrs)

        ins = ins[:schema.max_input]
        while len(ins) < schema.min_input and pool:
            ins.append(pool[len(ins) % len(pool)])
        formal = schema.inputs
        for i, x in enumerate(ins):
            if not x and i < len(formal) and str(formal[i].option).endswith("Single") and pool:
                ins[i] = pool[0]
        while ins and not ins[-1]:
            ins.pop()

        outs = list(node.output)
        dropped.update(outs[schema.max_output:])
        outs = outs[:schema.max_output]
        while len(outs) < schema.min_output:
            outs.append(f"y{k}_{len(outs)}x")
            g.output.append(helper.make_empty_tensor_value_info(outs[-1]))

        # one element type per type parameter: the first input's, if allowed, else a preferred one
        allowed = {c.type_param_str: [t[len("tensor("):-1] for t in c.allowed_type_strs if t.startswith("tensor(")]
                   for c in schema.type_constraints}
        bound = {}
        for i, x in enumerate(ins):
            if not x or not formal:
                continue
            param = formal[min(i, len(formal) - 1)].typeStr
            ok = allowed.get(param) or ([param[len("tensor("):-1]] if param.startswith("tensor(") else None)
            if not ok:
                continue
            have = known.get(x, 0)
            have_name = type_name(have) if have else None
            if param not in bound:
                bound[param] = have_name if have_name in ok else \
                    next((t for t in _PREFERRED if t in ok), ok[0])
            to = getattr(onnx.TensorProto, bound[param].upper(), None)
            if not have or have_name == bound[param] or to is None or "string" in (have_name, bound[param]):
                continue
            cast = f"c{k}_{i}"
            g.node.append(helper.make_node("Cast", [x], [cast], name=cast, to=to))
            g.output.append(helper.make_empty_tensor_value_info(cast))  # compared, and charged, too
            known[cast] = to
            ins[i] = cast
        del node.input[:]
        node.input.extend(ins)
        del node.output[:]
        node.output.extend(outs)
        g.node.append(node)
        learn_types(set(outs))
        for o in outs:
            known.setdefault(o, 0)
    keep = [o for o in g.output if o.name not in dropped]
    del g.output[:]
    g.output.extend(keep)
    return model


def _first_line(e):
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


def _run_ort(data, feeds):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 4
    s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, feeds)))


def _run_kiln(data, feeds):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import kiln
    so = kiln.SessionOptions()
    so.memory_limit = KILN_MEMORY_LIMIT
    s = kiln.InferenceSession(data, sess_options=so, threads=1)
    ro = kiln.RunOptions()
    ro.timeout_ms = KILN_TIMEOUT_MS
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, feeds, run_options=ro)))


# Ops whose values are random draws (and what depends on them): only types and shapes compare.
RANDOM_OPS = {"Bernoulli", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
              "Multinomial", "Dropout"}


def _random(model, name):
    """Whether a value depends on a random op's output."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    todo, seen = [name], set()
    while todo:
        v = todo.pop()
        n = made_by.get(v)
        if n is None or v in seen:
            continue
        seen.add(v)
        if n.op_type in RANDOM_OPS:
            return True
        todo += list(n.input)
    return False


def _compare(got, want, values=True):
    """None when the same, else (kind, detail). values=False: types and shapes only."""
    import numpy as np
    if isinstance(want, (list, tuple)) or isinstance(got, (list, tuple)):
        if not isinstance(got, (list, tuple)) or not isinstance(want, (list, tuple)):
            return "type", f"kiln {type(got).__name__}, ort {type(want).__name__}"
        if len(got) != len(want):
            return "shape", f"sequence length kiln {len(got)}, ort {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            d = _compare(g, w, values)
            if d:
                return d[0], f"[{i}] {d[1]}"
        return None
    if isinstance(want, dict) or isinstance(got, dict):
        if not isinstance(got, dict) or not isinstance(want, dict):
            return "type", f"kiln {type(got).__name__}, ort {type(want).__name__}"
        if sorted(got) != sorted(want):
            return "values", "map keys differ"
        for k in want:
            d = _compare(np.asarray(got[k]), np.asarray(want[k]), values)
            if d:
                return d[0], f"[{k!r}] {d[1]}"
        return None
    if want is None or got is None:
        return None if got is None and want is None else ("type", f"kiln {got is None and 'None'}, ort {want is None and 'None'}")
    g, w = np.asarray(got), np.asarray(want)
    if g.dtype != w.dtype and not (g.dtype.kind in "OUS" and w.dtype.kind in "OUS"):
        return "dtype", f"kiln {g.dtype}, ort {w.dtype}"
    if g.shape != w.shape:
        return "shape", f"kiln {g.shape}, ort {w.shape}"
    if not values:
        return None
    if w.dtype.kind == "f":
        gf, wf = g.astype(np.float64), w.astype(np.float64)
        gn, wn = np.isnan(gf), np.isnan(wf)
        if (gn != wn).any():
            i = int(np.flatnonzero((gn != wn).ravel())[0])
            return "nan", f"at flat {i}: kiln {gf.ravel()[i]!r}, ort {wf.ravel()[i]!r}"
        rtol, atol = TOLERANCE.get(w.dtype.name, (1e-4, 1e-5))
        with np.errstate(all="ignore"):
            fin = np.isfinite(wf) & np.isfinite(gf)
            bad = ~gn & ((np.isfinite(wf) != np.isfinite(gf)) | (np.isinf(wf) & (gf != wf)) |
                         (fin & (np.abs(gf - wf) > atol + rtol * np.abs(wf))))
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            return "values", (f"{int(bad.sum())} of {bad.size} differ; first at flat {i}: "
                              f"kiln {gf.ravel()[i]!r}, ort {wf.ravel()[i]!r}")
        return None
    if w.dtype.kind in "OUS":
        gl = [x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else str(x) for x in g.ravel()]
        wl = [x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else str(x) for x in w.ravel()]
        diff = [i for i, (a, b) in enumerate(zip(gl, wl)) if a != b]
        return ("values", f"{len(diff)} strings differ; first at flat {diff[0]}: kiln {gl[diff[0]]!r}, "
                f"ort {wl[diff[0]]!r}") if diff else None
    ne = g != w
    if ne.any():
        i = int(np.flatnonzero(ne.ravel())[0])
        return "values", (f"{int(ne.sum())} of {ne.size} differ; first at flat {i}: "
                          f"kiln {g.ravel()[i]!r}, ort {w.ravel()[i]!r}")
    return None


def _node_of(model, name):
    for k, n in enumerate(model.graph.node):
        if name in n.output:
            return k, n
    return None, None


def _node_key(n):
    return f"{n.domain}:{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type


def _failing_node(model, message):
    """The node a kiln error names (kiln prefixes errors with the node's name), else the first."""
    nodes = list(model.graph.node)
    for n in nodes:
        if f"'{n.name}'" in message or f"node {n.name} " in message or f"node {n.name}:" in message \
                or f"{n.name} (" in message:
            return n
    return nodes[0] if nodes else None


def run_case(case, say):
    model, feeds = _load_case(case)
    if FIT:
        say({"phase": "fit"})  # ONNX's shape inference runs here (and has crashed on recipes)
        model = fit_to_schemas(model)
    data = model.SerializeToString()
    say({"phase": "ort"})
    try:
        want = _run_ort(data, feeds)
    except Exception as e:  # onnxruntime refuses the graph or its run: nothing to compare
        return {"status": "ort-refused", "why": _first_line(e)}
    say({"phase": "kiln"})
    try:
        got = _run_kiln(data, feeds)
    except Exception as e:
        msg = _first_line(e)
        n = _failing_node(model, msg)
        return {"status": "diff", "key": f"{_node_key(n)} kiln-error", "detail": msg,
                "node": n.name if n is not None else ""}
    diffs = []
    for name, w in want.items():
        if name not in got:
            diffs.append((name, ("type", "output missing in kiln")))
            continue
        d = _compare(got[name], w, values=not _random(model, name))
        if d:
            diffs.append((name, d))
    if not diffs:
        return {"status": "same", "outputs": len(want)}
    # charge the first node in graph order; later differences are usually its consequences
    diffs.sort(key=lambda nd: _node_of(model, nd[0])[0] if _node_of(model, nd[0])[0] is not None else 1 << 30)
    name, (kind, detail) = diffs[0]
    _, n = _node_of(model, name)
    return {"status": "diff", "key": f"{_node_key(n)} {kind}", "detail": f"{name}: {detail}",
            "node": n.name, "also": len(diffs) - 1}


def worker():
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE, WORKER_ADDRESS_SPACE))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    def say(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        case = line.strip()
        try:
            res = run_case(case, say)
        except Exception as e:  # a case the driver itself cannot read
            res = {"status": "driver-error", "why": _first_line(e)}
        res["case"] = case
        say(res)


# ---------------------------------------------------------------- parent: cases, workers, report
_WHO = {"load": "onnx", "fit": "onnx", "ort": "ort", "kiln": "kiln"}  # who runs in each phase


class Worker:
    def __init__(self):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                  bufsize=1)
        self.fd, self.pending = self.p.stdout.fileno(), b""

    def _line(self, deadline):
        """One line from the worker; "" at its end, None at the deadline. Reads the pipe itself:
        a buffered reader would hide a second line that arrived with the first from select."""
        while b"\n" not in self.pending:
            r, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.time()))
            if not r:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return ""
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode()

    def ask(self, case):
        """The case's result; a crash or a timeout is charged to the phase that was running."""
        self.p.stdin.write(case + "\n")
        self.p.stdin.flush()
        phase, deadline = "load", time.time() + CASE_SECONDS
        while True:
            line = self._line(deadline)
            if line is None:
                self.kill()
                return {"status": "hang" if phase == "kiln" else f"{_WHO[phase]}-hang", "phase": phase,
                        "why": f"no answer in {CASE_SECONDS} s during {phase}"}
            if not line:
                code = self.p.wait()
                return {"status": "crash" if phase == "kiln" else f"{_WHO[phase]}-crash", "phase": phase,
                        "why": f"worker died with {code} during {phase}"}
            msg = json.loads(line)
            if "phase" in msg and "status" not in msg:
                phase = msg["phase"]
                continue
            return msg

    def kill(self):
        try:
            self.p.kill()
            self.p.wait()
        except OSError:
            pass


def dump_cases(inputs, fuzz_bin, out, mutations=0, seed=1):
    """Runs the fuzz target over recipe files and corpus directories in dump mode."""
    files = []
    for p in inputs:
        if os.path.isdir(p):
            files += [os.path.join(p, f) for f in sorted(os.listdir(p))]
        else:
            files.append(p)
    env = dict(os.environ, FUZZ_GRAPH_DUMP_DIR=out)
    for i in range(0, len(files), 500):  # libFuzzer runs each file named on its command line once
        subprocess.run([fuzz_bin, *files[i:i + 500]], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
    if mutations:
        # libFuzzer's own mutations of the corpus, decoded and dumped (nothing runs in this mode,
        # so its coverage guidance sees only the decoder: these are plain random variations)
        dirs = [p for p in inputs if os.path.isdir(p)]
        with tempfile.TemporaryDirectory(prefix="kiln-diff-mut-") as scratch:
            # libFuzzer counts the corpus it loads first among its -runs
            subprocess.run([fuzz_bin, scratch, *dirs, f"-runs={mutations + len(files)}", f"-seed={seed}",
                            "-max_len=4096"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
    return sorted(os.path.join(out, d) for d in os.listdir(out))


def read_known(path):
    known = {}
    if not os.path.exists(path):
        return known
    for line in open(path):
        key, _, why = line.partition("#")
        key = " ".join(key.split())
        if key:
            known[key] = why.strip()
    return known


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="*", help="corpus directories or recipe files")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fuzz-bin", default=os.path.join(ROOT, "build-fuzz", "fuzz_graph"))
    ap.add_argument("--cases", help="already dumped cases (a FUZZ_GRAPH_DUMP_DIR) instead of recipes")
    ap.add_argument("--mutations", type=int, default=0,
                    help="also this many libFuzzer mutations of the corpus directories")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer's seed for --mutations")
    ap.add_argument("--keep", help="keep the dumped cases in this directory (for --cases)")
    ap.add_argument("--known", default=KNOWN)
    ap.add_argument("--limit", type=int, default=0, help="at most this many cases")
    ap.add_argument("--json", help="write every case's result here")
    ap.add_argument("--show", type=int, default=2, help="example cases printed per difference")
    args = ap.parse_args()
    if args.worker:
        return worker()
    if not args.inputs and not args.cases:
        ap.error("give corpus directories or recipe files, or --cases")

    with tempfile.TemporaryDirectory(prefix="kiln-diff-") as tmp:
        if args.keep:
            tmp = args.keep
            os.makedirs(tmp, exist_ok=True)
        if args.cases:
            cases = sorted(os.path.join(args.cases, d) for d in os.listdir(args.cases))
        else:
            cases = dump_cases(args.inputs, args.fuzz_bin, os.path.join(tmp, "cases"), args.mutations,
                               args.seed)
        if args.limit:
            cases = cases[:args.limit]
        known = read_known(args.known)
        results, w, t0 = [], Worker(), time.time()
        for i, case in enumerate(cases):
            res = w.ask(case)
            res.setdefault("case", case)
            if "phase" in res:  # the worker hung or died: a fresh one for the next case
                w.kill()
                w = Worker()
                res["key"] = f"{res['status']} ({res['phase']})"
            results.append(res)
            if (i + 1) % 500 == 0:
                print(f"... {i + 1}/{len(cases)} cases, {time.time() - t0:.0f} s", file=sys.stderr)
        w.kill()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return report(results, known, args.show, time.time() - t0)


def report(results, known, show, seconds):
    from collections import Counter, defaultdict
    status = Counter(r["status"] for r in results)
    print(f"{len(results)} cases in {seconds:.0f} s: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
    ran = status["same"] + status["diff"]
    outputs = sum(r.get("outputs", 0) for r in results)
    print(f"onnxruntime ran {ran} of them; {status['same']} agreed on all {outputs} outputs")
    by_key = defaultdict(list)
    for r in results:
        if "key" in r:
            by_key[r["key"]].append(r)
    new = 0
    for key in sorted(by_key, key=lambda k: (k in known, k)):
        rs = by_key[key]
        tag = "known" if key in known else "NEW"
        new += tag == "NEW"
        print(f"\n{tag}  {key}  ({len(rs)} cases)" + (f"  # {known[key]}" if key in known else ""))
        for r in rs[:show]:
            print(f"    {r['case']}: {r.get('detail') or r.get('why')}")
    stale = sorted(set(known) - set(by_key))
    if stale:
        print("\nknown differences not seen this time: " + ", ".join(stale))
    print(f"\n{len(by_key)} kinds of difference, {new} new")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
