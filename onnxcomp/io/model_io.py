"""Load, validate and save models; the only place that touches files.

Every output goes to a temporary folder next to its destination, is checked there
(onnx.checker and an onnxruntime session), and only then renamed into place, so a
failed run never leaves a half-written or invalid model behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxcomp.errors import BudgetExceeded, OnnxcompError, one_line
from onnxcomp.graph import opaque_types
from onnxcomp.graph.edit import all_graphs
from onnxcomp.io import heap, safe_io, stream_read, validate, writer
from onnxcomp.io.stream_write import save_streamed, stub_tensors

logger = logging.getLogger(__name__)

# Above this many bytes of tensor data the model cannot live in one protobuf.
_PROTO_LIMIT = 2_000_000_000
# Models with this many tensor bytes are written by stream_write (weights straight from
# their arrays); smaller ones by ir.save.
_STREAMED_WRITE_BYTES = 64 << 20
_STREAMED_READ_BYTES = 64 << 20  # files this big are read by stream_read
# Tensors larger than this go to the external data file when one is used.
_EXTERNAL_THRESHOLD = 1024


def load(path: str | os.PathLike) -> ir.Model:
    """Read a model, turning every way a file can be wrong into one clear error."""
    p = _existing_file(path)
    model = _load_streamed(p) if p.stat().st_size >= _STREAMED_READ_BYTES else None
    if model is None:
        try:
            model = ir.load(p)
        except Exception as exc:  # protobuf raises several unrelated types
            model = _load_with_opaque_types(p, exc)
    if len(model.graph) == 0 and not model.graph.outputs:
        raise OnnxcompError(f"{p}: not an ONNX model (no graph)")
    validate.check_model(model, p)  # before any tensor is read: never a file outside its folder
    for data in safe_io.external_data_files(p):
        writer.note_input(data, "the input's external data")
    detach_from_proto(model)
    heap.trim()  # the parsed protobuf is gone: its pages go back to the OS
    return model


def _load_streamed(p: Path) -> ir.Model | None:
    """The model with its big weights read straight into arrays (stream_read), or None
    for the usual parse (a file it cannot walk, map-typed outputs)."""
    try:
        proto, raws = stream_read.read_split(p)
        model = ir.serde.deserialize_model(proto)
        del proto
        ir.external_data.set_base_dir(model.graph, p.parent)
        stream_read.fill(model, p, raws)
    except Exception as exc:  # anything unusual: the normal parser decides
        logger.debug("streamed read of %s not used: %s", p, exc)
        return None
    return model


def _check_streamed(p: Path) -> bool:
    """onnx.checker on the model with its big weights' bytes left in the file (the
    checker reading a file holds it twice); False when stream_read cannot walk it."""
    try:
        proto, raws = stream_read.read_split(p)
    except Exception as exc:
        logger.debug("streamed check of %s not used: %s", p, exc)
        return False
    external = onnx.TensorProto.EXTERNAL
    if any(
        t.data_location == external and t.name not in raws
        for t in safe_io.all_initializers(proto.graph)
    ):
        return False  # the checker resolves external files against the model's own path
    onnx.checker.check_model(stream_read.checkable(proto, raws))
    return True


def _load_with_opaque_types(p: Path, first: Exception) -> ir.Model:
    """A second try for models whose inputs/outputs are maps (scikit-learn's ZipMap)."""
    try:
        model = opaque_types.from_proto(onnx.load(str(p), load_external_data=False))
        if not opaque_types.has_opaque(model):
            raise first
        ir.external_data.set_base_dir(model.graph, p.parent)
        return model
    except Exception:
        raise OnnxcompError(f"{p}: not a readable ONNX model ({one_line(first)})") from None


def detach_from_proto(model: ir.Model) -> None:
    """Give every embedded tensor its own array.

    A tensor read from a file wraps its part of the parsed protobuf, and any one of
    them keeps the whole message, every weight included, alive. Once detached, a
    weight that a pass replaces (quantized to int8, folded into a Conv) frees its
    float bytes: on ResNet-50 that is 100 MB less for the rest of the run.
    """
    for graph in all_graphs(model.graph):
        for value in graph.initializers.values():
            value.const_value = _own(value.const_value)
        for node in graph:
            for name, attr in node.attributes.items():
                if attr.type == ir.AttributeType.TENSOR:
                    node.attributes[name] = ir.AttrTensor(name, _own(attr.value))


def _own(tensor):
    if not isinstance(tensor, ir.TensorProtoTensor) or tensor.dtype == ir.DataType.STRING:
        return tensor
    try:
        array = tensor.numpy()
    except Exception:  # a type numpy cannot hold: keep the view
        return tensor
    return ir.Tensor(array, dtype=tensor.dtype, name=tensor.name, doc_string=tensor.doc_string)


def _existing_file(path: str | os.PathLike) -> Path:
    p = safe_io.regular_file(path, "file")
    writer.note_input(p)  # no output of this run may replace it
    if p.stat().st_size == 0:
        raise OnnxcompError(f"{p}: empty file, not an ONNX model")
    safe_io.sniff_model(p)  # before anything reads the whole file
    return p


def check_input(path: str | os.PathLike) -> None:
    """Reject a model that fails onnx.checker, reading it from disk (no 2 GB limit)."""
    p = _existing_file(path)
    try:
        if p.stat().st_size < _STREAMED_READ_BYTES or not _check_streamed(p):
            onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise OnnxcompError(f"{path}: model fails onnx.checker: {one_line(exc)}") from None
    except Exception as exc:
        raise OnnxcompError(f"{path}: not a readable ONNX model ({one_line(exc)})") from None


def tensor_bytes(model: ir.Model) -> int:
    """Bytes of all constant tensors (initializers, recursively through subgraphs)."""
    total = 0
    for graph in all_graphs(model.graph):
        for value in graph.initializers.values():
            if value.const_value is not None:
                total += value.const_value.nbytes
    return total


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    check_runtime: bool = True,
    max_bytes: int | None = None,
    release: bool = False,
) -> Path:
    """Write atomically after validating; never overwrite ``source``. With ``max_bytes``
    (the input's size plus slack), a larger output is not written (exit 1). ``release``:
    the caller is done with ``model``; its tensors are dropped once written, before the
    checks read the file back (which otherwise held the weights a second time).

    Large models (tensor data near the 2 GB protobuf limit) get their weights in
    ``<name>.data`` beside the model; onnx_ir writes it.
    """
    out = Path(path)
    external = tensor_bytes(model) >= _PROTO_LIMIT // 2
    data_name = out.name + ".data"
    also = (out.parent / data_name,) if external else ()
    safe_io.check_destination(out, Path(source) if source is not None else None, also=also)
    safe_io.sweep_stale(out.parent)
    tmpdir = safe_io.make_temp_dir(out.parent)
    try:
        tmp_model = tmpdir / out.name
        _write(model, tmp_model, data_name if external else None)
        if release:
            _drop_tensors(model)
        _check_file(tmp_model, check_runtime)
        if max_bytes is not None:
            _refuse_larger(tmpdir, max_bytes)
        names = [data_name, out.name] if external else [out.name]
        for name in names:
            safe_io.keep_mode(tmpdir / name, out.parent / name)
        safe_io.publish(tmpdir, out.parent, names)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def _drop_tensors(model: ir.Model) -> None:
    for graph in all_graphs(model.graph):
        for value in graph.initializers.values():
            value.const_value = None
    heap.trim()


def _refuse_larger(folder: Path, max_bytes: int) -> None:
    size = sum(f.stat().st_size for f in folder.iterdir() if f.name != safe_io.OWNER)
    if size > max_bytes:
        raise BudgetExceeded(
            f"the output would be {size:,} bytes, more than the {max_bytes:,} allowed for this "
            "input: not written (--allow-larger writes it)"
        )


def _write(model: ir.Model, path: Path, data_name: str | None) -> None:
    if data_name is None:
        # The output must not point back into the input's data file: read it in.
        ir.external_data.load_to_model(model)
        if opaque_types.has_opaque(model):
            onnx.save(opaque_types.to_proto(model), str(path))
        elif tensor_bytes(model) >= _STREAMED_WRITE_BYTES:
            save_streamed(model, path)  # no second copy of the weights while writing
        else:
            ir.save(model, path)
    else:
        ir.save(model, path, external_data=data_name, size_threshold_bytes=_EXTERNAL_THRESHOLD)


def _check_file(path: Path, check_runtime: bool) -> None:
    try:
        if path.stat().st_size < _STREAMED_READ_BYTES or not _check_streamed(path):
            onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise OnnxcompError(f"refusing to write an invalid model: {one_line(exc)}") from None
    if not check_runtime:
        return
    from onnxcomp.runtime.session import make_session

    try:
        # Without prepacking onnxruntime maps external weights and never touches them, so
        # checking a 2 GB output costs no 2 GB of memory (its kernels are still built).
        make_session(path, threads=1, optimize=False, config={"session.disable_prepacking": "1"})
    except Exception as exc:
        raise OnnxcompError(
            f"refusing to write a model onnxruntime cannot load: {one_line(exc)}"
        ) from None


def opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def upgrade_opset(model: ir.Model, target: int) -> tuple[ir.Model, int | None]:
    """Convert the default domain to ``target`` when it is older; returns the old opset.

    onnx's version converter does the work; custom domains (ai.onnx.ml, ...) are kept.
    """
    old = opset(model)
    if old >= target:
        return model, None
    # the converter never sees the weights' bytes
    stash = stub_tensors(list(all_graphs(model.graph)), _STUB_BYTES, _STUB_LOCATION)
    try:
        proto = opaque_types.to_proto(model)
    finally:
        _unstub(model, stash)
    try:
        converted = onnx.version_converter.convert_version(proto, target)
    except Exception as exc:
        raise OnnxcompError(
            f"cannot upgrade the model from opset {old} to {target}: {one_line(exc)}"
        ) from None
    logger.info("upgraded the model from opset %d to %d", old, target)
    _keep_value_info_of(proto, converted)
    new = opaque_types.from_proto(converted)
    if not _unstub(new, stash):  # the converter renamed or dropped a weight
        converted = onnx.version_converter.convert_version(opaque_types.to_proto(model), target)
        _keep_value_info_of(proto, converted)
        new = opaque_types.from_proto(converted)
    return new, old


# A weight of this size or more crosses the version converter as an external reference:
# the serialized copy, the converter's copy and the parsed result held the weights three
# more times (ddddocr's 54 MB model peaked at 4x its size in the upgrade).
_STUB_BYTES = 1024
_STUB_LOCATION = "onnxcomp-upgrade-stub"


def _unstub(model: ir.Model, stash: dict[str, ir.TensorProtocol]) -> bool:
    """Put the stashed weights back by name; False when one has no place to go."""
    placed = set()
    for graph in all_graphs(model.graph):
        for name, value in graph.initializers.items():
            t = value.const_value
            stub = isinstance(t, ir.ExternalTensor) and str(t.location) == _STUB_LOCATION
            if name in stash and (stub or t is stash[name]):
                value.const_value = stash[name]
                placed.add(name)
            elif stub:
                return False
    return len(placed) == len(stash)


def _keep_value_info_of(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """The converter infers shapes; annotations the input did not have are not ours to
    write (passes/value_info.py)."""
    had = {v.name for v in before.graph.value_info}
    kept = [v for v in after.graph.value_info if v.name in had]
    del after.graph.value_info[:]
    after.graph.value_info.extend(kept)


def file_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a model and the external data files it references."""
    p = Path(path)
    total = p.stat().st_size
    if not safe_io.may_reference_external_data(p):
        return total
    seen: set[str] = set()
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception:
        return total
    for tensor in safe_io.all_initializers(proto.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in seen:
                    seen.add(entry.value)
                    with contextlib.suppress(OSError, ValueError):  # checked at load
                        total += (p.parent / entry.value).stat().st_size
    return total
