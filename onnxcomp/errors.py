"""Errors that the CLI turns into one line on stderr and an exit code."""

from __future__ import annotations

import errno


class OnnxcompError(Exception):
    """Bad input or usage: the CLI prints the message alone and exits 2."""

    exit_code = 2


class BudgetExceeded(OnnxcompError):
    """A check or an accuracy budget failed: exit 1."""

    exit_code = 1


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its class name when it has
    none), control characters replaced, at most ``limit`` characters: safe to print as
    one line of an error message."""
    text = str(exc)
    for line in text.splitlines():
        line = clean(line)
        if line:
            return line[:limit]
    return "" if isinstance(exc, str) else type(exc).__name__


def clean(text: str) -> str:
    """``text`` on one line: newlines, tabs and other control characters become spaces
    (runs of them one space), ends stripped."""
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif not out or out[-1] != " ":
            out.append(" ")
    return "".join(out).strip()


# The machine, not the input or onnxcomp, is at fault: no retry or other setting helps.
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
)


def environment_error(exc: BaseException) -> OnnxcompError | None:
    """A usage error (exit 2) naming the cause when ``exc`` is a full disk, a read-only
    file system, an I/O error or exhausted resources; None for anything else."""
    if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    what = exc.strerror or errno.errorcode.get(exc.errno or 0, "OS error")
    where = f"{exc.filename}: " if exc.filename else ""
    return OnnxcompError(f"{where}{what}: stopped, nothing written")
