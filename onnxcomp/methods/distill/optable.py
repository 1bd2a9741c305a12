"""The op table's two entry points: which ops of a graph it cannot run (no torch needed,
so a graph is refused with its op names before torch is imported) and the evaluation.

Our own table rather than onnx2torch (benchmarks/RESULTS.md, "Distillation: which graphs
the student can run"): the student must read the compressed forms (QDQ activations with
straight-through rounding, block DequantizeLinear, MatMulNBits, codebook Gather) with the
tensors we substitute by name, and must fail on anything else with the op's name.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from onnxcomp.methods.distill.ops.names import SUPPORTED


def unsupported(graph: ir.Graph) -> list[str]:
    """The op types of ``graph`` and its subgraphs the table cannot run (sorted)."""
    bad = set()
    for node in ir.traversal.RecursiveGraphIterator(graph):
        if node.op_type not in SUPPORTED.get(node.domain or "", ()):
            bad.add(f"{node.domain}.{node.op_type}" if node.domain else node.op_type)
    return sorted(bad)


def run_graph(
    graph: ir.Graph,
    env: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep: frozenset[str] | set[str] | None = None,
) -> dict[str, Any]:
    """Evaluate ``graph``; ``env`` holds the inputs and the float initializers by name
    (integer initializers and Constant chains are read from the graph and folded once),
    ``extra`` terms added to computed values (straight-through gradients). Returns
    ``env`` with every computed value added, or with ``keep`` those named only (the others
    are freed after their last reader). The graph is compiled on first use."""
    from onnxcomp.methods.distill.ops.program import program_for

    return program_for(graph).run(env, extra, keep)
