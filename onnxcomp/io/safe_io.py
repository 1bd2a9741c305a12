"""File safety: what may be read, what may be replaced, and temp folders we can clean up.

Inputs must be regular files: a FIFO would block a read forever and a device never ends.
A model file is sniffed (its top-level protobuf fields walked with seeks, no tensor
read) before anything parses it, so a 3 GB file of zeros is refused in microseconds.
An output never replaces a device, a FIFO, the input, or a data file the input reads
its weights from, and keeps the permissions of the file it replaces.

Temp folders: io/tempdirs.py.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from onnxcomp.errors import OnnxcompError
from onnxcomp.io.tempdirs import (  # noqa: F401  (their home before the split)
    MANIFEST,
    OWNER,
    PREFIX,
    make_temp_dir,
    publish,
    sweep_stale,
)
from onnxcomp.io.writer import check_target, kind, note_input, signals_deferred  # noqa: F401

if TYPE_CHECKING:
    import onnx


# ModelProto field number -> protobuf wire type (0 varint, 2 length-delimited).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 21: 2, 25: 2}
_GRAPH_FIELD = 7


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it is a regular file (or a symlink to one); else one clear error."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise OnnxcompError(f"{p}: no such {what}") from None
    except OSError as exc:
        raise OnnxcompError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise OnnxcompError(f"{p}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise OnnxcompError(f"{p}: not a regular file ({_kind(st.st_mode)}); give a {what}")
    return p


def regular_data(source) -> None:
    """A data source given as a path must be a folder or a regular file (not a FIFO)."""
    if not isinstance(source, (str, os.PathLike)):
        return
    p = Path(source)
    try:
        st = p.stat()
    except OSError:
        return  # data.py says "no such data file or folder"
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise OnnxcompError(f"{p}: not a regular file or folder ({_kind(st.st_mode)})")


_kind = kind


def _varint(f) -> int | None:
    shift, value = 0, 0
    for _ in range(10):
        byte = f.read(1)
        if not byte:
            return None
        b = byte[0]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7
    return None


def sniff_model(path: Path) -> None:
    """Refuse a file whose top level is not an ONNX ModelProto with a graph.

    Walks the field tags and skips each length-delimited field with a seek: the cost
    is the number of top-level fields, never the file size.
    """
    size = path.stat().st_size
    seen_graph = False
    with open(path, "rb") as f:
        fields = 0
        while f.tell() < size:
            tag = _varint(f)
            if tag is None:
                raise OnnxcompError(f"{path}: not an ONNX model (truncated header)")
            number, wire = tag >> 3, tag & 7
            expected = _MODEL_FIELDS.get(number)
            if (
                number == 0
                or wire not in (0, 1, 2, 5)
                or (expected is not None and wire != expected)
            ):
                where = "at byte 0" if fields == 0 else str(number)
                raise OnnxcompError(f"{path}: not an ONNX model (bad protobuf field {where})")
            if wire == 0:
                if _varint(f) is None:
                    raise OnnxcompError(f"{path}: not an ONNX model (truncated)")
            elif wire == 1 or wire == 5:
                f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
            else:
                length = _varint(f)
                if length is None or f.tell() + length > size:
                    raise OnnxcompError(f"{path}: not an ONNX model (truncated or corrupt)")
                f.seek(length, os.SEEK_CUR)
            seen_graph = seen_graph or number == _GRAPH_FIELD
            fields += 1
    if not seen_graph:
        raise OnnxcompError(f"{path}: not an ONNX model (no graph)")


def external_data_files(model_path: Path) -> set[Path]:
    """The files a model reads its external tensors from (resolved), without tensors."""
    try:
        regular_file(model_path)
        sniff_model(model_path)  # a huge non-model file is not scanned
    except OnnxcompError:
        return set()
    if not may_reference_external_data(model_path):
        return set()
    import onnx

    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except Exception:
        return set()
    out = set()
    for tensor in all_initializers(proto.graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                with contextlib.suppress(OSError, ValueError):  # a NUL, a loop
                    out.add((model_path.parent / entry.value).resolve())
    return out


def check_external_tensor(tensor, model_path: Path, what: str | None = None) -> None:
    """An external tensor must name a regular file inside the model's folder that holds
    all its bytes: a location like ``/etc/shadow`` or ``../../x`` would otherwise be read
    (and written into the output), and a short file fails deep inside numpy."""
    where = f"{model_path}: {what or f'tensor {tensor.name!r}'}"
    try:
        nbytes = tensor.nbytes
    except TypeError:  # strings have no width: external data cannot hold them
        raise OnnxcompError(
            f"{where}: external data of dtype {tensor.dtype.name} is not supported"
        ) from None
    folder = Path(tensor.base_dir or model_path.parent)
    offset = tensor.offset or 0
    needed = tensor.length if tensor.length is not None else nbytes
    if needed < nbytes:
        needed = -1
    confine(folder, str(tensor.location), where, offset, needed, nbytes)


def confine(
    folder: Path, location: str, where: str, offset: int = 0, length: int = 0, nbytes: int = 0
) -> Path:
    """The file ``location`` names inside ``folder``, refused unless it is a regular file
    there (no absolute path, no ``..``, no symlink out, no FIFO or device) holding
    ``length`` bytes from ``offset``: for models' and test data's external tensors."""
    if not location or "\0" in location:
        raise OnnxcompError(f"{where}: external data location {location!r} is not a file name")
    if os.path.isabs(location) or ".." in Path(location).parts:
        raise OnnxcompError(f"{where}: external data location '{location}' is outside the folder")
    path = folder / location
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise OnnxcompError(f"{where}: external data '{location}' links outside the folder")
    try:
        st = path.stat()
    except OSError:
        raise OnnxcompError(f"{where}: external data file '{location}' is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise OnnxcompError(f"{where}: external data '{location}' is {_kind(st.st_mode)}")
    if offset < 0 or length < 0 or offset + length > st.st_size:
        raise OnnxcompError(
            f"{where}: external data '{location}' holds {st.st_size:,} bytes, the tensor needs "
            f"{nbytes:,} at offset {offset:,} (truncated or wrong file)"
        )
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_destination(
    out: Path, source: Path | None = None, *, also: tuple[Path, ...] = ()
) -> None:
    """Refuse before any work: a destination that is not a regular file, the input
    model, or any file the input's weights live in (``also``: extra files written)."""
    if not out.parent.exists():
        raise OnnxcompError(f"{out.parent}: output folder does not exist")
    for target in (out, *also):
        try:
            st = target.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OnnxcompError(f"{target}: cannot be written ({exc.strerror or exc})") from None
        if stat.S_ISDIR(st.st_mode):
            raise OnnxcompError(f"{target}: is a folder")
        if not stat.S_ISREG(st.st_mode):
            raise OnnxcompError(
                f"{target}: is {_kind(st.st_mode)}, not a file: will not replace it"
            )
    for target in (out, *also):  # name length, this run's inputs and outputs
        check_target(target)
    if source is None:
        return
    for target in (out, *also):
        if _same(target, source):
            raise OnnxcompError(f"{target}: output would overwrite the input model")
        for data in external_data_files(source):
            if _same(target, data):
                raise OnnxcompError(
                    f"{target}: output would overwrite the input's external data file"
                )


def keep_mode(new: Path, old: Path) -> None:
    """Give ``new`` the permission bits of the file it is about to replace."""
    try:
        mode = stat.S_IMODE(old.stat().st_mode)
    except FileNotFoundError:
        return
    os.chmod(new, mode)


# How an external-data entry's key is serialized: field 1, length 8, "location".
_LOCATION_KEY = b"\x0a\x08location"
_SCAN_CHUNK = 4 << 20


def may_reference_external_data(path: Path) -> bool:
    """False when the bytes cannot hold an external-data entry: a scan of the file is
    far cheaper than parsing a model of hundreds of MB to find none."""
    if path.stat().st_size == 0:
        return False
    # Read in chunks, not mapped: a mapped file's pages count in this process's RSS
    # (a 419 MB model's scan doubled the peak of compressing it).
    overlap = len(_LOCATION_KEY) - 1
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(_SCAN_CHUNK):
            if (tail + chunk).find(_LOCATION_KEY) >= 0:
                return True
            tail = chunk[-overlap:]
    return False


def all_initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every initializer of ``graph`` and of its subgraphs (If/Loop/Scan bodies)."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_initializers(attr.g)
            for g in attr.graphs:
                yield from all_initializers(g)


def check_report_target(
    path: str | os.PathLike, what: str, sources: tuple[str | os.PathLike, ...]
) -> Path:
    """Before the work: ``path`` may be written and is none of ``sources`` (inputs not
    read yet) nor a file their weights live in."""
    for source in sources:
        note_input(source, "an input of this run")
        for data in external_data_files(Path(source)):
            note_input(data, "the input's external data")
    return check_target(path, what)
