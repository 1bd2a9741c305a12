"""Every option of onnxcomp, typed once and validated once.

The dataclasses below are the single source: the API takes them (or their fields as
keywords), the command line builds its options from their fields (``cli/_options.py``:
choices from the ``Literal`` types, defaults, help and metavar from ``field`` metadata),
and recipes take their keys and value types from them (``recipe.py``). Adding an option
is adding one field here (and using it where it acts).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any, Literal, Union, get_args, get_origin

from onnxcomp.errors import OnnxcompError

Quantize = Literal["weights", "int8"]
CalibMethod = Literal["minmax", "percentile", "entropy", "mse"]
ActivationType = Literal["auto", "uint8", "int8"]
RecoverMethod = Literal["bias", "gptq", "sparsegpt"]
Precision = Literal["float", "weights", "int8"]  # per layer: float, int8 weights, full int8
Objective = Literal["size", "latency"]
Engine = Literal["local", "ray"]
Metric = Literal["accuracy", "agreement", "cosine"]

QUANTIZE_MODES: tuple[str, ...] = get_args(Quantize)
CALIB_METHODS: tuple[str, ...] = get_args(CalibMethod)
ACTIVATION_TYPES: tuple[str, ...] = get_args(ActivationType)
RECOVER_METHODS: tuple[str, ...] = get_args(RecoverMethod)
PRECISIONS: tuple[str, ...] = get_args(Precision)
OBJECTIVES: tuple[str, ...] = get_args(Objective)
METRICS: tuple[str, ...] = get_args(Metric)


def option(
    default: Any = None,
    help: str = "",
    *,
    flag: str | None = None,
    metavar: str | None = None,
    cli: bool = True,
    recipe: bool = True,
    show_default: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with what the command line and recipes need to know about it.

    ``flag``: the command-line spelling when it is not ``--field-name``; ``cli=False``: API
    only; ``recipe=False``: describes a run, not a compression, so no recipe carries it.
    """
    meta = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "cli": cli,
        "recipe": recipe,
        "show_default": show_default,
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


# -- compress ---------------------------------------------------------------------------


@dataclass
class LayerOptions:
    """What one layer gets; None: the global setting. See layers.py for the matching."""

    prune_sparsity: float | None = None
    precision: Precision | None = None

    def validate(self, name: str, global_quantize: str | None) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise OnnxcompError(f"layer '{name}': precision must be one of {', '.join(PRECISIONS)}")
        if self.prune_sparsity is not None and not 0 <= self.prune_sparsity < 1:
            raise OnnxcompError(f"layer '{name}': prune sparsity must be in [0, 1)")
        if self.precision == "int8" and global_quantize != "int8":
            raise OnnxcompError(
                f"layer '{name}' asks for int8 activations: set quantize = \"int8\" and calib"
            )


def validate_prune(threshold: float | None, sparsity: float | None) -> None:
    if threshold is not None and sparsity is not None:
        raise OnnxcompError("give either a prune threshold or a prune sparsity, not both")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise OnnxcompError(f"prune threshold must be a finite number >= 0, got {threshold}")
    if sparsity is not None and not (0.0 <= sparsity < 1.0):
        raise OnnxcompError(f"prune sparsity must be in [0, 1), got {sparsity}")


@dataclass
class CompressOptions:
    prune_threshold: float | None = option(
        help="Zero every weight element with |w| <= EPS.", metavar="EPS"
    )
    prune_sparsity: float | None = option(
        help="Zero the smallest S fraction (0 <= S < 1) of each weight tensor.", metavar="S"
    )
    global_prune: bool = option(
        False, "Rank all weights together for --prune-sparsity.", flag="--global"
    )
    quantize: Quantize | None = option(
        help="weights: int8 weights, float activations; int8: weights and activations."
    )
    per_tensor: bool = option(False, "One scale per weight tensor, not per channel.")
    exclude: tuple[str, ...] = option(
        (), "Keep this node, weight or op type in float (repeatable).", metavar="NAME_OR_OPTYPE"
    )
    # A path, or (from Python) any iterable of feeds / CalibrationDataReader; see data.py.
    calib: Any = option(help="Calibration data for --quantize int8 and --recover.", metavar="DATA")
    calib_method: CalibMethod = option(
        "minmax", "How activation ranges are chosen.", show_default=True
    )
    percentile: float = option(
        99.99, "Percentile kept by --calib-method percentile.", show_default=True
    )
    activation_type: ActivationType = option(
        "auto", "Integer type of quantized activations.", show_default=True
    )
    # Calibration progress bar on stderr (when it is a TTY).
    progress: bool = option(True, cli=False, recipe=False)
    measure: bool = option(
        True,
        "int8: time the result against float in onnxruntime and keep float the op families "
        "that do not pay (decisions depend on timing; --no-measure is bit-for-bit reproducible).",
        show_default=True,
    )
    recover: RecoverMethod | None = option(
        help="Teacher-guided repair from --calib data: bias correction, GPTQ weight "
        "reconstruction, or SparseGPT pruning."
    )
    allow_larger: bool = option(
        False,
        "Write the output even when it is larger than the input (refused by default, exit 1).",
    )
    keep_debug_info: bool = option(
        False, "Keep exporters' per-node stack traces and doc strings (dropped by default)."
    )
    # Per layer (a weight name, a node name or an op type), see layers.py.
    layers: dict[str, LayerOptions] = option(factory=dict, cli=False, recipe=False)

    def validate(self) -> None:
        validate_prune(self.prune_threshold, self.prune_sparsity)
        if self.global_prune and self.prune_sparsity is None:
            raise OnnxcompError("--global ranks weights for --prune-sparsity; give a sparsity")
        if self.quantize is not None and self.quantize not in QUANTIZE_MODES:
            raise OnnxcompError(
                f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {self.quantize!r}"
            )
        if self.calib_method not in CALIB_METHODS:
            raise OnnxcompError(
                f"--calib-method must be one of {', '.join(CALIB_METHODS)}, "
                f"got {self.calib_method!r}"
            )
        if self.quantize == "int8" and self.calib is None:
            raise OnnxcompError("--quantize int8 needs calibration data: give --calib DATA")
        if self.calib is not None and self.quantize != "int8" and self.recover is None:
            raise OnnxcompError("--calib is only used with --quantize int8")
        if self.per_tensor and self.quantize is None:
            raise OnnxcompError("--per-tensor needs --quantize")
        if self.activation_type not in ACTIVATION_TYPES:
            raise OnnxcompError(
                f"--activation-type must be auto, uint8 or int8, got {self.activation_type!r}"
            )
        if not 0 < self.percentile <= 100:
            raise OnnxcompError(f"--percentile must be in (0, 100], got {self.percentile}")
        for name, layer in self.layers.items():
            layer.validate(name, self.quantize)
        nothing = self.prune_threshold is None and self.prune_sparsity is None
        if nothing and self.quantize is None and not self.layers:
            raise OnnxcompError(
                "nothing to do: give --prune-threshold, --prune-sparsity or --quantize"
            )
        if self.recover is not None:
            self._validate_recover()

    def _validate_recover(self) -> None:
        """The --recover rules, checked before any work."""
        method = self.recover
        if method not in RECOVER_METHODS:
            raise OnnxcompError(
                f"--recover must be one of {', '.join(RECOVER_METHODS)}, got {method!r}"
            )
        if self.calib is None:
            raise OnnxcompError(f"--recover {method} needs calibration data: give --calib DATA")
        pruning = self.prune_threshold is not None or self.prune_sparsity is not None
        pruning = pruning or any(la.prune_sparsity for la in self.layers.values())
        if method == "gptq" and self.quantize is None:
            raise OnnxcompError("--recover gptq rebuilds quantized weights: add --quantize")
        if method == "sparsegpt" and not pruning:
            raise OnnxcompError(
                "--recover sparsegpt rebuilds pruned weights: add --prune-sparsity or "
                "--prune-threshold"
            )
        if method == "sparsegpt" and self.global_prune:
            raise OnnxcompError("--recover sparsegpt works per tensor; drop --global")

    @property
    def prunes(self) -> bool:
        return self.prune_threshold is not None or self.prune_sparsity is not None

    @property
    def quantizes(self) -> bool:
        """Some weights get int8: globally, or a layer asks for it."""
        return self.quantize is not None or any(
            layer.precision in ("weights", "int8") for layer in self.layers.values()
        )


# -- check ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class CheckOptions:
    data: Any = option(help=".npz, folder of .npz, or ONNX test-data folder.", metavar="DATA")
    labels: str | None = option(help="Array in DATA holding the true labels.", metavar="NAME")
    runs: int = option(50, "Timed runs per model.", show_default=True)
    threads: int = option(1, "onnxruntime intra-op threads.", show_default=True)
    warmup: int = option(5, cli=False)
    max_drop: float | None = option(
        help="Exit 1 when the accuracy drop (or 1 - top-1 agreement) exceeds X.", metavar="X"
    )

    def validate(self) -> None:
        if self.threads < 1:
            raise OnnxcompError(f"--threads must be >= 1, got {self.threads}")
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 1.0:
            raise OnnxcompError(f"--max-drop must be in [0, 1], got {self.max_drop}")
        if self.labels is not None and self.data is None:
            raise OnnxcompError("--labels needs --data")


# -- auto -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class AutoOptions:
    calib: Any = option(help="Calibration data (needed for int8).", metavar="DATA")
    data: Any = option(help="Evaluation data (default: the calibration data).", metavar="DATA")
    labels: str | None = option(help="Array in DATA with the true labels.", metavar="NAME")
    max_drop: float = required(
        "Largest metric drop allowed (accuracy, or 1 - agreement/cosine).", metavar="X"
    )
    objective: Objective = option(
        "size", "size: smallest deflated file; latency: fastest in onnxruntime.", show_default=True
    )
    # A name, or (from Python) a callable(session, data) -> float, higher is better.
    metric: Metric | Callable[..., float] | None = option(
        help="Default: accuracy with --labels, else agreement, else cosine."
    )
    max_trials: int = option(60, show_default=True)
    time_limit: float | None = option(help="Stop searching after S seconds.", metavar="S")
    workers: int = option(2, "Trials run in parallel in this many processes.", show_default=True)
    recover: RecoverMethod | None = option(
        help="Repair every trial from --calib data (sparsegpt for pruned layers, gptq for "
        "quantized weights, bias for both)."
    )
    engine: Engine = option(
        "local", "Where trials run: local processes, or Ray tasks (needs onnxcomp[ray]).",
        flag="--executor", recipe=False, show_default=True,
    )  # fmt: skip
    address: str | None = option(
        help="Ray cluster to join (default: start a local Ray).", metavar="ADDR", recipe=False
    )
    executor: Any = option(cli=False)  # an executor.TrialExecutor; None: a local pool
    log: Callable[[str], None] | None = option(cli=False)

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise OnnxcompError(f"--objective must be size or latency, got {self.objective!r}")
        if not 0 <= self.max_drop <= 1:
            raise OnnxcompError(f"--max-drop must be in [0, 1], got {self.max_drop}")
        if self.max_trials < 1:
            raise OnnxcompError(f"--max-trials must be >= 1, got {self.max_trials}")
        if self.address is not None and self.engine != "ray":
            raise OnnxcompError("--address needs --executor ray")
        if self.objective == "latency" and self.calib is None:
            raise OnnxcompError("--objective latency needs --calib: only full int8 runs faster")
        if self.recover is not None and self.calib is None:
            raise OnnxcompError(
                f"--recover {self.recover} needs calibration data: give --calib DATA"
            )
        if self.calib is None and self.data is None:
            raise OnnxcompError("auto needs data to measure on: give --calib or --data")
