"""Models the converters really produce: scikit-learn, LightGBM and XGBoost models trained here on
generated data (fixed seeds) and converted with skl2onnx / onnxmltools at their default options,
so every scikit-learn and LightGBM classifier with probabilities ends in ZipMap (a list of dicts;
onnxmltools gives XGBoost classifiers a probability tensor instead, and skl2onnx LinearSVC scores). Each runs on kiln and on
onnxruntime: labels equal, probabilities and regression outputs within 1e-5 (relative and
absolute), the list of dicts equal in keys and key types and close in values. Both Python paths
(kiln._native and ctypes over the C API) and `kiln run` (the JSON it writes) are checked.

Not here: TfidfVectorizer pipelines, which skl2onnx converts with com.microsoft Tokenizer (another
piece of work)."""
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import ROOT, kiln, run_ort  # noqa: E402

sklearn = pytest.importorskip("sklearn")
skl2onnx = pytest.importorskip("skl2onnx")

RTOL = ATOL = 1e-5
N_TRAIN, N_TEST = 240, 64


def data(kind, seed, n_classes=3, labels=None):
    """(X_train, y_train, X_test): float32 features; class labels int (or from `labels`)."""
    from sklearn.datasets import make_classification, make_regression
    n = N_TRAIN + N_TEST
    if kind == "reg":
        X, y = make_regression(n_samples=n, n_features=6, n_informative=4, noise=0.5, random_state=seed)
    else:
        X, y = make_classification(n_samples=n, n_features=6, n_informative=4, n_redundant=1,
                                   n_classes=n_classes, n_clusters_per_class=1, random_state=seed)
        if labels is not None:
            y = np.array(labels)[y]
    X = X.astype(np.float32)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:]


def sk(model, kind="clf", seed=0, **kw):
    def build():
        X, y, Xt = data(kind, seed, **kw)
        m = model().fit(X, y)
        return skl2onnx.to_onnx(m, X[:1]), {"X": Xt}
    return build


def lgbm(kind, seed, n_classes=3):
    def build():
        lightgbm = pytest.importorskip("lightgbm")
        onnxmltools = pytest.importorskip("onnxmltools")
        from onnxmltools.convert.common.data_types import FloatTensorType
        X, y, Xt = data(kind, seed, n_classes)
        cls = lightgbm.LGBMRegressor if kind == "reg" else lightgbm.LGBMClassifier
        m = cls(n_estimators=20, num_leaves=8, verbose=-1, random_state=seed).fit(X, y)
        onx = onnxmltools.convert_lightgbm(m, initial_types=[("X", FloatTensorType([None, X.shape[1]]))])
        return onx, {"X": Xt}
    return build


def xgb(kind, seed, n_classes=3):
    def build():
        xgboost = pytest.importorskip("xgboost")
        onnxmltools = pytest.importorskip("onnxmltools")
        from onnxmltools.convert.common.data_types import FloatTensorType
        X, y, Xt = data(kind, seed, n_classes)
        cls = xgboost.XGBRegressor if kind == "reg" else xgboost.XGBClassifier
        m = cls(n_estimators=15, max_depth=3, random_state=seed).fit(X, y)
        onx = onnxmltools.convert_xgboost(m, initial_types=[("X", FloatTensorType([None, X.shape[1]]))])
        return onx, {"X": Xt}
    return build


def column_pipeline(seed):
    """ColumnTransformer: StandardScaler on the measurements, OneHotEncoder on a category code
    column, then LogisticRegression (one float input)."""
    def build():
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler
        X, y, Xt = data("clf", seed)
        rng = np.random.RandomState(seed)

        def with_code(x):
            return np.hstack([x, rng.randint(0, 4, (len(x), 1)).astype(np.float32)])
        X, Xt = with_code(X), with_code(Xt)
        ct = ColumnTransformer([("num", StandardScaler(), list(range(6))),
                                ("cat", OneHotEncoder(handle_unknown="ignore"), [6])])
        m = Pipeline([("prep", ct), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
        return skl2onnx.to_onnx(m, X[:1]), {"X": Xt}
    return build


def string_pipeline(seed):
    """OneHotEncoder on two text columns (a string input), then RandomForestClassifier."""
    def build():
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder
        from skl2onnx.common.data_types import StringTensorType
        X, y, Xt = data("clf", seed)
        words = np.array(["red", "green", "blue", "amber", "violet"])

        def text(x):  # categories that carry the class signal
            return np.stack([words[(np.abs(x[:, 0]) * 2).astype(int) % 5], words[(x[:, 1] > 0).astype(int)]], 1).astype(object)
        m = Pipeline([("ohe", OneHotEncoder(handle_unknown="ignore")),
                      ("clf", RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0))]).fit(text(X), y)
        onx = skl2onnx.to_onnx(m, initial_types=[("X", StringTensorType([None, 2]))])
        return onx, {"X": text(Xt)}
    return build


def dict_pipeline(seed):
    """DictVectorizer + LogisticRegression: the model takes a map(string, float)."""
    def build():
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from skl2onnx.common.data_types import DictionaryType, FloatTensorType, StringTensorType
        X, y, Xt = data("clf", seed)
        names = ["a", "b", "c", "d", "e", "f"]
        rows = [{names[j]: float(v) for j, v in enumerate(r) if abs(v) > 0.3} for r in X]
        m = Pipeline([("dv", DictVectorizer(sparse=False)), ("clf", LogisticRegression(max_iter=500))]).fit(rows, y)
        onx = skl2onnx.to_onnx(m, initial_types=[("X", DictionaryType(StringTensorType([]), FloatTensorType([])))])
        feeds = [{"X": {names[j]: float(v) for j, v in enumerate(r) if abs(v) > 0.3}} for r in Xt[:12]]
        return onx, feeds
    return build


def _sk(name):
    import sklearn.ensemble as ens
    import sklearn.linear_model as lin
    import sklearn.neighbors as nb
    import sklearn.svm as svm
    import sklearn.tree as tree
    return {
        "LogisticRegression": lin.LogisticRegression, "LinearSVC": svm.LinearSVC,
        "SVC": functools.partial(svm.SVC, probability=True, random_state=0),
        "DecisionTreeClassifier": functools.partial(tree.DecisionTreeClassifier, max_depth=6, random_state=0),
        "RandomForestClassifier": functools.partial(ens.RandomForestClassifier, n_estimators=12, max_depth=6,
                                                    random_state=0),
        "GradientBoostingClassifier": functools.partial(ens.GradientBoostingClassifier, n_estimators=15,
                                                        random_state=0),
        "KNeighborsClassifier": nb.KNeighborsClassifier,
        "LinearRegression": lin.LinearRegression, "SVR": svm.SVR,
        "DecisionTreeRegressor": functools.partial(tree.DecisionTreeRegressor, max_depth=6, random_state=0),
        "RandomForestRegressor": functools.partial(ens.RandomForestRegressor, n_estimators=12, max_depth=6,
                                                   random_state=0),
        "GradientBoostingRegressor": functools.partial(ens.GradientBoostingRegressor, n_estimators=15,
                                                       random_state=0),
        "KNeighborsRegressor": nb.KNeighborsRegressor,
    }[name]


def lazy(name, **kw):
    return lambda: sk(lambda: _sk(name)(), **kw)()


CASES = {
    "LogisticRegression": lazy("LogisticRegression", seed=1),
    "LogisticRegression-binary": lazy("LogisticRegression", seed=2, n_classes=2),
    "LogisticRegression-string-labels": lazy("LogisticRegression", seed=3, labels=["cat", "dog", "émeu"]),
    "LinearSVC": lazy("LinearSVC", seed=4),
    "SVC-probability": lazy("SVC", seed=5),
    "DecisionTreeClassifier": lazy("DecisionTreeClassifier", seed=6),
    "RandomForestClassifier": lazy("RandomForestClassifier", seed=7),
    "RandomForestClassifier-binary-strings": lazy("RandomForestClassifier", seed=8, n_classes=2, labels=["no", "yes"]),
    "GradientBoostingClassifier": lazy("GradientBoostingClassifier", seed=9),
    "KNeighborsClassifier": lazy("KNeighborsClassifier", seed=10),
    "Pipeline-ColumnTransformer": column_pipeline(11),
    "Pipeline-OneHotEncoder-strings": string_pipeline(25),
    "Pipeline-DictVectorizer": dict_pipeline(12),
    "LinearRegression": lazy("LinearRegression", kind="reg", seed=13),
    "SVR": lazy("SVR", kind="reg", seed=14),
    "DecisionTreeRegressor": lazy("DecisionTreeRegressor", kind="reg", seed=15),
    "RandomForestRegressor": lazy("RandomForestRegressor", kind="reg", seed=16),
    "GradientBoostingRegressor": lazy("GradientBoostingRegressor", kind="reg", seed=17),
    "KNeighborsRegressor": lazy("KNeighborsRegressor", kind="reg", seed=18),
    "LGBMClassifier": lgbm("clf", 19),
    "LGBMClassifier-binary": lgbm("clf", 20, n_classes=2),
    "LGBMRegressor": lgbm("reg", 21),
    "XGBClassifier": xgb("clf", 22),
    "XGBClassifier-binary": xgb("clf", 23, n_classes=2),
    "XGBRegressor": xgb("reg", 24),
}


@functools.lru_cache(maxsize=None)
def converted(name):
    onx, feeds = CASES[name]()
    return onx.SerializeToString(), feeds


def assert_close(got, want, what):
    """Outputs as onnxruntime returns them: arrays, lists of dicts, dicts."""
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{what}: {type(got).__name__} of {len(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{what}[{i}]")
    elif isinstance(want, dict):
        assert isinstance(got, dict), f"{what}: a {type(got).__name__}, not a dict"
        assert sorted(got) == sorted(want), f"{what}: keys {sorted(got)} != {sorted(want)}"
        assert [type(k) for k in sorted(got)] == [type(k) for k in sorted(want)], f"{what}: key types"
        g = np.array([got[k] for k in sorted(want)], np.float64)
        w = np.array([want[k] for k in sorted(want)], np.float64)
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=what)
    else:
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape and got.dtype == want.dtype, f"{what}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)
        else:
            np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # SVC(probability=True) is deprecated in scikit-learn 1.9
@pytest.mark.parametrize("binding", ["native", "ctypes"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_converted_model(name, binding, monkeypatch):
    if binding == "ctypes":
        monkeypatch.setenv("KILN_PYTHON_CTYPES", "1")
    else:
        monkeypatch.delenv("KILN_PYTHON_CTYPES", raising=False)
    data_bytes, feeds = converted(name)
    s = kiln.InferenceSession(data_bytes)
    import onnxruntime as ort
    o = ort.InferenceSession(data_bytes, providers=["CPUExecutionProvider"])
    assert [(a.name, a.type) for a in s.get_outputs()] == [(a.name, a.type) for a in o.get_outputs()]
    assert [(a.name, a.type) for a in s.get_inputs()] == [(a.name, a.type) for a in o.get_inputs()]
    for feed in feeds if isinstance(feeds, list) else [feeds]:
        got, want = s.run(None, feed), run_ort(data_bytes, feed)
        assert len(got) == len(want)
        for out, g, w in zip(o.get_outputs(), got, want):
            assert_close(g, w, f"{name}: {out.name}")
    if any(a.type.startswith("seq(map") for a in o.get_outputs()):
        assert any(isinstance(w, list) and w and isinstance(w[0], dict) for w in want)


def test_cli_run_writes_zipmap_json(tmp_path):
    """`kiln run` writes a sequence-of-maps output as JSON (keys as text) and the label as .npy."""
    data_bytes, feeds = converted("LogisticRegression")
    model = tmp_path / "lr.onnx"
    model.write_bytes(data_bytes)
    np.save(tmp_path / "X.npy", feeds["X"])
    build = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
    r = subprocess.run([os.path.join(build, "kiln"), "run", str(model), "--input", "X=%s" % (tmp_path / "X.npy"),
                        "--output-dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "output_probability: sequence of %d map(int64,tensor(float))" % len(feeds["X"]) in r.stdout
    label, probs = run_ort(data_bytes, feeds)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "output_label.npy"), label)
    got = json.loads((tmp_path / "out" / "output_probability.json").read_text())
    assert_close([{int(k): v for k, v in row.items()} for row in got], probs, "output_probability.json")


def test_cli_run_writes_sequence_json(tmp_path):
    """A sequence of tensors (SplitToSequence) is written as JSON too: one nested list per item."""
    from onnx import TensorProto, helper
    node = helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=0)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 3])],
                          [helper.make_value_info("seq", helper.make_sequence_type_proto(
                              helper.make_tensor_type_proto(TensorProto.FLOAT, None)))],
                          initializer=[helper.make_tensor("split", TensorProto.INT64, [2], [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    (tmp_path / "seq.onnx").write_bytes(m.SerializeToString())
    x = np.random.default_rng(3).normal(size=(5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    build = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
    r = subprocess.run([os.path.join(build, "kiln"), "run", str(tmp_path / "seq.onnx"), "--input",
                        "x=%s" % (tmp_path / "x.npy"), "--output-dir", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "out" / "seq.json").read_text())
    want = run_ort(m, {"x": x})[0]
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.array(g, np.float32), w, rtol=0, atol=0)


def test_convert_keeps_map_types(tmp_path):
    """`kiln convert` writes the sequence-of-maps output type back: onnxruntime loads the result
    and it gives the same dicts."""
    data_bytes, feeds = converted("LGBMClassifier")
    (tmp_path / "m.onnx").write_bytes(data_bytes)
    build = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
    r = subprocess.run([os.path.join(build, "kiln"), "convert", str(tmp_path / "m.onnx"), str(tmp_path / "c.onnx"),
                        "--optimize"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import onnxruntime as ort
    c = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    assert [o.type for o in c.get_outputs()] == ["tensor(int64)", "seq(map(int64,tensor(float)))"]
    assert_close(c.run(None, feeds), run_ort(data_bytes, feeds), "converted model")


def test_c_api_map_in_and_out():
    """examples/maps.c: a map fed through kiln_value_map_new / kiln_run_values, ZipMap's sequence of
    maps read with kiln_value_item and kiln_value_map_*; printed values match onnxruntime's."""
    data_bytes, feeds = converted("Pipeline-DictVectorizer")
    build = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
    exe = os.path.join(build, "example_maps")
    if not os.path.exists(exe):
        pytest.skip("example_maps is not built")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "dv.onnx")
        with open(path, "wb") as f:
            f.write(data_bytes)
        for feed in feeds[:4]:
            pairs = ["%s=%r" % (k, np.float32(v).item()) for k, v in feed["X"].items()]
            r = subprocess.run([exe, path] + pairs, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            lines = dict(line.split(":", 1) for line in r.stdout.strip().splitlines())
            label, probs = run_ort(data_bytes, {"X": {k: float(np.float32(v)) for k, v in feed["X"].items()}})
            assert [int(v) for v in lines["output_label"].split()] == label.tolist()
            got = {int(k): float(v) for k, v in (kv.split("=") for kv in lines["output_probability[0]"].split())}
            assert_close([got], probs, "example_maps")
