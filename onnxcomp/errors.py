"""Errors that the CLI turns into one line on stderr and an exit code."""

from __future__ import annotations


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
