"""The one writer for every file onnxcomp writes that is not a model (reports, recipes,
JSON, HTML), and the run's ledger every destination is checked against (models too).

A destination is refused (exit 2, before any work when the caller checks early) when it
is a folder, a FIFO, a device or a socket, when its name is longer than the file system
allows, when it is one of this run's inputs or their external data (hard links and
symlinks included: compared by device and inode), or a file this run already wrote
(``--html`` onto the model ``auto`` just published). A write goes to a unique temp name
beside the destination (never a fixed one two runs collide on), is fsynced, gets the
replaced file's mode (or the umask's), and is renamed into place; on any failure,
a full disk included, the temp file is removed and the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

from onnxcomp.errors import OnnxcompError, environment_error

TEMP_PREFIX = ".onnxcomp-"
_inputs: dict[tuple[int, int], str] = {}  # (device, inode) -> what it is
_written: set[tuple[int, int]] = set()


def reset() -> None:
    """A new run (the CLI calls it first: main() may run several times in a process)."""
    _inputs.clear()
    _written.clear()


def _key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def note_input(path: str | os.PathLike, what: str = "the input model") -> None:
    """Remember ``path`` as read by this run: no output may replace it."""
    key = _key(Path(path))
    if key is not None:
        _inputs.setdefault(key, what)


def note_written(path: str | os.PathLike) -> None:
    key = _key(Path(path))
    if key is not None:
        _written.add(key)


def name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def kind(mode: int) -> str:
    """What a file that is not a regular file is, for a message."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends: a step that must not be cut in two."""
    wanted = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def check_target(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` if onnxcomp may replace it (see the module doc)."""
    p = Path(path)
    if not p.name or p.name in (".", ".."):
        raise OnnxcompError(f"{p}: not a file name for the {what}")
    if not p.parent.is_dir():
        raise OnnxcompError(f"{p.parent}: folder for the {what} does not exist")
    if len(os.fsencode(p.name)) > name_max(p.parent):
        raise OnnxcompError(f"{p.name[:40]}...: file name too long for the {what}")
    try:
        st = p.stat()
    except FileNotFoundError:
        return p
    except OSError as exc:
        raise OnnxcompError(f"{p}: cannot be written ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise OnnxcompError(f"{p}: is {kind(st.st_mode)}, not a file: will not replace it")
    key = (st.st_dev, st.st_ino)
    if key in _inputs:
        raise OnnxcompError(f"{p}: the {what} would overwrite {_inputs[key]}")
    if key in _written:
        raise OnnxcompError(f"{p}: the {what} would overwrite a file this run wrote")
    return p


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_file(path: str | os.PathLike, data: str | bytes, what: str = "output") -> Path:
    """Write ``data`` to ``path`` through a unique temp file beside it, atomically."""
    p = check_target(path, what)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except FileNotFoundError:
        mode = _umask_mode()
    tmp = p.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        with signals_deferred():
            check_target(p, what)  # the destination may have changed meanwhile
            os.replace(tmp, p)
            note_written(p)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        fault = environment_error(exc) if isinstance(exc, OSError) else None
        if fault is not None:
            raise fault from None
        if isinstance(exc, OSError) and not isinstance(exc, OnnxcompError):
            raise OnnxcompError(f"{p}: cannot write the {what} ({exc.strerror or exc})") from None
        raise
    _fsync_folder(p.parent)
    return p


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
