"""The click group every command file registers on, and output helpers."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from typing import Any

import click

from onnxcomp import runtime
from onnxcomp.io import progress
from onnxcomp.io.jsonio import jsonable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnxcomp")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars on stderr.")
def app(verbose: int, quiet: bool) -> None:
    """Make ONNX models smaller and faster, and prove they still work."""
    progress.set_mode("off" if quiet else "auto")
    # back to the library default once the command ends (main() may run again in-process)
    click.get_current_context().call_on_close(lambda: progress.set_mode("auto"))
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(name)s: %(message)s")
    runtime.set_verbosity(verbose)  # onnxruntime's own log lines only from -vv
    if verbose == 0:
        _quiet_third_parties(click.get_current_context())


def _ours_or_error(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] == "onnxcomp" or record.levelno >= logging.ERROR


def _quiet_third_parties(ctx: click.Context) -> None:
    """Without -v no library's log line (onnx_ir's shape inference, onnxscript) or warning
    (numpy's RuntimeWarning with its source path) reaches stderr: onnxcomp says what
    matters itself. Undone when the command ends (main() may run again in-process)."""
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is sys.stderr]
    for handler in handlers:
        handler.addFilter(_ours_or_error)
    saved = list(warnings.filters)
    warnings.simplefilter("ignore")

    def restore() -> None:
        warnings.filters[:] = saved  # type: ignore[index]
        for handler in handlers:
            handler.removeFilter(_ours_or_error)

    ctx.call_on_close(restore)


def emit_json(obj: Any) -> None:
    """One JSON object on stdout and nothing else there."""
    click.echo(json.dumps(jsonable(obj), indent=2, sort_keys=False))


def say(text: str) -> None:
    """Print a report; a character the terminal cannot encode (a file name that is not
    UTF-8) is shown escaped instead of failing the command."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    click.echo(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))


def wrote(path: Any, as_json: bool) -> None:
    """Name a report file written beside the main output (stderr under --json: stdout
    holds the JSON object alone)."""
    click.echo(f"html report: {path}", err=as_json)


def json_progress(as_json: bool) -> None:
    """Under --json, progress goes to stderr as JSON lines too (unless --quiet)."""
    if as_json and progress.get_mode() != "off":
        progress.set_mode("json")


def escape(text: str) -> str:
    """A name from a model or a path as one printable line: control characters shown
    escaped (``\\n``, ``\\x1b``), so a node name cannot forge a line or drive the terminal;
    the bytes of a file name that is not UTF-8 shown as ``\\xe9``, never an encoding error."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 32 or code == 127 or 0x80 <= code < 0xA0 or 0xD800 <= code < 0xE000:
            out.append(f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
