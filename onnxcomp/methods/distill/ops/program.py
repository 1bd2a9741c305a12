"""A graph compiled once into closures and run by name.

Attributes are read once per node (the makers), chains that depend only on Constant
nodes and integer initializers (shape arithmetic) are folded at compile time, and an
``If`` runs the branch its condition picks (each compiled once; weights inside a branch
come from its own initializers unless the caller substitutes them by name).

A run asked to ``keep`` some names drops every other computed value after its last
reader: the caller's dict would otherwise hold all of a forward's intermediates at once
(the PaddleOCR recognizer's ~1,600 values are ~300 MB per 48x320 line, 14 GB at batch 26
with the autograd graph beside them); a value backward needs stays with autograd.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from onnxcomp.methods.distill.ops import math, nn, quant, rnn, shape
from onnxcomp.methods.distill.ops.common import Fn, Maker, fail, tensor_of

MAKERS: dict[str, dict[str, Maker]] = {
    "": {**math.OPS, **nn.OPS, **shape.OPS, **rnn.OPS, **quant.OPS},
    "com.microsoft": dict(quant.MS_OPS),
}
MAKERS["ai.onnx"] = MAKERS[""]
# Initializers folded from the graph itself (shape constants, never trained); 4-bit codes
# are read from the graph unless the caller substitutes them (torch has no 4-bit dtype).
STATIC = {ir.DataType.INT64, ir.DataType.INT32, ir.DataType.BOOL}
FOUR_BIT = {ir.DataType.INT4, ir.DataType.UINT4}
META_KEY = "onnxcomp.distill.program"
Step = tuple[Fn, list[str], list[str], ir.Node, "Branches | None"]


class Program:
    """``graph``'s nodes as (function, input names, output names), folded where static."""

    def __init__(self, graph: ir.Graph, opsets: dict[str, int], subgraph: bool = False) -> None:
        self.graph, self.size = graph, len(graph)
        self.opsets = {**opsets, **dict(graph.opset_imports)}
        self.defaults: dict[str, Any] = {}  # a branch's own initializers, 4-bit codes
        self.folded: dict[str, Any] = {}
        for name, value in graph.initializers.items():
            if value.const_value is None:
                continue
            if value.dtype in STATIC:
                self.folded[name] = tensor_of(value.const_value.numpy())
            elif subgraph or value.dtype in FOUR_BIT:
                self.defaults[name] = tensor_of(value.const_value.numpy())
        self.steps: list[Step] = []
        for node in graph:
            ins = [v.name if v is not None and v.name else "" for v in node.inputs]
            outs = [v.name or "" for v in node.outputs]
            if node.op_type == "If" and node.domain in ("", "ai.onnx"):
                self.steps.append((_no_fn, ins, outs, node, Branches(node, self.opsets)))
                continue
            fn = self._make(node)
            if all(not n or n in self.folded for n in ins):
                values = _call(fn, [self.folded[n] if n else None for n in ins], node)
                self.folded.update((n, v) for n, v in zip(outs, values, strict=False) if n)
                continue
            self.steps.append((fn, ins, outs, node, None))
        self.last_use = _last_uses(self.steps)

    def _make(self, node: ir.Node) -> Fn:
        domain = node.domain or ""
        makers = MAKERS.get(domain, {})
        if node.op_type not in makers:
            fail(node, "(no such op in the distillation table)")
        return makers[node.op_type](node, self.opsets.get(domain, 1 if domain else 21))

    def run(
        self,
        env: dict[str, Any],
        extra: dict[str, Any] | None = None,
        keep: frozenset[str] | set[str] | None = None,
    ) -> dict[str, Any]:
        """``env`` with the computed values added: all of them, or with ``keep`` only
        those named (the rest are dropped once read for the last time)."""
        for name, value in self.defaults.items():
            env.setdefault(name, value)
        env.update(self.folded)
        for i, (fn, ins, outs, node, branches) in enumerate(self.steps):
            if branches is not None:
                values = branches.run(env[ins[0]], env, extra)
            else:
                values = _call(fn, [env[n] if n else None for n in ins], node)
            for name, value in zip(outs, values, strict=False):
                if name:
                    env[name] = value + extra[name] if extra and name in extra else value
            if keep is not None:
                for name in (*ins, *outs, *(branches.reads if branches else ())):
                    if self.last_use.get(name) == i and name not in keep:
                        env.pop(name, None)
        return env


class Branches:
    """An ``If``'s two subgraphs, each compiled the first time its condition picks it."""

    def __init__(self, node: ir.Node, opsets: dict[str, int]) -> None:
        self.node, self.opsets = node, opsets
        self.programs: dict[bool, Program] = {}
        self.reads = _outer_reads(node)  # outer values the branches may read by name

    def run(self, cond: Any, env: dict[str, Any], extra: dict[str, Any] | None) -> list[Any]:
        pick = bool(cond)
        program = self.programs.get(pick)
        if program is None:
            attr = self.node.attributes.get("then_branch" if pick else "else_branch")
            if attr is None:
                fail(self.node, "without its branches")
            program = self.programs[pick] = Program(attr.as_graph(), self.opsets, True)
        program.run(env, extra)
        return [env[v.name or ""] for v in program.graph.outputs]


def _outer_reads(node: ir.Node) -> tuple[str, ...]:
    """Every value name the node's subgraphs read (their own included: a superset)."""
    names: set[str] = set()
    for attr in node.attributes.values():
        if attr.type != ir.AttributeType.GRAPH:
            continue
        for inner in ir.traversal.RecursiveGraphIterator(attr.as_graph()):
            names.update(v.name for v in inner.inputs if v is not None and v.name)
    return tuple(sorted(names))


def _last_uses(steps: list[Step]) -> dict[str, int]:
    """The index of the last step reading (or, unread, writing) each computed value."""
    last: dict[str, int] = {}
    for i, (_, ins, outs, _, branches) in enumerate(steps):
        for name in (*ins, *outs, *(branches.reads if branches else ())):
            if name:
                last[name] = i
    return last


def _no_fn(x: list[Any]) -> list[Any]:
    raise AssertionError("an If runs through its Branches")


def _call(fn: Fn, args: list[Any], node: ir.Node) -> list[Any]:
    try:
        return fn(args)
    except (RuntimeError, IndexError, ValueError, TypeError) as e:
        raise RuntimeError(f"distill: {node.op_type} node '{node.name}' failed: {e}") from e


def program_for(graph: ir.Graph) -> Program:
    """The compiled program of ``graph``, made once and kept in its metadata."""
    program = graph.meta.get(META_KEY)
    if not isinstance(program, Program) or program.size != len(graph):
        program = Program(graph, dict(graph.opset_imports))
        graph.meta[META_KEY] = program
    return program
