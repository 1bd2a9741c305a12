"""Command line: one file per command, all thin wrappers over the Python API.

Exit codes: 0 ok; 1 a check or budget failed; 2 bad input or usage, with one line on
stderr and no traceback; 3 an internal error (a bug in onnxcomp or a library it uses):
one line on stderr naming a log file that holds the traceback ($ONNXCOMP_LOG_DIR, else
the system temp folder). Set ONNXCOMP_TRACEBACK=1 to get the traceback raised instead.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import click

from onnxcomp.cli import (  # noqa: F401  (each module registers its command)
    auto_cmd,
    check_cmd,
    compress_cmd,
    debug_cmd,
    demo_cmd,
    inspect_cmd,
)
from onnxcomp.cli._app import app
from onnxcomp.errors import OnnxcompError, clean, environment_error, one_line
from onnxcomp.io import writer

INTERNAL_ERROR = 3


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]
    previous = _cleanup_on_sigterm()
    writer.reset()
    try:
        rv = app.main(args=args, prog_name="onnxcomp", standalone_mode=False)
    except OnnxcompError as exc:
        return _fail(str(exc), exc.exit_code)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        return _fail("aborted", 2)
    except click.ClickException as exc:
        return _fail(exc.format_message(), 2)
    except (KeyboardInterrupt, BrokenPipeError):
        return _fail("interrupted", 2)
    except Exception as exc:  # a bug: never a traceback for the user, one in a log file
        fault = environment_error(exc)  # a full disk is the machine's fault, not ours
        if fault is not None:
            return _fail(str(fault), fault.exit_code)
        if os.environ.get("ONNXCOMP_TRACEBACK"):
            raise
        return _internal_error(exc, args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return rv if isinstance(rv, int) else 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _cleanup_on_sigterm():
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` removes its temp folder."""
    try:
        return signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _fail(message: str, code: int) -> int:
    click.echo(f"onnxcomp: error: {clean(message)}", err=True)
    return code


def _internal_error(exc: Exception, args: list[str]) -> int:
    text = one_line(str(exc))
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    log = _write_log(exc, args)
    where = f"traceback in {log}" if log else "set ONNXCOMP_TRACEBACK=1 for the traceback"
    click.echo(f"onnxcomp: internal error: {clean(what)} ({where})", err=True)
    return INTERNAL_ERROR


def _write_log(exc: Exception, args: list[str]) -> Path | None:
    """The traceback in ``onnxcomp-<timestamp>-<random>.log``, created new (O_EXCL) and
    never through a symlink (O_NOFOLLOW), mode 0600: a name nobody can predict and plant
    a link at. None when it cannot be written."""
    folder = Path(os.environ.get("ONNXCOMP_LOG_DIR") or tempfile.gettempdir())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"onnxcomp-{stamp}-{secrets.token_hex(6)}.log"
    try:
        from importlib.metadata import version

        try:
            release = version("onnxcomp")
        except Exception:
            release = "unknown"
        folder.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(path, flags, 0o600)
        with open(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(f"onnxcomp {release}, python {sys.version.split()[0]}\n")
            f.write(f"command: onnxcomp {' '.join(args)}\n\n")
            f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except OSError:
        return None
    return path.resolve()


def run() -> None:
    sys.exit(main())
