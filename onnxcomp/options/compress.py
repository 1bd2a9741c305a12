"""``onnxcomp compress``'s options."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, get_args

from onnxcomp.errors import OnnxcompError
from onnxcomp.options.common import (
    LayerOptions,
    TaskOptions,
    check_chain,
    recover_methods,
    validate_prune,
)
from onnxcomp.options.fields import (
    ACTIVATION_TYPES,
    BLOCK_SIZES,
    CALIB_METHODS,
    CLOSED_FORM,
    DISTILL_LOSSES,
    QUANTIZE_MODES,
    TRAINED,
    ActivationType,
    CalibMethod,
    MeasureMode,
    Quantize,
    WeightRange,
    option,
)


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
    distill_mix: bool = option(
        True, "--recover distill: each step trains on new inputs, two samples blended and "
        "labelled by the original on the fly (models whose inputs are all float; the "
        "held-back samples stay real).",
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
