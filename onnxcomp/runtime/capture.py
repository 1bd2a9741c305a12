"""Intermediate tensors of a model, batch by batch, from onnxruntime.

Recovery and ``debug`` need values inside the graph (a layer's input, its output).
onnxruntime only returns graph outputs, so the wanted tensors become extra outputs of
a serialized copy; the in-memory model is never touched. Callers consume each batch's
arrays and drop them, so memory stays at one batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxcomp.errors import OnnxcompError, one_line
from onnxcomp.io.data import Batch, DataSource
from onnxcomp.runtime.session import make_session


def session(
    model: ir.Model | onnx.ModelProto, names: Iterable[str], threads: int = 1, only: bool = False
):
    """A CPU session over a copy of ``model`` that also returns the ``names`` tensors;
    ``only``: returns just those, and runs only the nodes they need (a layer early in
    the graph is captured without running the rest)."""
    names = list(names)
    edit = _keep_only(names) if only else None
    try:
        return make_session(
            model, threads=threads, optimize="basic", extra_outputs=names, edit=edit
        )
    except Exception as exc:
        raise OnnxcompError(f"onnxruntime cannot load the model: {one_line(exc)}") from None


def run(sess, names: list[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``names`` tensors for one feed; graph inputs are answered from the feed."""
    known = {i.name for i in sess.get_inputs()}
    fetch = [n for n in names if n not in feed]
    out: dict[str, np.ndarray] = {}
    if fetch:  # an empty list would make onnxruntime return every output
        try:
            values = sess.run(fetch, {k: v for k, v in feed.items() if k in known})
        except Exception as exc:
            raise OnnxcompError(f"onnxruntime failed on the data: {one_line(exc)}") from None
        out = dict(zip(fetch, values, strict=True))
    for name in names:
        if name in feed:
            out[name] = feed[name]
    return out


def _keep_only(names: list[str]):
    """An edit making ``names`` the graph's only outputs, its dead nodes removed."""

    def edit(proto: onnx.ModelProto) -> None:
        inputs = {i.name for i in proto.graph.input}
        wanted = [n for n in names if n not in inputs]
        if not wanted:
            return
        try:
            model = ir.serde.deserialize_model(proto)
        except Exception:  # types onnx_ir cannot hold (ai.onnx.ml maps): run it whole
            return
        values = {o.name: o for o in model.graph.outputs}
        model.graph.outputs[:] = [values[n] for n in wanted]
        RemoveUnusedNodesPass()(model)
        proto.CopyFrom(ir.serde.serialize_model(model))

    return edit


def stream(
    model: ir.Model | onnx.ModelProto,
    names: Iterable[str],
    data: DataSource,
    threads: int = 1,
    only: bool = False,
) -> Iterator[tuple[Batch, dict[str, np.ndarray]]]:
    """(batch, {name: array}) for every batch of ``data``; arrays live for one step.
    ``only``: see ``session``."""
    names = list(dict.fromkeys(names))
    sess = session(model, names, threads, only)
    seen = False
    for batch in data:
        seen = True
        yield batch, run(sess, names, batch.feed)
    if not seen:
        raise OnnxcompError("the data source yielded no samples")
