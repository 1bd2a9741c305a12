"""Calibration and evaluation data: every source becomes a stream of feed batches.

Sources: an ``.npz`` (one array per input name, axis 0 = samples), a folder of ``.npz``
files (one feed each, so shapes may differ between feeds), an ONNX test-data folder
(``test_data_set_*/input_*.pb``), or from Python any iterable of ``{name: array}`` dicts
or an onnxruntime ``CalibrationDataReader`` (anything with ``get_next()``).
Nothing is held in memory beyond the current batch, except what an ``.npz`` maps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from onnxcomp.errors import OnnxcompError
from onnxcomp.io import npz
from onnxcomp.io.safe_io import confine, regular_data, regular_file
from onnxcomp.io.validate import check_proto_data
from onnxcomp.io.writer import note_input

Feed = dict[str, np.ndarray]
DEFAULT_BATCH = 32
DYNAMIC_DIM = 1  # what a named or unknown dim becomes in synthetic data


@dataclass(frozen=True)
class InputSpec:
    """What a model input expects: name, numpy dtype, shape (ints, names or None)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    @property
    def fixed_batch(self) -> int | None:
        """The declared batch size; a 0 (some exporters' "unknown") is not one."""
        if self.shape and isinstance(self.shape[0], int) and self.shape[0] > 0:
            return self.shape[0]
        return None


@dataclass
class Batch:
    feed: Feed
    labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        if not self.feed:  # a model without inputs: one run is one sample
            return 1
        first = next(iter(self.feed.values()))
        return int(first.shape[0]) if first.ndim else 1


def input_specs(model: ir.Model) -> list[InputSpec]:
    """The model's real inputs (initializers that double as inputs are not fed)."""
    specs = []
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        shape: tuple[int | str | None, ...] = ()
        if value.shape is not None:
            shape = tuple(
                d if isinstance(d, int) else (d.value if d.value is not None else None)
                for d in value.shape
            )
        specs.append(InputSpec(value.name or "", np.dtype(dtype), shape))
    return specs


class DataSource:
    """A re-iterable stream of batches; ``synthetic`` says whether the data was made up."""

    def __init__(
        self,
        make: Callable[[], Iterator[Batch]],
        description: str,
        *,
        num_samples: int | None = None,
        synthetic: bool = False,
        rebatch: Callable[[int], DataSource] | None = None,
    ) -> None:
        self._make = make
        self.description = description
        self.num_samples = num_samples
        self.synthetic = synthetic
        self._rebatch = rebatch

    def batched(self, size: int) -> DataSource:
        """The same opened data in batches of ``size`` samples where the source can split
        them (one .npz file of samples); other sources keep their batches (a feed is one)."""
        return self._rebatch(size) if self._rebatch is not None else self

    def __iter__(self) -> Iterator[Batch]:
        return self._make()

    def feeds(self) -> Iterator[Feed]:
        for batch in self:
            yield batch.feed


def open_data(
    source: str | os.PathLike | Iterable[Feed] | Any,
    specs: list[InputSpec],
    *,
    labels: str | None = None,
    batch_size: int | None = None,
) -> DataSource:
    """Turn any supported source into a DataSource for a model with these inputs."""
    if isinstance(source, DataSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        regular_data(source)  # a FIFO would block forever
        path = Path(source)
        if not path.exists():
            raise OnnxcompError(f"{path}: no such data file or folder")
        if path.is_dir():
            if sorted(path.glob("test_data_set_*")) or sorted(path.glob("input_*.pb")):
                return _onnx_test_data(path, specs)
            return _npz_folder(path, specs, labels)
        note_input(path, "a data file")
        return _npz_file(path, specs, labels, batch_size)
    if hasattr(source, "get_next"):
        return _reader(source, specs)
    if isinstance(source, Iterable) and not isinstance(source, (dict, bytes)):
        return _iterable(list(source), specs, labels)
    raise OnnxcompError(f"unsupported data source: {type(source).__name__}")


def _cast(name: str, array: Any, spec: InputSpec | None) -> np.ndarray:
    array = np.asarray(array)
    if spec is None:
        return array
    if array.dtype == spec.dtype:
        return array
    if array.dtype.kind == spec.dtype.kind or (
        array.dtype.kind in "iub" and spec.dtype.kind in "iu"
    ):
        return array.astype(spec.dtype)
    if array.dtype.kind in "iu" and spec.dtype.kind == "f":
        return array.astype(spec.dtype)
    raise OnnxcompError(f"input '{name}': data has dtype {array.dtype}, model expects {spec.dtype}")


def _check_names(names: Iterable[str], specs: list[InputSpec], where: str) -> None:
    missing = [s.name for s in specs if s.name not in set(names)]
    if missing:
        raise OnnxcompError(f"{where}: no array for model input(s) {', '.join(missing)}")


def _npz_file(
    path: Path, specs: list[InputSpec], labels: str | None, batch_size: int | None
) -> DataSource:
    npz.check_npz(path)
    try:
        archive = np.load(path, allow_pickle=False)
        names = list(archive.files)
    except Exception:
        raise OnnxcompError(f"{path}: not a readable .npz file") from None
    _check_names(names, specs, str(path))
    if labels is not None and labels not in names:
        raise OnnxcompError(f"{path}: no labels array named '{labels}'")
    wanted = [s.name for s in specs] + ([labels] if labels is not None else [])
    arrays = {name: npz.read(archive, name, path) for name in wanted}
    scalars = [s.name for s in specs if arrays[s.name].ndim == 0]
    if scalars:
        raise OnnxcompError(
            f"{path}: array '{scalars[0]}' is a scalar; axis 0 of each array counts the samples"
        )
    counts = {arrays[s.name].shape[0] for s in specs}
    if len(counts) != 1:
        raise OnnxcompError(f"{path}: inputs disagree on the number of samples: {sorted(counts)}")
    n = counts.pop()
    fixed = {s.fixed_batch for s in specs if s.fixed_batch is not None}
    loaded = {s.name: _cast(s.name, arrays[s.name], s) for s in specs}
    label_array = np.asarray(arrays[labels]) if labels is not None else None

    def source(step: int) -> DataSource:
        def make() -> Iterator[Batch]:
            for start in range(0, n - step + 1 if fixed else n, step):
                feed = {k: v[start : start + step] for k, v in loaded.items()}
                lab = label_array[start : start + step] if label_array is not None else None
                yield Batch(feed, lab)

        return DataSource(make, f"{path.name} ({n} samples)", num_samples=n, rebatch=source)

    return source(batch_size or (next(iter(fixed)) if fixed else DEFAULT_BATCH))


def _npz_folder(path: Path, specs: list[InputSpec], labels: str | None) -> DataSource:
    files = sorted(path.glob("*.npz"))
    if not files:
        raise OnnxcompError(f"{path}: folder holds no .npz files and no ONNX test data")
    by_name = {s.name: s for s in specs}

    def make() -> Iterator[Batch]:
        for file in files:
            regular_file(file, ".npz file")
            npz.check_npz(file)
            try:
                arrays = np.load(file, allow_pickle=False)
            except Exception:
                raise OnnxcompError(f"{file}: not a readable .npz file") from None
            _check_names(arrays.files, specs, str(file))
            feed = {k: _cast(k, npz.read(arrays, k, file), by_name[k]) for k in by_name}
            lab = (
                np.asarray(npz.read(arrays, labels, file))
                if labels and labels in arrays.files
                else None
            )
            if labels and lab is None:
                raise OnnxcompError(f"{file}: no labels array named '{labels}'")
            yield Batch(feed, lab)

    return DataSource(make, f"{path.name}/ ({len(files)} feeds)")


def _onnx_test_data(path: Path, specs: list[InputSpec]) -> DataSource:
    sets = sorted(path.glob("test_data_set_*")) or [path]

    def read(file: Path) -> tuple[str, np.ndarray]:
        tensor = onnx.TensorProto()
        regular_file(file, "TensorProto file")
        try:
            tensor.ParseFromString(file.read_bytes())
        except Exception:
            raise OnnxcompError(f"{file}: not a readable TensorProto") from None
        where = f"{file}: tensor '{tensor.name}'"
        check_proto_data(tensor, where)
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _confine_external(tensor, file.parent, where)
        try:
            return tensor.name, numpy_helper.to_array(tensor, base_dir=str(file.parent))
        except Exception:
            raise OnnxcompError(f"{file}: not a readable TensorProto") from None

    def make() -> Iterator[Batch]:
        for folder in sets:
            files = _input_files(folder)
            if len(files) != len(specs):
                raise OnnxcompError(
                    f"{folder}: {len(files)} input files for {len(specs)} model inputs"
                )
            feed = {}
            for spec, file in zip(specs, files, strict=True):
                name, array = read(file)
                feed[spec.name] = _cast(name or spec.name, array, spec)
            yield Batch(feed)

    return DataSource(make, f"{path.name}/ ({len(sets)} test data sets)")


def _input_files(folder: Path) -> list[Path]:
    """``input_<n>.pb`` in order of n; any other ``input_*.pb`` name is refused."""
    numbered = []
    for f in folder.glob("input_*.pb"):
        index = f.stem.removeprefix("input_")
        if not (index.isascii() and index.isdigit()) or len(index) > 6:
            raise OnnxcompError(f"{f}: a test-data file is named input_<number>.pb")
        numbered.append((int(index), f))
    return [f for _, f in sorted(numbered)]


def _confine_external(tensor: onnx.TensorProto, folder: Path, where: str) -> None:
    """A test-data tensor's external data lies in its own folder, like a model's."""
    entries = {e.key: e.value for e in tensor.external_data}
    try:
        offset, length = int(entries.get("offset", 0)), int(entries.get("length", 0))
    except ValueError:
        raise OnnxcompError(f"{where}: external data offset or length is not a number") from None
    bits = ir.DataType(tensor.data_type).bitwidth if tensor.data_type else 8
    nbytes = (math.prod(tensor.dims) * bits + 7) // 8
    confine(folder, entries.get("location", ""), where, offset, max(length, nbytes), nbytes)


def _reader(reader: Any, specs: list[InputSpec]) -> DataSource:
    """A CalibrationDataReader can be read once; keep its feeds for later passes."""
    feeds: list[Feed] = []
    while (item := reader.get_next()) is not None:
        feeds.append(item)
    if hasattr(reader, "rewind"):
        reader.rewind()
    return _iterable(feeds, specs, None)


def _iterable(feeds: list[Any], specs: list[InputSpec], labels: str | None) -> DataSource:
    by_name = {s.name: s for s in specs}
    for i, feed in enumerate(feeds):
        if not isinstance(feed, dict):
            raise OnnxcompError(f"data item {i} is a {type(feed).__name__}, not a dict of arrays")
        _check_names(feed, specs, f"data item {i}")

    def make() -> Iterator[Batch]:
        for feed in feeds:
            arrays = {k: _cast(k, feed[k], by_name[k]) for k in by_name}
            lab = np.asarray(feed[labels]) if labels and labels in feed else None
            yield Batch(arrays, lab)

    return DataSource(make, f"{len(feeds)} feeds from Python")


def synthetic(specs: list[InputSpec], *, batches: int = 8, seed: int = 0) -> DataSource:
    """Inputs made from declared shapes and dtypes, for when the user gives no data."""

    def make() -> Iterator[Batch]:
        rng = np.random.default_rng(seed)
        for _ in range(batches):
            yield Batch({s.name: _random(s, rng) for s in specs})

    return DataSource(make, f"synthetic ({batches} random batches)", synthetic=True)


def _random(spec: InputSpec, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(d if isinstance(d, int) and d > 0 else DYNAMIC_DIM for d in spec.shape)
    kind = spec.dtype.kind
    if kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    if kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if kind in "iu":
        return rng.integers(0, 2, shape).astype(spec.dtype)
    if kind in "OUS":
        return np.full(shape, "a", dtype=object)
    raise OnnxcompError(f"input '{spec.name}': cannot make synthetic data of dtype {spec.dtype}")
