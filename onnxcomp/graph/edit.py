"""Small graph edits every rewriting pass needs: initializers, constants read and
replaced, subgraphs walked, nodes put in front."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx_ir as ir


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as an initializer of ``graph``, typed and shaped from the array."""
    dtype = ir.DataType.from_numpy(array.dtype)
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(dtype),
        # ir.Tensor, not ir.tensor: the array is already numpy, and ir.tensor's checks cost
        # 10x as much (thousands of scales and zero points per int8 measure-step candidate).
        const_value=ir.Tensor(array, dtype=dtype, name=name),
    )
    graph.register_initializer(value)
    return value


def const(value: ir.Value | None, dtype: ir.DataType | None = None) -> np.ndarray | None:
    """The array of an initializer (or a value with a known constant), else None; a graph
    input never counts (the user may feed it). With ``dtype``: only of that element type."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    if dtype is not None and value.dtype != dtype:
        return None
    return value.const_value.numpy()


def folded_const(value: ir.Value | None) -> np.ndarray | None:
    """Like ``const``, and also the output of a ``Constant`` node (not lifted yet)."""
    if value is None or value.is_graph_input():
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return tensor.numpy() if tensor is not None else None


def const_array(value: ir.Value) -> np.ndarray:
    """``folded_const`` of a value already known to be a constant."""
    array = folded_const(value)
    assert array is not None, value.name
    return array


def set_constant(value: ir.Value, array: np.ndarray) -> None:
    """New contents for an initializer or a Constant node's output (what is saved)."""
    tensor = ir.tensor(np.ascontiguousarray(array), name=value.name)
    node = value.producer()
    if node is not None:
        assert node.op_type == "Constant", node.op_type
        for key in [k for k in node.attributes if k.startswith("value")]:
            del node.attributes[key]
        node.attributes["value"] = ir.AttrTensor("value", tensor)
    value.const_value = tensor
    value.shape = ir.Shape(array.shape)


def all_graphs(graph: ir.Graph) -> Iterator[ir.Graph]:
    """``graph`` and every subgraph in it (If/Loop/Scan bodies, nested)."""
    yield graph
    yield from graph.subgraphs()


def insert_at_front(graph: ir.Graph, node: ir.Node, cursors: dict[int, ir.Node]) -> None:
    """Keep new nodes at the top of their graph, in creation order (deterministic):
    ``cursors`` remembers the last node put in front of each graph."""
    last = cursors.get(id(graph))
    if last is not None:
        graph.insert_after(last, node)
    elif len(graph) > 0:
        graph.insert_before(next(iter(graph)), node)
    else:
        graph.append(node)
    cursors[id(graph)] = node
