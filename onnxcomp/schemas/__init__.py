"""JSON Schemas of what ``--json`` prints, shipped with the package so a deploy pipeline
can validate onnxcomp's output with the same file the tests validate it with."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from onnxcomp.errors import OnnxcompError

NAMES = ("check", "compress")


def load_schema(command: str) -> dict[str, Any]:
    """The schema of ``onnxcomp COMMAND --json`` (draft 2020-12)."""
    if command not in NAMES:
        raise OnnxcompError(f"no JSON schema for {command!r}; there are: {', '.join(NAMES)}")
    text = resources.files(__name__).joinpath(f"{command}.schema.json").read_text("utf-8")
    return json.loads(text)
