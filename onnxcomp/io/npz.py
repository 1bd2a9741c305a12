"""``.npz`` files checked before numpy reads them: every member's header (dtype, shape,
the bytes it declares against the bytes the archive holds) and its CRC, each failure one
line naming the file and the array (exit 2) instead of a MemoryError, a pickle refusal
or a ``BadZipFile`` deep inside numpy."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from onnxcomp.errors import OnnxcompError, one_line

MAX_ELEMENTS = 2**36


def check_npz(path: Path) -> list[str]:
    """The array names of ``path``, after checking every member's header."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
        raise OnnxcompError(f"{path}: not a readable .npz file ({one_line(exc)})") from None
    names = []
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[: -len(".npy")]
            _check_member(archive, info, f"{path}: array '{name}'")
            names.append(name)
    return names


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
    fmt = np.lib.format
    try:
        with archive.open(info) as f:
            version = fmt.read_magic(f)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = reader(f, max_header_size=10000)
            header = f.tell() if f.seekable() else None
    except Exception as exc:
        raise OnnxcompError(f"{where}: not a readable array header ({one_line(exc)})") from None
    if dtype.hasobject:
        raise OnnxcompError(
            f"{where}: holds Python objects (a pickle): refused, give numeric arrays"
        )
    if any(d < 0 for d in shape):
        raise OnnxcompError(f"{where}: negative shape {shape}")
    elements = math.prod(shape)
    if elements > MAX_ELEMENTS:
        raise OnnxcompError(f"{where}: shape {shape} declares {elements:,} elements")
    declared = elements * dtype.itemsize
    if header is not None and info.file_size - header != declared:
        raise OnnxcompError(
            f"{where}: shape {shape} of {dtype} needs {declared:,} bytes, the file holds "
            f"{info.file_size - header:,} (truncated or corrupt)"
        )


def read(arrays: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    """One array, a CRC or decompression error named (the header was checked)."""
    try:
        array = arrays[name]
    except Exception as exc:
        raise OnnxcompError(f"{path}: array '{name}' cannot be read ({one_line(exc)})") from None
    if not isinstance(array, np.ndarray):  # a member not named .npy comes back as bytes
        raise OnnxcompError(f"{path}: '{name}' is not a .npy array")
    return array
