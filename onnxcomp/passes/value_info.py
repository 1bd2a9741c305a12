"""Write back only the tensor shapes the input carried.

Shape inference (int8 placement, constant folding) annotates every intermediate tensor,
and onnx_ir writes each annotation as a ``value_info`` entry: on the PaddleOCR direction
classifier that was 13% of the int8 file. onnxruntime infers them again at load, so what
the exporter did not write, we do not write either; an initializer's tensor already
says its type and dims, so it never gets an entry.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx_ir as ir


def _intermediates(model: ir.Model) -> Iterator[ir.Value]:
    for graph in (model.graph, *model.graph.subgraphs()):
        boundary = {*graph.inputs, *graph.outputs, *graph.initializers.values()}
        for node in graph:
            for value in node.outputs:
                if value not in boundary:
                    yield value


def _initializers(model: ir.Model) -> Iterator[ir.Value]:
    """Initializers that are not graph inputs: their tensor carries type and dims."""
    for graph in (model.graph, *model.graph.subgraphs()):
        inputs = set(graph.inputs)
        for value in graph.initializers.values():
            if value not in inputs and value.const_value is not None:
                yield value


# What onnxscript's constant folding notes on each tensor it made (the Constants it was
# folded from): it is ours, not the exporter's, and any note makes onnx_ir write an entry.
OUR_NOTES = "pkg.onnxscript.optimizer."


def _drop_our_notes(value: ir.Value) -> bool:
    keys = [k for k in value.metadata_props if k.startswith(OUR_NOTES)]
    for key in keys:
        del value.metadata_props[key]
    return bool(keys)


def _annotated(value: ir.Value) -> bool:
    return value.type is not None or value.shape is not None


class RecordValueInfoPass(ir.passes.InPlacePass):
    """Remember which intermediate tensors the input annotated (run first)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.names = {v.name for v in _intermediates(model) if v.name and _annotated(v)}
        return ir.passes.PassResult(model, modified=False)


class DropInferredValueInfoPass(ir.passes.InPlacePass):
    """Forget the type and shape of every other intermediate tensor (run last)."""

    def __init__(self, record: RecordValueInfoPass) -> None:
        super().__init__()
        self.record = record

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        dropped = 0
        for value in [*_intermediates(model), *_initializers(model)]:
            dropped += _drop_our_notes(value)
            if value.metadata_props or value.doc_string:
                continue  # written as value_info anyway, which then needs its type
            if _annotated(value) and (
                value.is_initializer() or value.name not in self.record.names
            ):
                value.type, value.shape = None, None
                dropped += 1
        return ir.passes.PassResult(model, modified=dropped > 0)
