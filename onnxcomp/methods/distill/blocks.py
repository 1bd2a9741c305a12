"""The blocks of a compressed graph that block-wise reconstruction rebuilds (no torch).

A block is one weighted node (MatMul, Gemm, Conv, MatMulInteger...) with the constant
subgraph that decodes its stored weight (DequantizeLinear, ``Cast * scale``, codebook
``Gather``, float16 ``Cast``) and the few nodes around it that have no counterpart in the
original model (activation quantizers before it, scale products and a bias after it),
cut where the compressed graph meets a value the original also computes under the same
name (an *anchor*). The original's values at the block's inputs feed it and its values
at the block's output are the target; a block whose output value changed shape (channels
removed) has no target and is left, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx_ir as ir

WEIGHTED = {"MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger"}
# Ops a block may grow through after its anchor: elementwise, one tensor input.
ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid",
    "HardSwish", "BatchNormalization", "Identity",
}  # fmt: skip
MAX_NODES = 16  # nodes of a block besides its weight decoding


@dataclass
class Block:
    node: ir.Node  # the weighted node
    nodes: list[ir.Node]  # every node of the block, in graph order (decoding included)
    inputs: list[str] = field(default_factory=list)  # anchors (or graph inputs) read
    output: str = ""  # the anchor the block is matched on
    leaves: list[str] = field(default_factory=list)  # initializers only this block reads
    skip: str = ""  # why the block is left ("" when it is rebuilt)

    @property
    def name(self) -> str:
        return self.node.name or self.output


def constant_values(graph: ir.Graph) -> set[ir.Value]:
    """Values computed from initializers alone (the initializers included)."""
    const: set[ir.Value] = {v for v in graph.initializers.values() if not v.is_graph_input()}
    for node in graph:
        if all(v is None or v in const for v in node.inputs) and node.op_type not in (
            "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
        ):  # fmt: skip
            const.update(node.outputs)
    return const


def _cone(value: ir.Value | None, const: set[ir.Value], out: set[ir.Node]) -> None:
    """The nodes computing the constant ``value``, added to ``out``."""
    if value is None or value not in const:
        return
    node = value.producer()
    if node is None or node in out:
        return
    out.add(node)
    for v in node.inputs:
        _cone(v, const, out)


def _add(node: ir.Node, nodes: set[ir.Node], const: set[ir.Value]) -> None:
    nodes.add(node)
    for v in node.inputs:
        _cone(v, const, nodes)


def find_blocks(
    model: ir.Model, anchors: set[str], runnable: Callable[[ir.Node], bool] | None = None
) -> list[Block]:
    """One block per weighted node of the main graph whose weight is a constant
    (``anchors``: the names of the values the original model computes, its inputs
    included; ``runnable``: the ops a block may grow through after its anchor). Blocks
    that cannot be cut have ``skip`` set."""
    graph = model.graph
    const = constant_values(graph)
    order = {node: i for i, node in enumerate(graph)}
    outputs = {v.name for v in graph.outputs}
    blocks = []
    for node in graph:
        if node.op_type not in WEIGHTED or node.domain != "":
            continue
        if len(node.inputs) < 2 or node.inputs[1] not in const:
            continue
        if node.inputs[0] is None or node.inputs[0] in const:
            continue
        block = _grow(node, const, anchors, {n for n in outputs if n}, runnable)
        block.nodes.sort(key=order.__getitem__)
        if not block.skip:
            block.leaves = _leaves(graph, block)
            if not block.leaves:
                block.skip = "nothing to train"
        blocks.append(block)
    return blocks


def _grow(
    node: ir.Node, const: set[ir.Value], anchors: set[str], outputs: set[str],
    runnable: Callable[[ir.Node], bool] | None,
) -> Block:  # fmt: skip
    nodes: set[ir.Node] = set()
    _add(node, nodes, const)
    block = Block(node, [])
    value = node.outputs[0]
    # Forward to the first anchor: one consumer at a time.
    while value.name not in anchors:
        uses = list(value.uses())
        if len(uses) != 1 or value.name in outputs or len(nodes) > MAX_NODES:
            block.skip = f"its output '{node.outputs[0].name}' reaches no value of the original"
            block.nodes = sorted(nodes, key=lambda n: n.name or "")
            return block
        _add(uses[0].node, nodes, const)
        value = uses[0].node.outputs[0]
    # Backward: whatever the nodes read that is neither computed here nor an anchor.
    for _ in range(MAX_NODES):
        missing = [
            v for n in list(nodes) for v in n.inputs
            if v is not None and v not in const and v.name not in anchors
            and v.producer() not in nodes
        ]  # fmt: skip
        if not missing:
            break
        for v in missing:
            producer = v.producer()
            if producer is None:  # a graph input the original lacks
                block.skip = f"it reads '{v.name}', which the original does not compute"
                block.nodes = list(nodes)
                return block
            _add(producer, nodes, const)
    else:
        block.skip = "no value of the original before it"
    # Through an activation or a bias that the original also computes by name.
    while not block.skip:
        uses = list(value.uses())
        if len(uses) != 1 or value.name in outputs:
            break
        nxt = uses[0].node
        others = [v for v in nxt.inputs if v is not None and v is not value]
        if (
            nxt.op_type not in ELEMENTWISE or nxt.domain != ""
            or any(v not in const for v in others) or nxt.outputs[0].name not in anchors
            or (runnable is not None and not runnable(nxt))
        ):  # fmt: skip
            break
        _add(nxt, nodes, const)
        value = nxt.outputs[0]
    block.nodes = list(nodes)
    block.output = value.name or ""
    computed = {v for n in nodes for v in n.outputs}
    block.inputs = sorted(
        {
            v.name or "" for n in nodes for v in n.inputs
            if v is not None and v not in const and v not in computed
        }
    )  # fmt: skip
    return block


def _leaves(graph: ir.Graph, block: Block) -> list[str]:
    """The initializers of the block that no node outside it reads (those may change)."""
    inside = set(block.nodes)
    names = []
    for node in block.nodes:
        for v in node.inputs:
            if v is None or v.name is None or graph.initializers.get(v.name) is not v:
                continue
            if v.is_graph_output() or any(u.node not in inside for u in v.uses()):
                continue
            names.append(v.name)
    return sorted(set(names))
