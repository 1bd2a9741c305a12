"""Command line: one file per command, all thin wrappers over the Python API.

Exit codes: 0 ok; 1 a check or budget failed; 2 bad input or usage, with one line on
stderr and no traceback (set ONNXCOMP_TRACEBACK=1 to see one when debugging onnxcomp).
"""

from __future__ import annotations

import os
import sys

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
from onnxcomp.errors import OnnxcompError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]
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
    except Exception as exc:  # never a traceback for the user
        if os.environ.get("ONNXCOMP_TRACEBACK"):
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(f"{type(exc).__name__}: {text[:300]}", 2)
    return rv if isinstance(rv, int) else 0


def _fail(message: str, code: int) -> int:
    click.echo(f"onnxcomp: error: {message}", err=True)
    return code


def run() -> None:
    sys.exit(main())
