"""Click options built from the dataclasses in ``onnxcomp/options/``.

Choices come from the ``Literal`` types, defaults from the fields, help and metavar from
the field metadata: an option added there appears here with nothing else to write.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import MISSING
from typing import Any, TypeVar, Union, get_args, get_origin

import click

from onnxcomp.options import choices_of, option_fields

F = TypeVar("F", bound=Callable[..., Any])
MAX_INT = 2**31 - 1  # no integer option needs more; a larger one is a usage error


def _without_none(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def click_options(cls: type) -> Callable[[F], F]:
    """A decorator adding one click option per command-line field of ``cls``, in order."""

    def decorate(f: F) -> F:
        for fld, hint in reversed(option_fields(cls)):
            meta = fld.metadata
            if not meta.get("cli", False):
                continue
            long = meta.get("flag") or "--" + fld.name.replace("_", "-")
            kwargs: dict[str, Any] = {"help": meta.get("help") or None}
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
            if meta.get("show_default"):
                kwargs["show_default"] = meta["show_default"]
            base = _without_none(hint)
            choices = choices_of(hint)
            default = fld.default
            if meta.get("required"):
                kwargs["required"] = True
            if base is bool:
                if default is True:
                    if "/" not in long:  # a flag may name its own off switch
                        long = f"{long}/--no-{long[2:]}"
                    kwargs["default"] = True
                else:
                    kwargs["is_flag"] = True
            elif choices is not None:
                kwargs["type"] = click.Choice(choices)
            elif get_origin(base) is tuple:
                kwargs["multiple"] = True
            elif base is int:  # bounded: --workers 2**64 was an OverflowError deep inside
                kwargs["type"] = click.IntRange(min=meta.get("min"), max=meta.get("max", MAX_INT))
            elif base is float:
                kwargs["type"] = base
            if base is not bool and default is not MISSING and default not in (None, ()):
                kwargs["default"] = default
            f = click.option(long, fld.name, **kwargs)(f)
        return f

    return decorate
