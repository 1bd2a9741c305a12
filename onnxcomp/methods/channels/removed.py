"""Which layers --prune-channels shrank, said in the model file itself (its metadata), so
``inspect`` can show it without the original to compare with."""

from __future__ import annotations

import json

import onnx_ir as ir

REMOVED_KEY = "onnxcomp.removed_channels"


def record_removed(model: ir.Model, removed: dict[str, tuple[int, int]]) -> None:
    """Say in the file which layers lost channels (``inspect`` shows it): a JSON object
    name -> [before, after], merged with an earlier run's (its "before" kept)."""
    try:
        known = json.loads(model.metadata_props.get(REMOVED_KEY, "{}"))
    except ValueError:
        known = {}
    if not isinstance(known, dict):
        known = {}
    for name, (was, now) in removed.items():
        first = known.get(name)
        if isinstance(first, list) and len(first) == 2 and isinstance(first[0], int):
            was = first[0]
        known[name] = [was, now]
    model.metadata_props[REMOVED_KEY] = json.dumps(known, sort_keys=True)


def removed_channels(model: ir.Model) -> dict[str, list[int]]:
    """What onnxcomp --prune-channels recorded; anything malformed is ignored."""
    try:
        raw = json.loads(model.metadata_props.get(REMOVED_KEY, "{}"))
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        str(k): [int(v[0]), int(v[1])]
        for k, v in sorted(raw.items())
        if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v)
    }
