"""Fresh, readable, collision-free names for values and nodes that passes add."""

from __future__ import annotations

import onnx_ir as ir


class NameAllocator:
    """Remembers every name in the model (all graphs) and hands out unused ones."""

    def __init__(self, model: ir.Model) -> None:
        self._used: set[str] = set()
        graphs = [model.graph, *model.graph.subgraphs()]
        for graph in graphs:
            for value in [*graph.inputs, *graph.outputs, *graph.initializers.values()]:
                if value.name:
                    self._used.add(value.name)
            for node in graph:
                if node.name:
                    self._used.add(node.name)
                for out in node.outputs:
                    if out.name:
                        self._used.add(out.name)

    def new(self, wanted: str) -> str:
        name, i = wanted, 1
        while name in self._used:
            name = f"{wanted}_{i}"
            i += 1
        self._used.add(name)
        return name
