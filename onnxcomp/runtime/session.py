"""The one place that creates onnxruntime sessions.

Every session runs on the CPU provider with a bounded thread budget (``threads`` is
capped at the machine's CPU count; 0 lets onnxruntime pick), one inter-op thread, and
onnxruntime's own logging silenced unless ``-vv`` asked for it.

External data: onnxruntime resolves a model's external data files against the model's
folder when it gets a path, but against the process working directory when it gets
bytes. A model handed over in memory (an ``onnx_ir.Model`` loaded from another folder,
a protobuf with extra outputs) therefore names its data folder to onnxruntime through
the session config (``base_dir``, found on the model's external tensors), so a
same-named file in the working directory is never read instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxcomp import runtime
from onnxcomp.graph import opaque_types

ModelLike = str | os.PathLike | bytes | ir.Model | onnx.ModelProto

ort.set_default_logger_severity(runtime.log_severity())

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# "the folder of external data files for a model loaded from bytes" (onnxruntime >= 1.20
# for certain; older versions ignore unknown keys, so they get self-contained bytes).
_EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"
_VERSION = tuple(int(p) for p in ort.__version__.split(".")[:2] if p.isdigit())
_HAS_EXTERNAL_FOLDER = _VERSION >= (1, 20)


def bounded_threads(threads: int | None) -> int:
    """``threads`` capped at the CPU count; 0 (or None) means onnxruntime's default."""
    if not threads:
        return 0
    if threads < 0:
        from onnxcomp.errors import OnnxcompError

        raise OnnxcompError(f"threads must be >= 0, got {threads}")
    return min(int(threads), os.cpu_count() or 1)


def session_options(
    *,
    threads: int | None = 1,
    optimize: bool | str | ort.GraphOptimizationLevel = True,
    config: Mapping[str, str] | None = None,
    lean: bool = False,
) -> ort.SessionOptions:
    """The options every onnxcomp session uses (exposed for tests and odd callers).

    lean: no memory-pattern planning and no arena, for sessions that run many batches
    once (calibration): the plan and the arena hold a second copy of the activations."""
    opts = ort.SessionOptions()
    if lean:
        opts.enable_mem_pattern = False
        opts.enable_cpu_mem_arena = False
    n = bounded_threads(threads)
    if n:
        opts.intra_op_num_threads = n
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _level(optimize)
    opts.log_severity_level = runtime.log_severity()
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, str(value))
    return opts


def make_session(
    model: ModelLike,
    *,
    threads: int | None = 1,
    optimize: bool | str | ort.GraphOptimizationLevel = True,
    extra_outputs: Iterable[str] = (),
    base_dir: str | os.PathLike | None = None,
    config: Mapping[str, str] | None = None,
    edit: Callable[[onnx.ModelProto], None] | None = None,
    lean: bool = False,
) -> ort.InferenceSession:
    """A CPU session over ``model``: a path, serialized bytes, an ``onnx_ir.Model`` or an
    ``onnx.ModelProto`` (neither is modified).

    threads: intra-op threads, capped at ``os.cpu_count()``; 0 or None: onnxruntime's
        default (one per physical core).
    optimize: True (all graph optimizations), False (none), "basic", "extended", "all",
        "disable" or a ``GraphOptimizationLevel``.
    extra_outputs: tensor names to return besides the graph outputs (graph inputs and
        outputs already there are skipped); onnxruntime infers their types.
    base_dir: the folder external data paths are relative to, for bytes or a protobuf
        (paths use their own folder; an ``onnx_ir.Model`` knows it per tensor).
    config: extra session config entries.
    lean: trade a little speed for memory (``session_options``).
    edit: called on a protobuf copy of the model, after ``extra_outputs`` are added and
        before onnxruntime gets it (to add nodes or outputs of its own).

    onnxruntime's exceptions propagate: each caller words its own error.
    """
    opts = session_options(threads=threads, optimize=optimize, config=config, lean=lean)
    source = _source(model, _Edit(list(dict.fromkeys(extra_outputs)), edit), base_dir)
    if isinstance(source, _Blob) and source.base_dir is not None:
        opts.add_session_config_entry(_EXTERNAL_FOLDER_KEY, source.base_dir)
    target = source.data if isinstance(source, _Blob) else source
    return ort.InferenceSession(target, opts, providers=["CPUExecutionProvider"])


class _Edit:
    def __init__(self, outputs: list[str], fn: Callable[[onnx.ModelProto], None] | None):
        self.outputs = outputs
        self.fn = fn

    def __bool__(self) -> bool:
        return bool(self.outputs) or self.fn is not None

    def __call__(self, proto: onnx.ModelProto) -> None:
        present = {o.name for o in proto.graph.output} | {i.name for i in proto.graph.input}
        for name in self.outputs:
            if name not in present:
                # onnxruntime takes the type from its own inference; a name is enough.
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
        if self.fn is not None:
            self.fn(proto)


class _Blob:
    def __init__(self, data: bytes, base_dir: str | None) -> None:
        self.data = data
        self.base_dir = base_dir


def _source(model: ModelLike, extra: _Edit, base_dir) -> str | _Blob:
    """What onnxruntime gets: a path, or bytes plus the folder of their external data."""
    if isinstance(model, (str, os.PathLike)):
        if not extra:
            return str(model)
        base_dir = Path(model).parent if base_dir is None else base_dir
        proto = onnx.load(str(model), load_external_data=False)
        return _blob(proto, extra, _absolute(base_dir))
    if isinstance(model, ir.Model):
        folders = external_folders(model)
        proto = opaque_types.to_proto(model)
        if len(set(folders.values())) > 1:  # data files in several folders: read them in
            _load_external(proto, folders)
            return _blob(proto, extra, None)
        folder = next(iter(folders.values()), None) if base_dir is None else _absolute(base_dir)
        return _blob(proto, extra, folder)
    if isinstance(model, onnx.ModelProto):
        if extra or (base_dir is not None and not _HAS_EXTERNAL_FOLDER):  # never edit theirs
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            model = copy
        return _blob(model, extra, _absolute(base_dir))
    if isinstance(model, (bytes, bytearray, memoryview)):
        if not extra and (base_dir is None or _HAS_EXTERNAL_FOLDER):
            return _Blob(bytes(model), _absolute(base_dir))
        return _blob(onnx.load_from_string(bytes(model)), extra, _absolute(base_dir))
    raise TypeError(f"make_session: cannot run a {type(model).__name__}")


def _blob(proto: onnx.ModelProto, extra: _Edit, base_dir: str | None) -> _Blob:
    """Serialize ``proto`` (modified in place) after ``extra`` edits it."""
    extra(proto)
    if base_dir is not None and not _HAS_EXTERNAL_FOLDER and _has_external(proto):
        onnx.external_data_helper.load_external_data_for_model(proto, base_dir)
        base_dir = None
    return _Blob(proto.SerializeToString(), base_dir)


def external_folders(model: ir.Model) -> dict[str, str]:
    """{tensor name: absolute folder of its data file} for the external tensors of
    ``model`` (subgraphs included)."""
    out: dict[str, str] = {}
    for graph in (model.graph, *model.graph.subgraphs()):
        tensors = [v.const_value for v in graph.initializers.values()]
        for node in graph:
            attrs = node.attributes.values()
            tensors += [a.value for a in attrs if a.type == ir.AttributeType.TENSOR]
        for tensor in tensors:
            if isinstance(tensor, ir.ExternalTensor):
                out[tensor.name or ""] = str(Path(tensor.base_dir or ".").resolve())
    return out


def _load_external(proto: onnx.ModelProto, folders: dict[str, str]) -> None:
    from onnx.external_data_helper import (
        _get_all_tensors,
        load_external_data_for_tensor,
        uses_external_data,
    )

    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            load_external_data_for_tensor(tensor, folders.get(tensor.name, os.getcwd()))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]


def _has_external(proto: onnx.ModelProto) -> bool:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return any(uses_external_data(t) for t in _get_all_tensors(proto))


def _absolute(folder: str | os.PathLike | None) -> str | None:
    return None if folder is None else str(Path(folder).resolve())


def _level(optimize: bool | str | ort.GraphOptimizationLevel) -> ort.GraphOptimizationLevel:
    if isinstance(optimize, ort.GraphOptimizationLevel):
        return optimize
    if optimize is True:
        return ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimize is False:
        return ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return _LEVELS[optimize]
    except KeyError:
        raise ValueError(f"optimize must be a bool or one of {sorted(_LEVELS)}") from None
