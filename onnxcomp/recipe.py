"""Recipes: compression settings in a TOML (or JSON) file a deploy pipeline versions.

The same option names as the command line (dashes or underscores), globally under
``[compress]`` and per layer under ``[layers."NAME"]`` where NAME is a node name, a
weight name or an op type. ``auto`` writes recipes; ``compress --recipe`` replays
them to the same bytes. Unknown keys and bad values are errors that name the key.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from onnxcomp.errors import OnnxcompError, one_line
from onnxcomp.io.jsonio import write_text_atomic
from onnxcomp.io.safe_io import regular_file
from onnxcomp.io.writer import note_input
from onnxcomp.options import CompressOptions, LayerOptions, choices_of, option_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMAT_VERSION = 1


def _types(hint: Any) -> tuple[type, ...] | None:
    """The TOML/JSON value types a field of this annotation accepts (None: any)."""
    if choices_of(hint) is not None:
        return (str, bool) if "bool" in str(hint) else (str,)
    text = str(hint)
    if hint is str or text in ("str | None", "typing.Optional[str]"):
        return (str,)
    if hint is bool:
        return (bool,)
    if hint is int:
        return (int,)
    if "float" in text:
        return (int, float)
    if "tuple" in text:
        return (list,)
    if hint is Any:  # data (calib): a path in a recipe
        return (str,)
    return None


# Options a recipe may not carry (recipe=False in options/) describe a run, not a compression.
_TYPES: dict[str, tuple[type, ...] | None] = {
    f.name: _types(hint) for f, hint in option_fields(CompressOptions) if f.metadata.get("recipe")
}
_GLOBAL_KEYS = set(_TYPES)
_LAYER_TYPES = {f.name: _types(hint) for f, hint in option_fields(LayerOptions)}
_LAYER_CHOICES = {f.name: choices_of(hint) for f, hint in option_fields(LayerOptions)}
_LAYER_KEYS = set(_LAYER_TYPES)


def _norm(key: str) -> str:
    return key.replace("-", "_")


_MAX_RECIPE_BYTES = 1 << 20
_MAX_NESTING = 16  # a recipe is tables of scalars and short lists


def _shallow(text: str, p: Path) -> None:
    """Refuse brackets nested deeper than any recipe needs before a parser recurses
    (1,000 levels were a RecursionError). Brackets inside strings count too: a recipe
    never has that many."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    if deepest > _MAX_NESTING:
        raise OnnxcompError(
            f"{p}: not a valid recipe: brackets nested {deepest} levels deep (at most "
            f"{_MAX_NESTING})"
        )


def load_recipe(path: str | os.PathLike) -> CompressOptions:
    """Read and validate a recipe; every error names the file and the key."""
    p = Path(path)
    regular_file(p, "recipe file")
    note_input(p, "the recipe")
    if p.stat().st_size > _MAX_RECIPE_BYTES:
        raise OnnxcompError(f"{p}: {p.stat().st_size:,} bytes is not a recipe (at most 1 MB)")
    try:
        text = p.read_text()
        _shallow(text, p)
        raw = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise OnnxcompError(f"{p}: not a valid recipe: {one_line(exc)}") from None
    options = recipe_from_dict(raw, where=str(p))
    if isinstance(options.calib, str) and not os.path.isabs(options.calib):
        beside = p.parent / options.calib  # recipes store calib relative to themselves
        if beside.exists() or not Path(options.calib).exists():
            options.calib = str(beside)
    return options


def recipe_from_dict(raw: dict[str, Any], where: str = "recipe") -> CompressOptions:
    if not isinstance(raw, dict):
        raise OnnxcompError(f"{where}: a recipe is a table of settings, not a {type(raw).__name__}")
    unknown = set(raw) - {"version", "compress", "layers"}
    if unknown:
        raise OnnxcompError(f"{where}: unknown key '{sorted(unknown)[0]}'")
    version = raw.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise OnnxcompError(f"{where}: 'version' must be {FORMAT_VERSION}, got {version!r}")
    options = CompressOptions()
    for key, value in _table(raw, "compress", where).items():
        name = _norm(key)
        if name not in _GLOBAL_KEYS:
            raise OnnxcompError(f"{where}: unknown key 'compress.{key}'")
        setattr(options, name, _coerce(f"compress.{key}", name, value, where))
    options.exclude = tuple(options.exclude)
    layers: dict[str, LayerOptions] = {}
    for layer, table in _table(raw, "layers", where).items():
        if not isinstance(table, dict):
            raise OnnxcompError(f"{where}: 'layers.{layer}' must be a table")
        layers[layer] = _layer(layer, table, where)
    options.layers = layers
    try:
        options.validate()
    except OnnxcompError as exc:
        raise OnnxcompError(f"{where}: {exc}") from None
    return options


def _table(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise OnnxcompError(f"{where}: '{key}' must be a table")
    return value


def _layer(layer: str, table: dict, where: str) -> LayerOptions:
    out = LayerOptions()
    for key, value in table.items():
        name = _norm(key)
        full = f"layers.{layer}.{key}"
        if name not in _LAYER_KEYS:
            raise OnnxcompError(f"{where}: unknown key '{full}'")
        choices = _LAYER_CHOICES[name]
        if choices is not None and value not in choices:
            raise OnnxcompError(
                f"{where}: '{full}' must be one of {', '.join(choices)}, got {value!r}"
            )
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "prune_sparsity" and not (number and 0 <= value < 1):
            raise OnnxcompError(f"{where}: '{full}' must be a number in [0, 1), got {value!r}")
        setattr(out, name, _coerce(full, name, value, where, _LAYER_TYPES))
    return out


def _coerce(
    full: str, name: str, value: Any, where: str, types: dict[str, Any] | None = None
) -> Any:
    wanted = (_TYPES if types is None else types).get(name)
    ok = wanted is None or (
        isinstance(value, wanted) and not (bool not in wanted and isinstance(value, bool))
    )
    if name == "exclude" and ok:
        ok = all(isinstance(v, str) for v in value)
    if not ok:
        raise OnnxcompError(f"{where}: '{full}' has a value of the wrong type: {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise OnnxcompError(f"{where}: '{full}' must be finite")
    return tuple(value) if name == "exclude" else value


DISTILL_KEYS = ("distill_steps", "lr", "seed")


def recipe_to_dict(options: CompressOptions) -> dict[str, Any]:
    """Only what differs from the defaults, so recipes stay short and readable."""
    default = CompressOptions()
    glob = {}
    for f in fields(CompressOptions):
        if f.name not in _GLOBAL_KEYS:
            continue
        value = getattr(options, f.name)
        # A distilled model depends on its training: steps, rate and seed always written.
        said = options.trained == "distill" and f.name in DISTILL_KEYS
        if f.name == "recover" and value is not None:  # "gptq, distill" as "gptq,distill"
            value = ",".join(options.recover_methods)
        if (said or value != getattr(default, f.name)) and value is not None:
            glob[f.name] = list(value) if isinstance(value, tuple) else value
    layers = {
        name: {k: v for k, v in vars(layer).items() if v is not None}
        for name, layer in sorted(options.layers.items())
    }
    return {"version": FORMAT_VERSION, "compress": glob, "layers": layers}


def dump_toml(options: CompressOptions) -> str:
    """TOML for our flat schema (stdlib reads TOML but cannot write it)."""
    d = recipe_to_dict(options)
    lines = [
        "# onnxcomp recipe: replay with `onnxcomp compress MODEL --recipe FILE -o OUT`",
        "# (a calib path is relative to this file's folder)",
        f"version = {d['version']}",
        "",
        "[compress]",
    ]
    lines += [f"{k} = {_toml_value(v)}" for k, v in d["compress"].items()]
    for name, layer in d["layers"].items():
        lines += ["", f"[layers.{json.dumps(name)}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in layer.items()]
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def save_recipe(
    options: CompressOptions, path: str | os.PathLike, *, base_dir: str | os.PathLike | None = None
) -> Path:
    """Write ``options`` to ``path``. A ``calib`` path is stored relative to the folder
    the recipe will live in (``base_dir``, default: its own), so a replay from any
    working directory finds the data."""
    p = Path(path)
    if isinstance(options.calib, str):
        base = os.path.abspath(base_dir if base_dir is not None else p.parent)
        options = replace(options, calib=os.path.relpath(os.path.abspath(options.calib), base))
    text = (
        json.dumps(recipe_to_dict(options), indent=2) if p.suffix == ".json" else dump_toml(options)
    )
    return write_text_atomic(p, text)
