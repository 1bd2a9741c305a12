"""The search space: per layer, a ladder of settings from float to most compressed.

A layer is one weight (and the nodes that read it). A configuration gives each layer a
rung on its ladder; ``to_options`` turns it into the CompressOptions that ``compress``
and recipes understand, so every trial is replayable.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from onnxcomp.graph.weights import find_weights
from onnxcomp.io import model_io
from onnxcomp.options import LayerOptions, Precision, Quantize
from onnxcomp.passes.prepare import prepare_pass
from onnxcomp.pipeline.compress import CompressOptions

# The size ladder: k-means codebooks, packed (pack.py), then pruning under the codebook
# (pruned codes pack sparse). Ordered by bits a weight costs in the file, roughly.
CODEBOOK_LADDER = ((8, 0.0), (6, 0.0), (5, 0.0), (4, 0.0), (3, 0.0), (3, 0.5), (2, 0.5), (2, 0.75))


@dataclass(frozen=True)
class Setting:
    precision: Precision
    sparsity: float = 0.0
    bits: int = 0  # > 0: a codebook of 2**bits values
    channels: float = 0.0  # > 0: this fraction of the layer's output channels removed

    @property
    def label(self) -> str:
        s = f"codebook {self.bits}-bit" if self.bits else f"{self.precision}"
        s += f"+{self.sparsity:.0%} sparse" if self.sparsity else ""
        return s + (f"+{self.channels:.0%} channels removed" if self.channels else "")


# Latency rungs past full int8: output channels removed (with least-squares repair), only
# for layers whose channels can be removed safely (methods/channels/groups.py).
CHANNEL_RATIOS = (0.25, 0.5)


@dataclass
class TunableLayer:
    name: str
    op_types: list[str]
    params: int


@dataclass
class Space:
    layers: list[TunableLayer]
    ladder: list[Setting]
    base: CompressOptions = field(default_factory=CompressOptions)
    # A layer's highest rung when below the ladder's top (channel rungs of a layer whose
    # channels cannot be removed would only repeat its int8 rung).
    limit: dict[str, int] = field(default_factory=dict)

    def top(self, name: str) -> int:
        return self.limit.get(name, len(self.ladder) - 1)

    def clamp(self, config: dict[str, int]) -> dict[str, int]:
        return {k: min(v, self.top(k)) for k, v in config.items()}

    def to_options(self, config: dict[str, int]) -> CompressOptions:
        settings = {layer.name: self.ladder[config.get(layer.name, 0)] for layer in self.layers}
        precisions = {s.precision for s in settings.values()}
        codebook = any(s.bits for s in settings.values())
        quantize: Quantize | None = next(
            (p for p in ("int8", "int4", "weights") if p in precisions), None
        )
        quantize = "codebook" if codebook else quantize
        layers = {}
        for name, s in sorted(settings.items()):
            if quantize is None and not s.sparsity:
                continue
            layers[name] = LayerOptions(
                prune_sparsity=s.sparsity or None,
                precision=s.precision,
                bits=s.bits or None,
                prune_channels=s.channels or None,
            )
        recover = self.base.recover
        if recover == "sparsegpt" and not any(s.sparsity for s in settings.values()):
            recover = None
        if recover == "gptq" and quantize is None:
            recover = None
        if recover == "distill":  # not per trial: a finalist that misses (auto/distill_rung.py)
            recover = None
        opts = CompressOptions(
            quantize=quantize,
            bits=8 if codebook else CompressOptions.bits,  # vectors: 8-bit codebooks
            pack=codebook,
            recover=recover,
            # Codebooks fit on the weights alone unless --recover gptq asks for the data-
            # aware fit (GPTQ codes), which costs minutes a trial on a transformer.
            calib=self.base.calib if quantize == "int8" or recover else None,
            calib_method=self.base.calib_method,
            percentile=self.base.percentile,
            activation_type=self.base.activation_type,
            weight_range=self.base.weight_range,
            progress=False,
            measure=False,  # auto measures what it needs itself; trials stay reproducible
            # the task the budget is judged on: compress's guards judge on it, and the
            # recipe records it
            task=self.base.task,
            task_arg=tuple(self.base.task_arg),
            metric_fn=self.base.metric_fn,
        )
        opts.layers = layers
        return opts


def build_space(model_path: str, *, objective: str, has_calib: bool) -> Space:
    """Layers from the model's weights; the ladder depends on what can pay off."""
    model: ir.Model = model_io.load(model_path)
    prepare_pass()(model)
    layers = [TunableLayer(w.name, w.op_types, int(w.array.size)) for w in find_weights(model)]
    ladder = [Setting("float")]
    if objective == "latency":
        # Unstructured zeros do not speed up dense kernels; int8 weights alone run at float
        # speed. int4 MatMul/Gemm blocks (MatMulNBits) read half the bytes of int8 with float
        # activations: a rung below full int8 for layers whose activations int8 hurts.
        if has_calib:
            blocks = any(op in ("MatMul", "Gemm") for la in layers for op in la.op_types)
            ladder += [Setting("int4")] if blocks else []
            ladder += [Setting("int8")]
            prunable = channel_layers(model)
            if prunable:
                ladder += [Setting("int8", channels=r) for r in CHANNEL_RATIOS]
                top = len(ladder) - 1 - len(CHANNEL_RATIOS)
                limit = {la.name: top for la in layers if la.name not in prunable}
                return Space(layers, ladder, limit=limit)
    else:
        # Activation quantization saves no bytes; it would only spend the budget.
        ladder += [Setting("weights", s, b) for b, s in CODEBOOK_LADDER]
    return Space(layers, ladder)


def channel_layers(model: ir.Model) -> set[str]:
    """Weights whose output channels structured pruning can remove (a group not blocked)."""
    from onnxcomp.methods.channels.groups import find_groups
    from onnxcomp.passes.shape_inference import InferShapesPass

    InferShapesPass()(model)
    names = set()
    for group in find_groups(model):
        if group.blocked:
            continue
        for node in group.producers:
            weight = node.inputs[1] if len(node.inputs) > 1 else None
            if weight is not None and weight.name:
                names.add(weight.name)
    return names


def deflate_size(path: str | Path) -> int:
    """Bytes after zlib deflate: what a model costs in an app bundle or a download."""
    comp = zlib.compressobj(6)
    total = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            total += len(comp.compress(chunk))
    return total + len(comp.flush())
