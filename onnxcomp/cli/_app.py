"""The click group every command file registers on, and output helpers."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from onnxcomp import runtime
from onnxcomp.jsonio import jsonable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnxcomp")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-vv: debug).")
def app(verbose: int) -> None:
    """Make ONNX models smaller and faster, and prove they still work."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(name)s: %(message)s")
    runtime.set_verbosity(verbose)  # onnxruntime's own log lines only from -vv


def emit_json(obj: Any) -> None:
    """One JSON object on stdout and nothing else there."""
    click.echo(json.dumps(jsonable(obj), indent=2, sort_keys=False))


def say(text: str) -> None:
    click.echo(text)


def wrote(path: Any, as_json: bool) -> None:
    """Name a report file written beside the main output (stderr under --json: stdout
    holds the JSON object alone)."""
    click.echo(f"html report: {path}", err=as_json)
