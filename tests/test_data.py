"""Every data source gives the same feeds, batched as the model allows."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from onnxcomp import OnnxcompError
from onnxcomp.io.data import InputSpec, open_data, synthetic

SPECS = [InputSpec("x", np.dtype(np.float32), ("N", 4))]
FIXED = [InputSpec("x", np.dtype(np.float32), (1, 4))]


def _x(n=10):
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4)


def test_npz_batches_and_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=_x(), y=np.arange(10))
    batches = list(open_data(str(path), SPECS, labels="y", batch_size=4))
    assert [b.size for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b.feed["x"] for b in batches]), _x())
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), np.arange(10))


def test_npz_respects_a_fixed_batch_dim(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=_x(3))
    assert [b.feed["x"].shape for b in open_data(str(path), FIXED)] == [(1, 4)] * 3


def test_npz_float64_is_cast_to_the_model_dtype(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=_x().astype(np.float64))
    batch = next(iter(open_data(str(path), SPECS)))
    assert batch.feed["x"].dtype == np.float32


def test_folder_of_npz_allows_varying_shapes(tmp_path):
    for i, width in enumerate((3, 5, 7)):
        np.savez(tmp_path / f"{i}.npz", x=np.ones((1, width), np.float32))
    shapes = [b.feed["x"].shape for b in open_data(str(tmp_path), SPECS)]
    assert shapes == [(1, 3), (1, 5), (1, 7)]


def test_onnx_test_data_folder(tmp_path):
    for i in range(2):
        folder = tmp_path / f"test_data_set_{i}"
        folder.mkdir()
        tensor = numpy_helper.from_array(_x(2) + i, "x")
        (folder / "input_0.pb").write_bytes(tensor.SerializeToString())
    batches = list(open_data(str(tmp_path), SPECS))
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[1].feed["x"], _x(2) + 1)


def test_iterable_and_calibration_reader():
    feeds = [{"x": _x(2)}, {"x": _x(3)}]
    assert [b.size for b in open_data(feeds, SPECS)] == [2, 3]

    class Reader:  # the onnxruntime CalibrationDataReader protocol
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    source = open_data(Reader(), SPECS)
    assert [b.size for b in source] == [2, 3]
    assert [b.size for b in source] == [2, 3]  # re-iterable


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: np.savez(p / "d.npz", z=_x()), r"no array for model input\(s\) x"),
        (lambda p: (p / "d.npz").write_text("nope"), "not a readable .npz"),
        (lambda p: np.savez(p / "d.npz", x=np.array(["a"])), "dtype"),
    ],
)
def test_bad_npz(tmp_path, make, needle):
    make(tmp_path)
    with pytest.raises(OnnxcompError, match=needle):
        list(open_data(str(tmp_path / "d.npz"), SPECS))


def test_missing_source(tmp_path):
    with pytest.raises(OnnxcompError, match="no such data"):
        open_data(str(tmp_path / "none.npz"), SPECS)


def test_synthetic_is_deterministic_and_flagged():
    a = [b.feed["x"] for b in synthetic(SPECS, batches=2)]
    b = [b.feed["x"] for b in synthetic(SPECS, batches=2)]
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (1, 4)
    assert synthetic(SPECS).synthetic
