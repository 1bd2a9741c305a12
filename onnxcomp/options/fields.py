"""The option types and the field helper every options dataclass is built from."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import Field, field, fields
from typing import Any, Literal, Union, get_args, get_origin

Quantize = Literal["weights", "int8", "codebook", "int4"]
CalibMethod = Literal["minmax", "percentile", "entropy", "mse"]
ActivationType = Literal["auto", "uint8", "int8"]
WeightRange = Literal["auto", "full", "reduced"]
RecoverMethod = Literal["bias", "gptq", "sparsegpt", "blockwise", "distill"]
Precision = Literal["float", "weights", "int8", "int4"]  # per layer: ..., int4 weight blocks
Objective = Literal["size", "latency"]
Engine = Literal["local", "ray"]
Metric = Literal["accuracy", "agreement", "cosine"]
MeasureMode = Literal["cached", "fresh", "off"]
Task = Literal["classify", "detect", "segment", "sequence", "ctc", "embed", "threshold", "regress"]

QUANTIZE_MODES: tuple[str, ...] = get_args(Quantize)
CALIB_METHODS: tuple[str, ...] = get_args(CalibMethod)
ACTIVATION_TYPES: tuple[str, ...] = get_args(ActivationType)
RECOVER_METHODS: tuple[str, ...] = get_args(RecoverMethod)
CLOSED_FORM: tuple[str, ...] = ("bias", "gptq", "sparsegpt")  # one pass over the data
TRAINED: tuple[str, ...] = ("blockwise", "distill")  # torch, steps, a held-back guard
PRECISIONS: tuple[str, ...] = get_args(Precision)
OBJECTIVES: tuple[str, ...] = get_args(Objective)
METRICS: tuple[str, ...] = get_args(Metric)
TASKS: tuple[str, ...] = get_args(Task)
# --quantize int4: rows of a MatMul/Gemm weight sharing one scale (MatMulNBits block sizes)
BLOCK_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256)
DISTILL_LOSSES: tuple[str, ...] = ("kl", "mse", "cosine")  # --distill-loss OUTPUT=KIND


def option(
    default: Any = None,
    help: str = "",
    *,
    flag: str | None = None,
    metavar: str | None = None,
    cli: bool = True,
    recipe: bool = True,
    show_default: bool | str = False,
    factory: Callable[[], Any] | None = None,
    min: int | None = None,
) -> Any:
    """A dataclass field with what the command line and recipes need to know about it.

    ``flag``: the command-line spelling when it is not ``--field-name``; ``cli=False``: API
    only; ``recipe=False``: describes a run, not a compression, so no recipe carries it;
    ``min``: the smallest integer the command line accepts (a usage error below it);
    ``show_default``: True, or the text shown for the default in ``--help``.
    """
    meta = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "cli": cli,
        "recipe": recipe,
        "show_default": show_default,
        "min": min,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def required(help: str = "", *, metavar: str | None = None) -> Any:
    """A field without a default (keyword-only dataclasses): required on the command line."""
    return field(
        metadata={"help": help, "flag": None, "metavar": metavar, "cli": True, "recipe": True,
                  "show_default": False, "required": True}
    )  # fmt: skip


def choices_of(annotation: Any) -> tuple[str, ...] | None:
    """The allowed strings of a ``Literal`` annotation (also inside ``X | None``)."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = choices_of(arg)
            if found is not None:
                return found
    return None


def option_fields(cls: type) -> list[tuple[Field, Any]]:
    """(field, resolved type annotation) of an options dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in fields(cls)]
