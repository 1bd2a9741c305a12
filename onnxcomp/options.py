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


# -- compress ---------------------------------------------------------------------------


def validate_confidence(confidence: float | None) -> None:
    if confidence is not None and not (
        isinstance(confidence, (int, float))
        and not isinstance(confidence, bool)
        and 0.0 < confidence < 1.0
    ):
        raise OnnxcompError(f"--confidence must be in (0, 1), got {confidence}")


@dataclass
class LayerOptions:
    """What one layer gets; None: the global setting. See layers.py for the matching."""

    prune_sparsity: float | None = None
    precision: Precision | None = None
    prune_channels: float | None = None  # fraction of this layer's output channels removed
    bits: int | None = None  # --quantize codebook: this layer's codebook has 2**bits values

    def validate(self, name: str, global_quantize: str | None) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise OnnxcompError(f"layer '{name}': precision must be one of {', '.join(PRECISIONS)}")
        sparsity = self.prune_sparsity
        if sparsity is not None and (
            isinstance(sparsity, bool)
            or not isinstance(sparsity, (int, float))
            or not 0 <= sparsity < 1
        ):
            raise OnnxcompError(f"layer '{name}': prune sparsity must be in [0, 1)")
        if self.prune_channels is not None and not 0 <= self.prune_channels < 1:
            raise OnnxcompError(f"layer '{name}': prune_channels must be in [0, 1)")
        bits = self.bits
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int)):
            raise OnnxcompError(f"layer '{name}': bits must be an integer in 2..8")
        if bits is not None and not 2 <= bits <= 8:
            raise OnnxcompError(f"layer '{name}': bits must be in 2..8, got {bits}")
        if bits is not None and global_quantize != "codebook":
            raise OnnxcompError(f"layer '{name}' sets bits: set quantize = \"codebook\"")
        if self.precision == "int4" and global_quantize not in ("int4", "int8"):
            raise OnnxcompError(
                f"layer '{name}' asks for int4 weights: set quantize = \"int4\" "
                '(or "int8" with calib, to mix int4 and int8 layers)'
            )
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


def recover_methods(spec: str | None) -> tuple[str, ...]:
    """``--recover``'s methods in the order they run: "gptq,distill" -> (gptq, distill)."""
    if not spec:
        return ()
    return tuple(part.strip() for part in str(spec).split(","))


def check_chain(spec: Any) -> tuple[str, ...]:
    """``--recover``'s methods, refused unless one method or a closed-form repair then a
    trained rung (which starts from the repaired values: the other order would repair
    the trained ones, two of a kind would redo one's work)."""
    methods = recover_methods(spec) if isinstance(spec, str) else ()
    if not methods or any(m not in RECOVER_METHODS for m in methods):
        raise OnnxcompError(
            f"--recover must be one of {', '.join(RECOVER_METHODS)}, or a closed-form repair "
            f"then a trained one (gptq,distill), got {spec!r}"
        )
    if len(methods) == 1:
        return methods
    first, *rest = methods
    if len(rest) > 1:
        raise OnnxcompError(
            f"--recover {spec}: at most two methods, a closed-form repair then blockwise or distill"
        )
    second = rest[0]
    if first in TRAINED and second in TRAINED:
        raise OnnxcompError(f"--recover {spec}: one trained method at a time")
    if first in CLOSED_FORM and second in CLOSED_FORM:
        raise OnnxcompError(
            f"--recover {spec}: one closed-form repair at a time (then blockwise or distill)"
        )
    if first in TRAINED:
        raise OnnxcompError(
            f"--recover {spec}: the closed-form repair comes first ({second},{first}): "
            "training starts from its values"
        )
    return methods


@dataclass(kw_only=True)
class TaskOptions:
    """How outputs are judged: a task metric, the user's own, or (neither) the worst
    output component. check's gate, auto's budget and compress's guards all use it."""

    task: Task | None = option(
        help="What the outputs mean, so fidelity is judged on the task: classify, detect, "
        "segment, sequence (ctc), embed, threshold, regress. Default: detected where the "
        "outputs are unambiguous (a YOLO-style head: detect; class scores: classify), "
        "else the worst output component."
    )
    task_arg: tuple[str, ...] = option(
        (),
        "KEY=VALUE setting of the task metric (repeatable): output, score (0.25), iou "
        "(NMS, 0.45), match_iou (0.5), format (auto|yolov8|yolov5|boxes-scores|nms), "
        "max_det, threshold (0.5), blank (0), k (5), time_major.",
        metavar="KEY=VALUE",
    )
    # A "module:function" (or "file.py:function") spec, or (from Python) the callable.
    metric_fn: Any = option(
        help="Your own metric: FUNCTION(original_outputs, compressed_outputs, labels) -> "
        "one score per sample, higher is better.",
        metavar="MODULE:FUNCTION",
    )

    def task_settings(self) -> Any:
        from onnxcomp.metrics.task import TaskSettings

        return TaskSettings.parse(tuple(self.task_arg or ()))

    def validate_task(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise OnnxcompError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task is not None and self.metric_fn is not None:
            raise OnnxcompError("give --task or --metric-fn, not both")
        if self.metric_fn is not None and not (
            callable(self.metric_fn) or isinstance(self.metric_fn, str)
        ):
            raise OnnxcompError("--metric-fn takes MODULE:FUNCTION or a callable")
        self.task_settings()


@dataclass(kw_only=True)
class CompressOptions(TaskOptions):
    prune_threshold: float | None = option(
        help="Zero every weight element with |w| <= EPS.", metavar="EPS"
    )
    prune_sparsity: float | None = option(
        help="Zero the smallest S fraction (0 <= S < 1) of each weight tensor.", metavar="S"
    )
    global_prune: bool = option(
        False, "Rank all weights together for --prune-sparsity.", flag="--global"
    )
    prune_channels: float | None = option(
        help="Remove this fraction (0 <= R < 1) of the output channels of every layer whose "
        "channels can be removed safely (needs --calib: importance and least-squares repair).",
        metavar="R",
    )
    quantize: Quantize | None = option(
        help="weights: int8 weights, float activations; int8: weights and activations; "
        "codebook: k-means shared weights (a download/disk-size mode, fp32 speed); "
        "int4: 4-bit MatMul/Gemm weight blocks (MatMulNBits), other weights int8."
    )
    bits: int = option(
        4,
        "--quantize codebook: 2**N shared values per weight tensor (2..8).",
        metavar="N",
        show_default=True,
    )
    pack: bool = option(
        False,
        "Store codebook codes below 8 bits a code, or sparse (pruned int8 weights too); "
        "decoded by onnxruntime at load.",
    )
    target_size: float | None = option(
        help="--quantize codebook --pack: fit the file within R x the input's bytes (e.g. "
        "0.125): the tensors whose drop costs the task least (on --calib) take fewer bits.",
        metavar="R",
    )
    block_size: int = option(
        32,
        "--quantize int4: rows of a weight sharing one scale (16, 32, 64, 128 or 256).",
        metavar="B",
        show_default=True,
    )
    symmetric: bool = option(
        True,
        "--quantize int4: signed codes, no zero point; or unsigned codes with a zero point "
        "per block.",
        flag="--symmetric/--asymmetric",
        show_default=True,
    )
    awq: bool = option(
        True,
        "--quantize int4 with --calib: activation-aware scales per input channel (searched "
        "on the calibration data, kept where they lower the output error).",
        flag="--awq/--no-awq",
        show_default=True,
    )
    smoothquant: bool = option(
        True,
        "--quantize int8: migrate activation outliers into the MatMul/Gemm weights "
        "(SmoothQuant; strength searched per activation, kept only where it lowers the "
        "simulated int8 output error on the calibration data by 10%).",
        flag="--smoothquant/--no-smoothquant",
        show_default=True,
    )
    per_tensor: bool = option(False, "One scale per weight tensor, not per channel.")
    exclude: tuple[str, ...] = option(
        (), "Keep this node, weight or op type in float (repeatable).", metavar="NAME_OR_OPTYPE"
    )
    # A path, or (from Python) any iterable of feeds / CalibrationDataReader; see data.py.
    calib: Any = option(
        help="Calibration data for --quantize int8, int4 or codebook and --recover.",
        metavar="DATA",
    )
    calib_method: CalibMethod = option(
        "minmax", "How activation ranges are chosen.", show_default=True
    )
    percentile: float = option(
        99.99, "Percentile kept by --calib-method percentile.", show_default=True
    )
    activation_type: ActivationType = option(
        "auto", "Integer type of quantized activations.", show_default=True
    )
    weight_range: WeightRange = option(
        "auto",
        "int8: codes of the weights int8 kernels read. full: [-127, 127]; reduced: [-63, 63], "
        "which onnxruntime's uint8 x int8 kernels on x86 CPUs without VNNI cannot overflow; "
        "auto: reduced when this machine's kernels saturate (probed in onnxruntime).",
        show_default=True,
    )
    # Calibration progress bar on stderr (when it is a TTY).
    progress: bool = option(True, cli=False, recipe=False)
    # True/False from Python mean cached/off.
    measure: MeasureMode | bool = option(
        "cached",
        "int8: time the result against float (this thread's CPU time, so load does not "
        "sway it) and keep float the op families that do not pay. cached: reuse this "
        "machine's stored decision for the same model and data; fresh: measure again; "
        "off: never (bit-for-bit reproducible anywhere).",
        show_default=True,
    )
    no_measure: bool = option(False, "Same as --measure off.", recipe=False)
    # The families the measure step chose (CompressResult.activations["families"]): a
    # recipe pins them, so a replay builds the same graph without timing anything.
    int8_families: tuple[str, ...] | None = option(
        None, "int8: use exactly these op families (a measured decision, replayed; "
        "repeatable; none: all float).",
        metavar="FAMILY",
    )  # fmt: skip

    @property
    def recover_methods(self) -> tuple[str, ...]:
        """The --recover methods in the order they run (empty: none)."""
        return recover_methods(self.recover)

    @property
    def repair(self) -> str | None:
        """The closed-form repair of --recover (bias, gptq, sparsegpt), if any."""
        return next((m for m in self.recover_methods if m in CLOSED_FORM), None)

    @property
    def trained(self) -> str | None:
        """The trained rung of --recover (blockwise, distill), if any."""
        return next((m for m in self.recover_methods if m in TRAINED), None)

    @property
    def measure_mode(self) -> str:
        if self.no_measure or self.measure is False:
            return "off"
        return "cached" if self.measure is True else str(self.measure)

    # One method, or a closed-form repair then a trained one ("gptq,distill"): the
    # string is what the command line and recipes carry, ``recover_methods`` its parts.
    recover: str | None = option(
        help="Teacher-guided repair from --calib data: bias correction, GPTQ weight "
        "reconstruction, SparseGPT pruning, blockwise (AdaRound per layer against the "
        "original's layer outputs) or distill (the compressed model trained against the "
        "original); blockwise and distill need pip install 'onnxcomp[distill]'. A "
        "closed-form repair then a trained one (e.g. gptq,distill): training starts from "
        "the repaired values and is kept only where it beats them.",
        metavar="bias|gptq|sparsegpt|blockwise|distill[,...]",
    )
    distill_steps: int = option(
        200, "--recover distill: optimizer steps (minibatches of 32); blockwise: steps per "
        "block.", metavar="N",
        show_default=True, min=1,
    )  # fmt: skip
    lr: float = option(
        1e-3, "--recover distill: Adam's learning rate (scales: a tenth of it, relative); "
        "blockwise: for float values and codebooks.",
        show_default=True,
    )  # fmt: skip
    seed: int = option(
        0, "--recover distill: seed of the held-back split, the batches and torch.",
        show_default=True, min=0,
    )  # fmt: skip
    distill_loss: tuple[str, ...] = option(
        (), "--recover distill: the loss of one output, instead of the one its task gives "
        "(repeatable).", metavar="OUTPUT=kl|mse|cosine",
    )  # fmt: skip
    distill_hint: tuple[str, ...] = option(
        (), "--recover distill: also match this intermediate tensor (a name in both the "
        "original and the compressed graph; normalized MSE; repeatable).", metavar="NAME",
    )  # fmt: skip
    time_limit: float | None = option(
        help="--recover distill: stop training after S seconds and keep the best values "
        "so far (said in the output; the result then depends on the machine's speed).",
        metavar="S", recipe=False,
    )  # fmt: skip
    distill_progress: bool = option(
        False, "--recover distill: a progress line on stderr even when it is not a terminal.",
        flag="--progress", recipe=False,
    )  # fmt: skip
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
        self.validate_task()
        if self.measure not in (True, False, "cached", "fresh", "off"):
            raise OnnxcompError(f"--measure must be cached, fresh or off, got {self.measure!r}")
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
        if self.channel_pruning and self.calib is None:
            raise OnnxcompError("--prune-channels needs calibration data: give --calib DATA")
        if self.prune_channels is not None and not 0 <= self.prune_channels < 1:
            raise OnnxcompError(f"--prune-channels must be in [0, 1), got {self.prune_channels}")
        if (
            self.calib is not None
            and self.quantize not in ("int8", "int4", "codebook")
            and self.recover is None
            and not self.channel_pruning
        ):
            raise OnnxcompError("--calib is only used with --quantize int8, int4 or codebook")
        if self.block_size not in BLOCK_SIZES:
            sizes = ", ".join(map(str, BLOCK_SIZES))
            raise OnnxcompError(f"--block-size must be one of {sizes}, got {self.block_size}")
        if not 2 <= self.bits <= 8:
            raise OnnxcompError(f"--bits must be in 2..8, got {self.bits}")
        if self.target_size is not None:
            if not 0 < self.target_size < 1:
                raise OnnxcompError(f"--target-size must be in (0, 1), got {self.target_size}")
            if self.quantize != "codebook" or not self.pack:
                raise OnnxcompError(
                    "--target-size fits packed codebook codes: add --quantize codebook --pack"
                )
        if self.pack and self.quantize not in ("codebook", "weights", "int8"):
            raise OnnxcompError(
                "--pack stores codebook codes or int8 weights: add --quantize codebook, "
                "weights or int8"
            )
        if self.per_tensor and self.quantize is None:
            raise OnnxcompError("--per-tensor needs --quantize")
        if self.activation_type not in ACTIVATION_TYPES:
            raise OnnxcompError(
                f"--activation-type must be auto, uint8 or int8, got {self.activation_type!r}"
            )
        if self.weight_range not in get_args(WeightRange):
            raise OnnxcompError(
                f"--weight-range must be auto, full or reduced, got {self.weight_range!r}"
            )
        if not 0 < self.percentile <= 100:
            raise OnnxcompError(f"--percentile must be in (0, 100], got {self.percentile}")
        for name, layer in self.layers.items():
            layer.validate(name, self.quantize)
        nothing = self.prune_threshold is None and self.prune_sparsity is None
        nothing = nothing and self.prune_channels is None
        if nothing and self.quantize is None and not self.layers:
            raise OnnxcompError(
                "nothing to do: give --prune-threshold, --prune-sparsity, --prune-channels "
                "or --quantize"
            )
        if self.trained != "distill" and (self.distill_loss or self.distill_hint):
            raise OnnxcompError("--distill-loss and --distill-hint need --recover distill")
        if self.recover is not None:
            self._validate_recover()

    def _validate_recover(self) -> None:
        """The --recover rules, checked before any work."""
        methods = check_chain(self.recover)
        if self.calib is None:
            raise OnnxcompError(
                f"--recover {self.recover} needs calibration data: give --calib DATA"
            )
        pruning = self.prune_threshold is not None or self.prune_sparsity is not None
        pruning = pruning or any(la.prune_sparsity for la in self.layers.values())
        for method in methods:
            if method == "gptq" and self.quantize is None:
                raise OnnxcompError("--recover gptq rebuilds quantized weights: add --quantize")
            if method == "sparsegpt" and not pruning:
                raise OnnxcompError(
                    "--recover sparsegpt rebuilds pruned weights: add --prune-sparsity or "
                    "--prune-threshold"
                )
            if method == "sparsegpt" and self.global_prune:
                raise OnnxcompError("--recover sparsegpt works per tensor; drop --global")
            if method in TRAINED:
                import importlib.util

                if importlib.util.find_spec("torch") is None:
                    raise OnnxcompError(
                        f"--recover {method} needs PyTorch: pip install 'onnxcomp[distill]'"
                    )
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise OnnxcompError(f"--lr must be > 0, got {self.lr}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise OnnxcompError(f"--seed must be an integer >= 0, got {self.seed!r}")
        limit = self.time_limit
        if limit is not None and not (
            isinstance(limit, (int, float)) and math.isfinite(limit) and limit > 0
        ):
            raise OnnxcompError(f"--time-limit must be a number of seconds > 0, got {limit}")
        if self.trained == "distill":
            for spec in self.distill_loss or ():
                name, sep, kind = str(spec).rpartition("=")
                if not sep or not name or kind not in DISTILL_LOSSES:
                    raise OnnxcompError(f"--distill-loss takes OUTPUT=kl|mse|cosine, got {spec!r}")
        if isinstance(self.distill_steps, bool) or not (
            isinstance(self.distill_steps, int) and self.distill_steps >= 1
        ):
            raise OnnxcompError(
                f"--distill-steps must be an integer >= 1, got {self.distill_steps}"
            )

    @property
    def prunes(self) -> bool:
        return self.prune_threshold is not None or self.prune_sparsity is not None

    @property
    def channel_pruning(self) -> bool:
        """Channels are removed: globally, or a layer asks for it."""
        return self.prune_channels is not None or any(
            layer.prune_channels for layer in self.layers.values()
        )

    @property
    def quantizes(self) -> bool:
        """Some weights get int8: globally, or a layer asks for it."""
        return self.quantize is not None or any(
            layer.precision in ("weights", "int8", "int4") for layer in self.layers.values()
        )

    @property
    def int4(self) -> bool:
        """Some MatMul/Gemm weights get int4 blocks: globally, or a layer asks for it."""
        return self.quantize == "int4" or any(
            layer.precision == "int4" for layer in self.layers.values()
        )


# -- check ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class CheckOptions(TaskOptions):
    data: Any = option(help=".npz, folder of .npz, or ONNX test-data folder.", metavar="DATA")
    labels: str | None = option(help="Array in DATA holding the true labels.", metavar="NAME")
    runs: int = option(50, "Timed runs per model.", show_default=True, min=0)
    threads: int = option(1, "onnxruntime intra-op threads.", show_default=True, min=1)
    warmup: int = option(5, cli=False)
    max_drop: float | None = option(
        help="Exit 1 when the accuracy drop (or 1 - top-1 agreement) exceeds X.", metavar="X"
    )
    confidence: float | None = option(
        help="With --max-drop: pass only when the one-sided upper bound of the drop at this "
        "confidence (e.g. 0.95) is within X, so noise on a small set cannot pass a model. "
        "Exact binomial for accuracy/agreement, bootstrap for cosine. Default: off (the "
        "measured drop is compared).",
        metavar="C",
    )

    def validate(self) -> None:
        self.validate_task()
        if self.runs < 0:
            raise OnnxcompError(f"--runs must be >= 0, got {self.runs}")
        if self.threads < 1:
            raise OnnxcompError(f"--threads must be >= 1, got {self.threads}")
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 1.0:
            raise OnnxcompError(f"--max-drop must be in [0, 1], got {self.max_drop}")
        validate_confidence(self.confidence)
        if self.labels is not None and self.data is None:
            raise OnnxcompError("--labels needs --data")


# -- auto -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class AutoOptions(TaskOptions):
    calib: Any = option(help="Calibration data (needed for int8).", metavar="DATA")
    data: Any = option(help="Evaluation data (default: the calibration data).", metavar="DATA")
    labels: str | None = option(help="Array in DATA with the true labels.", metavar="NAME")
    max_drop: float = required(
        "Largest metric drop allowed (accuracy, or 1 - agreement/cosine).", metavar="X"
    )
    objective: Objective = option(
        "size",
        "size: smallest file (codebook codes packed); latency: fastest in onnxruntime.",
        show_default=True,
    )
    # A name, or (from Python) a callable(session, data) -> float, higher is better.
    metric: Metric | Callable[..., float] | None = option(
        help="Default: accuracy with --labels, else agreement, else cosine."
    )
    max_trials: int = option(60, show_default=True, min=1)
    time_limit: float | None = option(help="Stop searching after S seconds.", metavar="S")
    workers: int = option(
        2, "Trials run in parallel in this many processes.", show_default=True, min=1
    )
    recover: RecoverMethod | None = option(
        help="Repair every trial from --calib data (sparsegpt for pruned layers, gptq for "
        "quantized weights, bias for both); distill: trials stay plain, and a finalist "
        "that misses the budget on the held-back data is distilled and judged again."
    )
    engine: Engine = option(
        "local", "Where trials run: local processes, or Ray tasks (needs onnxcomp[ray]).",
        flag="--executor", recipe=False, show_default=True,
    )  # fmt: skip
    address: str | None = option(
        help="Ray cluster to join (default: start a local Ray).", metavar="ADDR", recipe=False
    )
    # A path, or (from Python) any source data.py reads; None: held back from the data.
    verify: Any = option(
        help="Held-back data the finalists are judged on (default: --verify-fraction of the "
        "search data, which the search then never sees).",
        metavar="DATA",
    )
    verify_fraction: float | None = option(
        help="Share of the data held back for verification (default: 1/3, raised up to "
        "5/6 when that is what lets the held-back part resolve the budget).",
        metavar="F",
    )
    confidence: float = option(
        0.95,
        "A finalist is accepted when the upper bound of its held-back drop at this "
        "confidence is within --max-drop.",
        show_default=True,
        metavar="C",
    )
    allow_small_data: bool = option(
        False,
        "When the held-back data is too small to resolve the budget, proceed with a "
        "widened margin instead of refusing (exit 2).",
    )
    seed: int = option(0, "Seed of the split.", show_default=True, min=0)
    executor: Any = option(cli=False)  # an executor.TrialExecutor; None: a local pool
    log: Callable[[str], None] | None = option(cli=False)
    # The HTML report, published with OUT and its side files or not at all.
    html: str | None = option(cli=False)
    html_page: Callable[..., Any] | None = option(cli=False)  # writes it: (result, path)

    def validate(self) -> None:
        self.validate_task()
        if self.objective not in OBJECTIVES:
            raise OnnxcompError(f"--objective must be size or latency, got {self.objective!r}")
        if not 0 <= self.max_drop <= 1:
            raise OnnxcompError(f"--max-drop must be in [0, 1], got {self.max_drop}")
        if self.max_trials < 1:
            raise OnnxcompError(f"--max-trials must be >= 1, got {self.max_trials}")
        if self.address is not None and self.engine != "ray":
            raise OnnxcompError("--address needs --executor ray")
        limit = self.time_limit
        if limit is not None and not (math.isfinite(limit) and limit > 0):
            raise OnnxcompError(f"--time-limit must be a number of seconds > 0, got {limit}")
        workers = self.workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise OnnxcompError(f"--workers must be an integer >= 1, got {workers!r}")
        if self.objective == "latency" and self.calib is None:
            raise OnnxcompError("--objective latency needs --calib: only full int8 runs faster")
        if self.recover == "blockwise":
            raise OnnxcompError(
                "auto --recover blockwise is not available yet: repair the chosen recipe with "
                "compress --recover blockwise"
            )
        if self.recover == "distill":
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                raise OnnxcompError(
                    "--recover distill needs PyTorch: pip install 'onnxcomp[distill]'"
                )
        if self.recover is not None and self.calib is None:
            raise OnnxcompError(
                f"--recover {self.recover} needs calibration data: give --calib DATA"
            )
        if self.calib is None and self.data is None:
            raise OnnxcompError("auto needs data to measure on: give --calib or --data")
        fraction = self.verify_fraction
        if fraction is not None and (
            isinstance(fraction, bool)
            or not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0)
        ):
            raise OnnxcompError(f"--verify-fraction must be in (0, 1), got {fraction}")
        if self.confidence is None:
            raise OnnxcompError("--confidence must be in (0, 1), got None")
        validate_confidence(self.confidence)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise OnnxcompError(f"--seed must be an integer >= 0, got {self.seed!r}")
