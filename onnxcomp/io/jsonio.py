"""JSON-safe values and atomic text writes, for every report and recipe onnxcomp writes.

(Models have their own validated atomic save in model_io.py.)
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any


def jsonable(obj: Any) -> Any:
    """JSON has no NaN or Infinity; dataclasses (``to_dict`` first) become dicts."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    elif is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` through the one writer (io/writer.py): a unique temp file beside
    ``path``, fsynced and renamed into place; never an input or a file this run wrote."""
    from onnxcomp.io.writer import write_file

    return write_file(path, text, what=f"{Path(path).suffix.lstrip('.') or 'text'} file")
