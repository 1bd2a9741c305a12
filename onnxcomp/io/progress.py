"""Progress on long work (calibration, ...) through tqdm: a bar on a terminal, nothing when
stderr is not a TTY or under ``--quiet``, JSON lines under ``--json``.

The CLI sets the mode once per command (``set_mode``); library callers get the default,
a bar only on a terminal."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any, Literal

Mode = Literal["auto", "off", "json"]
_mode: Mode = "auto"


def set_mode(mode: Mode) -> None:
    """``auto``: a tqdm bar when the stream is a TTY; ``off``: silent; ``json``: one JSON
    object per line, at most one a second, and one at the end."""
    global _mode
    _mode = mode


def get_mode() -> Mode:
    return _mode


class _JsonLines:
    """tqdm's update/close/set_postfix_str for machines: ``{"progress": ..., "done": ...}``."""

    def __init__(self, total: int | None, desc: str, unit: str, stream: IO) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n, self.postfix, self._last = 0, "", 0.0
        self.start = time.monotonic()

    def _emit(self) -> None:
        record: dict[str, Any] = {"progress": self.desc, "done": self.n, "total": self.total,
                                  "unit": self.unit,
                                  "seconds": round(time.monotonic() - self.start, 3)}  # fmt: skip
        if self.postfix:
            record["status"] = self.postfix
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            self._emit()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        self._emit()


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def bar(
    total: int | None,
    desc: str,
    unit: str = "it",
    *,
    enabled: bool = True,
    stream: IO | None = None,
) -> Any:
    """A progress object with ``update(n)``, ``set_postfix_str(s)`` and ``close()``."""
    out = stream if stream is not None else sys.stderr
    if not enabled or _mode == "off":
        return _Silent()
    if _mode == "json":
        return _JsonLines(total, desc, unit, out)
    if not (hasattr(out, "isatty") and out.isatty()):
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=out, mininterval=0.1, leave=True)


def status_log(task: str, stream: IO | None = None) -> Callable[[str], None] | None:
    """For work that reports in lines (auto's trials): None keeps the caller's default
    (human lines on stderr); silent under ``off``; JSON lines under ``json``."""
    if _mode == "auto":
        return None
    if _mode == "off":
        return lambda line: None

    def emit(line: str) -> None:
        out = stream if stream is not None else sys.stderr
        out.write(json.dumps({"progress": task, "status": line}) + "\n")
        out.flush()

    return emit
