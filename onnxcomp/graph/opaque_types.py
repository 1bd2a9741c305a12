"""Graph values whose types onnx_ir cannot hold travel beside the model.

scikit-learn exports end in ZipMap, whose output is a sequence of maps; onnx_ir raises
on map types, so without this a default sklearn export could not even be loaded. The
types are cut from the protobuf before onnx_ir reads it, kept in ``model.meta``, and put
back whenever the model is serialized (to a file or for an onnxruntime session).
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

META_KEY = "onnxcomp.graph.opaque_types"


def _opaque(t: onnx.TypeProto) -> bool:
    kind = t.WhichOneof("value")
    if kind == "map_type":
        return True
    if kind == "sequence_type":
        return _opaque(t.sequence_type.elem_type)
    if kind == "optional_type":
        return _opaque(t.optional_type.elem_type)
    return False


def strip(proto: onnx.ModelProto) -> dict[str, bytes]:
    """Remove map-bearing types from the graph's inputs, outputs and value infos."""
    cut: dict[str, bytes] = {}
    g = proto.graph
    for info in [*g.input, *g.output, *g.value_info]:
        if info.HasField("type") and _opaque(info.type):
            cut[info.name] = info.type.SerializeToString()
            info.ClearField("type")
    return cut


def restore(proto: onnx.ModelProto, cut: dict[str, bytes]) -> onnx.ModelProto:
    g = proto.graph
    for info in [*g.input, *g.output]:
        if info.name in cut and not info.HasField("type"):
            info.type.ParseFromString(cut[info.name])
    return proto


def from_proto(proto: onnx.ModelProto) -> ir.Model:
    """``ir.from_proto`` that also accepts map-typed graph inputs and outputs."""
    cut = strip(proto)
    model = ir.from_proto(proto)
    if cut:
        model.meta[META_KEY] = cut
    return model


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """``ir.to_proto`` with the types ``from_proto`` set aside put back."""
    proto = ir.to_proto(model)
    cut = model.meta.get(META_KEY)
    return restore(proto, cut) if cut else proto


def has_opaque(model: ir.Model) -> bool:
    return bool(model.meta.get(META_KEY))


def carry(src: ir.Model, dst: ir.Model) -> None:
    """Keep the set-aside types on a model made from ``src`` (``clone`` drops ``meta``)."""
    if META_KEY in src.meta and META_KEY not in dst.meta:
        dst.meta[META_KEY] = src.meta[META_KEY]
