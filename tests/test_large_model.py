"""A model larger than 2 GB through external data: a 2.1 GB embedding table and a tensor stored past
the 2 GiB offset, in a sparse file beside the model. kiln maps the file instead of reading it, so
only the rows a Gather touches are ever paged in."""
import numpy as np
import onnx
from onnx import TensorProto, helper

from util import kiln

ROWS, WIDTH = (1 << 31) // 256 + 4096, 64  # float32 rows of 256 bytes: just over 2 GiB


def external(name, dims, offset, length):
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def test_gather_from_table_beyond_2gib(tmp_path):
    rng = np.random.default_rng(11)
    table_bytes = ROWS * WIDTH * 4
    bias_off = table_bytes + 4096
    idx = np.array([0, 5, ROWS // 2, ROWS - 1, ROWS - 2], dtype=np.int64)
    rows = rng.standard_normal((len(idx), WIDTH)).astype(np.float32)
    bias = rng.standard_normal(WIDTH).astype(np.float32)
    with open(tmp_path / "weights.bin", "wb") as f:
        f.truncate(bias_off + WIDTH * 4)
        for i, r in zip(idx, rows):
            f.seek(int(i) * WIDTH * 4)
            f.write(r.tobytes())
        f.seek(bias_off)
        f.write(bias.tobytes())
    nodes = [helper.make_node("Gather", ["table", "idx"], ["g"], axis=0),
             helper.make_node("Add", ["g", "bias"], ["y"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("idx", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, WIDTH])],
                              initializer=[external("table", [ROWS, WIDTH], 0, table_bytes),
                                           external("bias", [WIDTH], bias_off, WIDTH * 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "big.onnx"
    path.write_bytes(model.SerializeToString())
    s = kiln.InferenceSession(str(path))
    assert s.plan_stats()["initializer_bytes"] > (1 << 31)
    y = s.run(None, {"idx": idx})[0]
    np.testing.assert_array_equal(y, rows + bias)
