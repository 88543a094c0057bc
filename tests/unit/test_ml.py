"""ai.onnx.ml operators against onnxruntime: feature transforms, LabelEncoder, linear models,
tree ensembles (random trees built here, shaped like scikit-learn / LightGBM exports) and SVMs."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import check, rand, run_kiln, run_ort  # noqa: E402

RNG = np.random.default_rng(17)
ML = "ai.onnx.ml"


def ml_model(op, inputs, outputs, attrs=None, ml_opset=1, onnx_opset=18, string_consts=None):
    """inputs: (name, array) graph inputs; outputs: (name, TensorProto type or None);
    string_consts: name -> object array fed as an initializer (strings cannot be fed)."""
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in inputs]
    inits = [helper.make_tensor(k, TensorProto.STRING, v.shape, [s.encode() for s in v.flat])
             for k, v in (string_consts or {}).items()]
    names = [n for n, _ in inputs] + list(string_consts or {})
    node = helper.make_node(op, names, [o for o, _ in outputs], domain=ML, **(attrs or {}))
    outs = [helper.make_tensor_value_info(o, t, None) if t else helper.make_empty_tensor_value_info(o)
            for o, t in outputs]
    g = helper.make_graph([node], "g", vis, outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", onnx_opset), helper.make_opsetid(ML, ml_opset)])
    m.ir_version = 10
    return m


FEATURE_TYPES = [np.float32, np.float64, np.int64, np.int32]


def check_via_float(build, x, out_dtypes, rtol=1e-5, atol=1e-6):
    """For input types onnxruntime has no kernel for: kiln on x against onnxruntime on x as float32
    (the values are exact in float32 here); out_dtypes are the types kiln must produce."""
    got = run_kiln(build(x), {"x": x})
    x32 = x.astype(np.float32)
    want = run_ort(build(x32), {"x": x32})
    assert len(got) == len(want) == len(out_dtypes)
    for g, w, dt in zip(got, want, out_dtypes):
        assert g.dtype == np.dtype(dt) and g.shape == w.shape
        if g.dtype.kind in "OUS":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dt", FEATURE_TYPES)
def test_binarizer(dt):
    x = rand(RNG, (5, 7), dt, -5, 5)
    m = ml_model("Binarizer", [("x", x)], [("y", None)], {"threshold": 0.5})
    if dt == np.float32:
        check(m, {"x": x})
    else:  # onnxruntime has float only
        got = run_kiln(m, {"x": x})[0]
        assert got.dtype == dt
        np.testing.assert_array_equal(got, (x > 0.5).astype(dt))


@pytest.mark.parametrize("dt", FEATURE_TYPES)
@pytest.mark.parametrize("shape,idx", [((4, 6), [0, 5, 2]), ((6,), [1, 1, 4]), ((2, 3, 5), [4, 0])])
def test_array_feature_extractor(dt, shape, idx):
    x = rand(RNG, shape, dt)
    i = np.array(idx, np.int64)
    m = ml_model("ArrayFeatureExtractor", [("x", x), ("i", i)], [("y", None)])
    check(m, {"x": x, "i": i})


def test_array_feature_extractor_strings_and_bad_index():
    x = np.array(["a", "bb", "c", "dd", "e", "ff"], dtype=object).reshape(2, 3)
    i = np.array([2, 0], np.int64)
    m = ml_model("ArrayFeatureExtractor", [("i", i)], [("y", TensorProto.STRING)], string_consts={"x": x})
    m.graph.node[0].input[:] = ["x", "i"]
    check(m, {"i": i})
    bad = np.array([3], np.int64)
    with pytest.raises(Exception):
        run_kiln(m, {"i": bad})


@pytest.mark.parametrize("dt", FEATURE_TYPES)
@pytest.mark.parametrize("per_feature", [False, True])
def test_scaler(dt, per_feature):
    x = rand(RNG, (6, 4), dt)
    attrs = {"scale": [0.5, 2.0, -1.0, 3.0] if per_feature else [1.5],
             "offset": [1.0, -2.0, 0.5, 0.0] if per_feature else [0.25]}
    m = ml_model("Scaler", [("x", x)], [("y", None)], attrs)
    check(m, {"x": x})


@pytest.mark.parametrize("dt", FEATURE_TYPES)
@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
@pytest.mark.parametrize("shape", [(5, 4), (4,)])
def test_normalizer(dt, norm, shape):
    x = rand(RNG, shape, dt, -3, 3)
    m = ml_model("Normalizer", [("x", x)], [("y", None)], {"norm": norm})
    check(m, {"x": x})


@pytest.mark.parametrize("dt", [np.int64, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6,), (3, 4)])
def test_one_hot_encoder_numeric(dt, shape):
    x = RNG.integers(0, 6, size=shape).astype(dt)
    m = ml_model("OneHotEncoder", [("x", x)], [("y", None)], {"cats_int64s": [1, 3, 5, 0], "zeros": 1})
    if dt != np.int32:
        check(m, {"x": x})
    else:  # no int32 kernel in onnxruntime
        check_via_float(lambda v: ml_model("OneHotEncoder", [("x", v)], [("y", None)],
                                           {"cats_int64s": [1, 3, 5, 0], "zeros": 1}), x, [np.float32])


def test_one_hot_encoder_strings_and_zeros_flag():
    x = np.array(["a", "c", "b", "a"], dtype=object)
    m = ml_model("OneHotEncoder", [], [("y", None)], {"cats_strings": ["a", "b", "c"]}, string_consts={"x": x})
    check(m, {})
    i = np.array([1, 7], np.int64)
    m = ml_model("OneHotEncoder", [("x", i)], [("y", None)], {"cats_int64s": [1, 2], "zeros": 0})
    with pytest.raises(Exception):
        run_kiln(m, {"x": i})


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("replaced", [float("nan"), 0.0, -1.0])
@pytest.mark.parametrize("per_feature", [False, True])
def test_imputer_float(dt, replaced, per_feature):
    x = rand(RNG, (6, 3), dt)
    x[RNG.random((6, 3)) < 0.3] = np.nan
    x[0, 0], x[1, 1], x[2, 2] = 0.0, -1.0, 0.0
    attrs = {"imputed_value_floats": [9.0, 8.0, 7.0] if per_feature else [5.5], "replaced_value_float": replaced}
    build = lambda v: ml_model("Imputer", [("x", v)], [("y", None)], attrs)  # noqa: E731
    if dt == np.float32:
        check(build(x), {"x": x})
    else:  # no double kernel in onnxruntime
        check_via_float(build, x.astype(np.float32).astype(dt), [dt])


def test_imputer_int():
    x = RNG.integers(-2, 3, size=(5, 3)).astype(np.int64)
    m = ml_model("Imputer", [("x", x)], [("y", None)],
                 {"imputed_value_int64s": [7, 8, 9], "replaced_value_int64": -1})
    check(m, {"x": x})


# ---- LabelEncoder ----

def test_label_encoder_v1_both_directions():
    x = np.array(["b", "zz", "a", "c"], dtype=object)
    attrs = {"classes_strings": ["a", "b", "c"], "default_int64": 42}
    m = ml_model("LabelEncoder", [], [("y", TensorProto.INT64)], attrs, string_consts={"x": x})
    check(m, {})
    i = np.array([2, 0, 5, -1], np.int64)
    m = ml_model("LabelEncoder", [("x", i)], [("y", TensorProto.STRING)],
                 {"classes_strings": ["a", "b", "c"], "default_string": "?"})
    check(m, {"x": i})


@pytest.mark.parametrize("kind", ["s2i", "i2s", "f2f", "i2f", "f2i", "s2f", "s2s"])
def test_label_encoder_v2(kind):
    keys_s, keys_i, keys_f = ["x", "y", "z", "w"], [3, -1, 7, 100], [0.5, -2.0, 3.25, 1e9]
    vals = {"i": [10, 20, 30, 40], "s": ["p", "q", "r", "s"], "f": [1.5, 2.5, -3.5, 0.0]}
    attrs = {}
    k, v = kind[0], kind[2]
    attrs[{"s": "keys_strings", "i": "keys_int64s", "f": "keys_floats"}[k]] = {"s": keys_s, "i": keys_i, "f": keys_f}[k]
    attrs[{"s": "values_strings", "i": "values_int64s", "f": "values_floats"}[v]] = vals[v]
    attrs[{"s": "default_string", "i": "default_int64", "f": "default_float"}[v]] = \
        {"s": "none", "i": -7, "f": 99.0}[v]
    out_t = {"s": TensorProto.STRING, "i": TensorProto.INT64, "f": TensorProto.FLOAT}[v]
    if k == "s":
        x = np.array(["y", "x", "nope", "w", "z", "y"], dtype=object).reshape(2, 3)
        m = ml_model("LabelEncoder", [], [("y", out_t)], attrs, ml_opset=2, string_consts={"x": x})
        check(m, {})
    else:
        base = keys_i if k == "i" else keys_f
        x = np.array([base[1], base[0], 12345, base[3], base[2], base[1]],
                     dtype=np.int64 if k == "i" else np.float32).reshape(3, 2)
        m = ml_model("LabelEncoder", [("x", x)], [("y", out_t)], attrs, ml_opset=2)
        check(m, {"x": x})


def test_label_encoder_large_int64_exact():
    keys = [2**60 + 1, 2**60 + 2, -(2**62) + 3]
    vals = [2**61 + 7, 5, -(2**59) - 1]
    x = np.array([2**60 + 2, 2**60 + 1, 2**60, -(2**62) + 3], np.int64)
    m = ml_model("LabelEncoder", [("x", x)], [("y", TensorProto.INT64)],
                 {"keys_int64s": keys, "values_int64s": vals, "default_int64": 9}, ml_opset=2)
    check(m, {"x": x})
    np.testing.assert_array_equal(run_kiln(m, {"x": x})[0], [5, 2**61 + 7, 9, -(2**59) - 1])


@pytest.mark.parametrize("kdt,vdt", [(np.int64, np.float64), (np.float64, np.int64), (np.int32, np.int16),
                                     (np.float32, np.int32)])
def test_label_encoder_v4_tensors(kdt, vdt):
    keys = np.array([5, 1, 9, 3], kdt)
    vals = np.array([50, 10, 90, 30], vdt)
    attrs = {"keys_tensor": numpy_helper.from_array(keys, "k"), "values_tensor": numpy_helper.from_array(vals, "v"),
             "default_tensor": numpy_helper.from_array(np.array([-5], vdt), "d")}
    x = np.array([1, 3, 4, 9, 5, 0], kdt)
    m = ml_model("LabelEncoder", [("x", x)], [("y", None)], attrs, ml_opset=4)
    if kdt in (np.int64, np.float64) and vdt in (np.int64, np.float64):
        check(m, {"x": x})
    else:  # onnxruntime's opset-4 kernel lacks these types: compare with the mapping itself
        got = run_kiln(m, {"x": x})[0]
        table = dict(zip(keys.tolist(), vals.tolist()))
        assert got.dtype == vdt
        np.testing.assert_array_equal(got, np.array([table.get(v, -5) for v in x.tolist()], vdt))


# ---- linear models ----

@pytest.mark.parametrize("dt", FEATURE_TYPES)
@pytest.mark.parametrize("pt", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
@pytest.mark.parametrize("labels", ["ints", "strings"])
def test_linear_classifier_multiclass(dt, pt, labels):
    x = rand(RNG, (7, 4), dt, -2, 2)
    coef = RNG.uniform(-1, 1, size=12).tolist()
    attrs = {"coefficients": coef, "intercepts": [0.1, -0.2, 0.3], "post_transform": pt}
    if pt == "PROBIT":  # probit needs scores in (0, 1)
        attrs["coefficients"] = (np.abs(coef) * 0.01).tolist()
        attrs["intercepts"] = [0.3, 0.5, 0.7]
    attrs["classlabels_ints" if labels == "ints" else "classlabels_strings"] = \
        [4, 7, 9] if labels == "ints" else ["a", "b", "c"]
    m = ml_model("LinearClassifier", [("x", x)], [("y", None), ("z", None)], attrs)
    # probit's float erf^-1 approximation cancels badly near 0.5; allow for summation order
    check(m, {"x": x}, rtol=1e-4, atol=3e-4 if pt == "PROBIT" else 1e-5)


@pytest.mark.parametrize("pt", ["NONE", "LOGISTIC", "SOFTMAX"])
@pytest.mark.parametrize("labels", ["ints", "strings"])
def test_linear_classifier_binary(pt, labels):
    x = rand(RNG, (9, 3))
    attrs = {"coefficients": [0.5, -1.0, 0.25], "intercepts": [0.1], "post_transform": pt}
    attrs["classlabels_ints" if labels == "ints" else "classlabels_strings"] = \
        [0, 1] if labels == "ints" else ["no", "yes"]
    m = ml_model("LinearClassifier", [("x", x)], [("y", None), ("z", None)], attrs)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dt", FEATURE_TYPES)
@pytest.mark.parametrize("targets", [1, 3])
def test_linear_regressor(dt, targets):
    x = rand(RNG, (6, 5), dt)
    attrs = {"coefficients": RNG.uniform(-1, 1, size=5 * targets).tolist(),
             "intercepts": RNG.uniform(-1, 1, size=targets).tolist(), "targets": targets}
    build = lambda v: ml_model("LinearRegressor", [("x", v)], [("y", None)], attrs)  # noqa: E731
    if dt == np.float32:
        check(build(x), {"x": x}, rtol=1e-4, atol=1e-5)
    else:  # onnxruntime has float only
        check_via_float(build, x.astype(np.float32).astype(dt), [np.float32], rtol=1e-4, atol=1e-5)


# ---- tree ensembles ----

def random_trees(n_trees, depth, n_features, rng, modes=("BRANCH_LEQ",)):
    """Full binary trees in the (tree id, node id) form; returns node attrs and leaf ids."""
    at = {k: [] for k in ["nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values",
                          "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids",
                          "nodes_missing_value_tracks_true"]}
    leaves = []
    for t in range(n_trees):
        n_int = 2 ** depth - 1
        for nid in range(2 ** (depth + 1) - 1):
            at["nodes_treeids"].append(t)
            at["nodes_nodeids"].append(nid)
            if nid < n_int:
                at["nodes_featureids"].append(int(rng.integers(0, n_features)))
                at["nodes_values"].append(float(rng.uniform(-1, 1)))
                at["nodes_modes"].append(str(rng.choice(modes)))
                at["nodes_truenodeids"].append(2 * nid + 1)
                at["nodes_falsenodeids"].append(2 * nid + 2)
                at["nodes_missing_value_tracks_true"].append(int(rng.integers(0, 2)))
            else:
                at["nodes_featureids"].append(0)
                at["nodes_values"].append(0.0)
                at["nodes_modes"].append("LEAF")
                at["nodes_truenodeids"].append(0)
                at["nodes_falsenodeids"].append(0)
                at["nodes_missing_value_tracks_true"].append(0)
                leaves.append((t, nid))
    return at, leaves


def tree_x(dt, n=40, f=5):
    x = rand(RNG, (n, f), dt, -1.5, 1.5)
    if np.dtype(dt).kind == "f":
        x[RNG.random((n, f)) < 0.1] = np.nan
    return x


ALL_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ")


@pytest.mark.parametrize("agg", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("n_targets", [1, 3])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_tree_regressor(agg, n_targets, dt):
    at, leaves = random_trees(4, 3, 5, RNG, modes=ALL_MODES)
    at.update(target_treeids=[], target_nodeids=[], target_ids=[], target_weights=[])
    for t, nid in leaves:
        for k in range(n_targets):
            if n_targets == 1 or RNG.random() < 0.7:
                at["target_treeids"].append(t)
                at["target_nodeids"].append(nid)
                at["target_ids"].append(k)
                at["target_weights"].append(float(RNG.uniform(-2, 2)))
    at.update(n_targets=n_targets, aggregate_function=agg, base_values=RNG.uniform(-1, 1, n_targets).tolist())
    x = tree_x(dt)
    m = ml_model("TreeEnsembleRegressor", [("x", x)], [("y", None)], at)
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


def classifier_attrs(n_classes, kind, rng, labels="ints", pt="NONE"):
    at, leaves = random_trees(5, 3, 5, rng)
    at.update(class_treeids=[], class_nodeids=[], class_ids=[], class_weights=[], post_transform=pt)
    for t, nid in leaves:
        if kind == "single":  # one score per leaf (binary GBT-style)
            ids = [0]
        elif kind == "single1":
            ids = [1]
        else:
            ids = range(n_classes)
        for c in ids:
            at["class_treeids"].append(t)
            at["class_nodeids"].append(nid)
            at["class_ids"].append(c)
            w = rng.uniform(0, 0.3) if kind == "positive" else rng.uniform(-1, 1)
            at["class_weights"].append(float(w))
    if labels == "ints":
        at["classlabels_int64s"] = list(range(10, 10 + n_classes))
    else:
        at["classlabels_strings"] = ["c%d" % i for i in range(n_classes)]
    return at


@pytest.mark.parametrize("pt", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("labels", ["ints", "strings"])
@pytest.mark.parametrize("dt", FEATURE_TYPES)
def test_tree_classifier_multiclass(pt, labels, dt):
    at = classifier_attrs(3, "all", RNG, labels, pt)
    at["base_values"] = [0.1, -0.2, 0.05]
    x = tree_x(dt)
    m = ml_model("TreeEnsembleClassifier", [("x", x)], [("y", None), ("z", None)], at)
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["all", "single", "single1", "positive"])
@pytest.mark.parametrize("pt", ["NONE", "LOGISTIC"])
@pytest.mark.parametrize("labels", ["ints", "strings"])
def test_tree_classifier_binary(kind, pt, labels):
    at = classifier_attrs(2, kind, RNG, labels, pt)
    if labels == "ints":  # onnxruntime reports 0/1 for two int labels other than [0, 1]
        at["classlabels_int64s"] = [0, 1]
    if kind == "single":
        at["base_values"] = [0.3]
    x = tree_x(np.float32)
    m = ml_model("TreeEnsembleClassifier", [("x", x)], [("y", None), ("z", None)], at)
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


def test_tree_classifier_as_tensor_attrs_v3():
    at = classifier_attrs(3, "all", RNG)
    at["nodes_values_as_tensor"] = numpy_helper.from_array(np.array(at.pop("nodes_values"), np.float64), "nv")
    at["class_weights_as_tensor"] = numpy_helper.from_array(np.array(at.pop("class_weights"), np.float64), "cw")
    x = tree_x(np.float64)
    m = ml_model("TreeEnsembleClassifier", [("x", x)], [("y", None), ("z", None)], at, ml_opset=3)
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


def v5_attrs(rng, n_trees=3, depth=3, n_features=5, n_targets=2, member=False, dt=np.float32):
    """TreeEnsemble (ml opset 5) layout: nodes by position, leaves in their own arrays."""
    at = {k: [] for k in ["nodes_featureids", "nodes_truenodeids", "nodes_trueleafs", "nodes_falsenodeids",
                          "nodes_falseleafs", "nodes_missing_value_tracks_true", "leaf_targetids", "tree_roots"]}
    splits, modes, lw, members = [], [], [], []
    for _ in range(n_trees):
        base = len(at["nodes_featureids"])
        at["tree_roots"].append(base)
        n_int = 2 ** depth - 1
        for i in range(n_int):
            at["nodes_featureids"].append(int(rng.integers(0, n_features)))
            mode = int(rng.integers(0, 7 if member else 6))
            modes.append(mode)
            if mode == 6:
                members.extend(float(v) for v in rng.integers(-2, 3, size=3))
                members.append(float("nan"))
                splits.append(0.0)
            else:
                splits.append(float(rng.uniform(-1, 1)))
            at["nodes_missing_value_tracks_true"].append(int(rng.integers(0, 2)))
            for side, child in (("true", 2 * i + 1), ("false", 2 * i + 2)):
                if child < n_int:
                    at["nodes_%snodeids" % side].append(base + child)
                    at["nodes_%sleafs" % side].append(0)
                else:
                    at["nodes_%snodeids" % side].append(len(at["leaf_targetids"]))
                    at["nodes_%sleafs" % side].append(1)
                    at["leaf_targetids"].append(int(rng.integers(0, n_targets)))
                    lw.append(float(rng.uniform(-1, 1)))
    at["nodes_splits"] = numpy_helper.from_array(np.array(splits, dt), "s")
    at["nodes_modes"] = numpy_helper.from_array(np.array(modes, np.uint8), "m")
    at["leaf_weights"] = numpy_helper.from_array(np.array(lw, dt), "w")
    if member:
        at["membership_values"] = numpy_helper.from_array(np.array(members, dt), "mv")
    at["n_targets"] = n_targets
    return at


@pytest.mark.parametrize("agg", [0, 1, 2, 3])
@pytest.mark.parametrize("pt", [0, 1, 2])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_tree_ensemble_v5(agg, pt, dt):
    at = v5_attrs(RNG, dt=dt)
    at.update(aggregate_function=agg, post_transform=pt)
    x = tree_x(dt)
    m = ml_model("TreeEnsemble", [("x", x)], [("y", None)], at, ml_opset=5, onnx_opset=21)
    # the spec numbers SOFTMAX 1 and LOGISTIC 2; onnxruntime reads them the other way round
    ort_at = dict(at, post_transform={1: 2, 2: 1}.get(pt, pt))
    m_ort = ml_model("TreeEnsemble", [("x", x)], [("y", None)], ort_at, ml_opset=5, onnx_opset=21)
    got, want = run_kiln(m, {"x": x})[0], run_ort(m_ort, {"x": x})[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_tree_ensemble_v5_membership():
    at = v5_attrs(RNG, member=True)
    x = RNG.integers(-2, 3, size=(30, 5)).astype(np.float32)
    x[0, 0] = np.nan
    m = ml_model("TreeEnsemble", [("x", x)], [("y", None)], at, ml_opset=5, onnx_opset=21)
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


def test_tree_bad_feature_index():
    at, leaves = random_trees(1, 2, 5, RNG)
    at.update(target_treeids=[leaves[0][0]], target_nodeids=[leaves[0][1]], target_ids=[0], target_weights=[1.0],
              n_targets=1)
    x = rand(RNG, (3, 2))  # fewer features than the trees read
    m = ml_model("TreeEnsembleRegressor", [("x", x)], [("y", None)], at)
    with pytest.raises(Exception):
        run_kiln(m, {"x": x})


# ---- SVMs ----

def svc_attrs(n_classes, n_features, rng, kernel="RBF", proba=False, labels="ints", pt="NONE"):
    vpc = [int(v) for v in rng.integers(2, 5, size=n_classes)]
    nsv = sum(vpc)
    at = {"kernel_type": kernel, "kernel_params": [0.3, 0.1, 2.0], "vectors_per_class": vpc,
          "support_vectors": rng.uniform(-1, 1, size=nsv * n_features).tolist(),
          "coefficients": rng.uniform(-1, 1, size=(n_classes - 1) * nsv).tolist(),
          "rho": rng.uniform(-0.5, 0.5, size=n_classes * (n_classes - 1) // 2).tolist(), "post_transform": pt}
    if proba:
        k = n_classes * (n_classes - 1) // 2
        at["prob_a"] = rng.uniform(-3, -1, size=k).tolist()
        at["prob_b"] = rng.uniform(-0.2, 0.2, size=k).tolist()
    if labels == "ints":
        at["classlabels_ints"] = list(range(n_classes))
    else:
        at["classlabels_strings"] = ["k%d" % i for i in range(n_classes)]
    return at


@pytest.mark.parametrize("kernel", ["RBF", "LINEAR", "POLY", "SIGMOID"])
@pytest.mark.parametrize("n_classes", [2, 3, 4])
@pytest.mark.parametrize("proba", [False, True])
def test_svm_classifier_svc(kernel, n_classes, proba):
    at = svc_attrs(n_classes, 4, RNG, kernel, proba)
    x = rand(RNG, (8, 4), np.float32, -1, 1)
    m = ml_model("SVMClassifier", [("x", x)], [("y", None), ("z", None)], at)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("labels", ["ints", "strings"])
def test_svm_classifier_linear_mode(n_classes, labels):
    at = {"coefficients": RNG.uniform(-1, 1, size=n_classes * 4).tolist(), "rho": [0.2], "kernel_type": "LINEAR",
          "kernel_params": [0.0, 0.0, 0.0]}
    at["classlabels_ints" if labels == "ints" else "classlabels_strings"] = \
        list(range(n_classes)) if labels == "ints" else ["k%d" % i for i in range(n_classes)]
    x = rand(RNG, (6, 4), np.float32, -1, 1)
    m = ml_model("SVMClassifier", [("x", x)], [("y", None), ("z", None)], at)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", ["RBF", "LINEAR", "POLY"])
@pytest.mark.parametrize("one_class", [0, 1])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_svm_regressor(kernel, one_class, dt):
    nsv = 5
    at = {"kernel_type": kernel, "kernel_params": [0.4, 0.2, 3.0], "n_supports": nsv, "one_class": one_class,
          "support_vectors": RNG.uniform(-1, 1, size=nsv * 3).tolist(),
          "coefficients": RNG.uniform(-1, 1, size=nsv).tolist(), "rho": [0.1]}
    x = rand(RNG, (7, 3), dt, -1, 1).astype(np.float32).astype(dt)
    build = lambda v: ml_model("SVMRegressor", [("x", v)], [("y", None)], at)  # noqa: E731
    if dt == np.float32:
        check(build(x), {"x": x}, rtol=1e-4, atol=1e-5)
    else:  # onnxruntime has float only
        check_via_float(build, x, [np.float32], rtol=1e-4, atol=1e-5)


def test_svm_regressor_linear_no_supports():
    at = {"coefficients": [0.5, -1.0, 2.0], "rho": [0.3], "kernel_params": [0.0, 0.0, 0.0]}
    x = rand(RNG, (5, 3))
    m = ml_model("SVMRegressor", [("x", x)], [("y", None)], at)
    check(m, {"x": x}, rtol=1e-5, atol=1e-6)
