"""Insert activation QuantizeLinear/DequantizeLinear pairs where a QdqPlan says.

One Q/DQ pair per tensor, right after its producer. Readers of a tensor made by an int8
op all read the DQ (the float original disappears once the runtime fuses); a tensor
made by a float op keeps its float readers and only int8 readers go through Q/DQ.
Conv/Gemm biases become int32 with scale = input scale x weight scale, and constants
feeding Add/Mul/Concat get their own int8 copy, so every input of a fused op is a DQ.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.methods.int8.placement import QdqPlan
from onnxcomp.numerics.scales import activation_params, qrange, quantize, quantize_bias

logger = logging.getLogger(__name__)

QTYPES = {"uint8": (ir.DataType.UINT8, np.uint8), "int8": (ir.DataType.INT8, np.int8)}


class InsertQDQPass(ir.passes.InPlacePass):
    """Materialize a QdqPlan with per-tensor (scale, zero point) by tensor name."""

    def __init__(
        self, plan: QdqPlan, params: dict[str, tuple[np.float32, int]], dtype: str = "uint8"
    ) -> None:
        super().__init__()
        self.plan, self.params, self.dtype = plan, params, dtype
        self.inserted = 0
        self.biases = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self._names = NameAllocator(model)
        self._qparams: dict[str, tuple[ir.Value, ir.Value]] = {}
        int8_made = self._int8_outputs()
        pairs = []  # names first: a graph output's pair takes over its name
        for value in [*self.plan.roots, *self.plan.shared]:
            root = value
            while root in self.plan.shared:
                root = self.plan.shared[root]
            if root.name in self.params:
                pairs.append((value, root.name or ""))
        for value, root_name in pairs:
            scale, zero = self._param_values(graph, root_name)
            self._insert_pair(graph, value, scale, zero, all_readers=value in int8_made)
        for node in list(self.plan.nodes):
            self._quantize_constants(graph, node)
        return ir.passes.PassResult(model, modified=self.inserted > 0)

    def _int8_outputs(self) -> set[ir.Value]:
        """Tensors an int8 op will produce: their float version will not exist."""
        made = set(self.plan.shared)
        for value in self.plan.roots:
            node = value.producer()
            if node is None:
                continue
            if node in self.plan.nodes:
                made.add(value)
            elif node.op_type in ("Relu", "Clip") and node.inputs[0] is not None:
                inner = node.inputs[0].producer()
                if inner is not None and inner in self.plan.nodes:
                    made.add(value)
        return made

    def _param_values(self, graph: ir.Graph, name: str) -> tuple[ir.Value, ir.Value]:
        if name not in self._qparams:
            scale, zero = self.params[name]
            _, np_type = QTYPES[self.dtype]
            s = add_initializer(
                graph, self._names.new(f"{name}_scale"), np.array(scale, np.float32)
            )
            z = add_initializer(
                graph, self._names.new(f"{name}_zero_point"), np.array(zero, np_type)
            )
            self._qparams[name] = (s, z)
        return self._qparams[name]

    def _insert_pair(
        self, graph: ir.Graph, value: ir.Value, scale: ir.Value, zero: ir.Value, all_readers: bool
    ) -> None:
        base = value.name or "t"
        readers = [u for u in value.uses() if all_readers or u.node in self.plan.nodes]
        q = ir.node("QuantizeLinear", [value, scale, zero], name=self._names.new(f"{base}_Q"))
        q.outputs[0].name = self._names.new(f"{base}_quantized")
        q.outputs[0].dtype = QTYPES[self.dtype][0]
        q.outputs[0].shape = value.shape
        dq = ir.node(
            "DequantizeLinear", [q.outputs[0], scale, zero], name=self._names.new(f"{base}_DQ")
        )
        out = dq.outputs[0]
        out.name = self._names.new(f"{base}_dequantized")
        out.dtype, out.shape = ir.DataType.FLOAT, value.shape
        producer = value.producer()
        if producer is not None and producer.graph is graph:
            graph.insert_after(producer, [q, dq])
        elif len(graph) > 0:
            graph.insert_before(next(iter(graph)), [q, dq])
        else:
            graph.extend([q, dq])
        for use in readers:
            use.node.replace_input_with(use.idx, out)
        if all_readers and value.is_graph_output():  # an int8 op's output: DQ gives it
            name = value.name
            value.name = self._names.new(f"{base}_float")
            out.name = name
            for i, output in enumerate(graph.outputs):
                if output is value:
                    graph.outputs[i] = out
        self.inserted += 1

    def _quantize_constants(self, graph: ir.Graph, node: ir.Node) -> None:
        fam = self.plan.nodes[node]
        if fam in ("conv", "gemm") and len(node.inputs) > 2 and node.inputs[2] is not None:
            self._int32_bias(graph, node)
            return
        if fam not in ("add", "mul", "concat"):
            return
        for i, value in enumerate(node.inputs):
            if value is None or value.const_value is None or value.is_graph_input():
                continue
            array = value.const_value.numpy().astype(np.float32)
            if array.size == 0:
                continue
            scale, zero = activation_params(float(array.min()), float(array.max()), self.dtype)
            qmin, qmax = qrange(self.dtype)
            q = quantize(array, scale, zero, qmin=qmin, qmax=qmax, dtype=QTYPES[self.dtype][1])
            self._dq_input(graph, node, i, q, np.array(scale, np.float32), np.array(zero, q.dtype))

    def _int32_bias(self, graph: ir.Graph, node: ir.Node) -> None:
        x, w, b = node.inputs[0], node.inputs[1], node.inputs[2]
        x_dq = x.producer() if x is not None else None
        if x_dq is None or x_dq.op_type != "DequantizeLinear" or b is None:
            return
        x_scale = x_dq.inputs[1].const_value if x_dq.inputs[1] is not None else None
        if x_scale is None or b.const_value is None:
            return
        w_dq = w.producer() if w is not None else None
        if w_dq is None or w_dq.inputs[1] is None or w_dq.inputs[1].const_value is None:
            return
        w_scale = w_dq.inputs[1].const_value.numpy()
        bias = b.const_value.numpy().astype(np.float32)
        if w_scale.size > 1 and w_scale.size != bias.size:
            return
        q, scale = quantize_bias(bias, np.float32(x_scale.numpy()), w_scale)
        self._dq_input(graph, node, 2, q, scale, None, axis=0 if scale.size > 1 else None)
        self.biases += 1

    def _dq_input(self, graph, node, index, q, scale, zero, axis: int | None = None) -> None:
        """Replace one constant input of ``node`` by DequantizeLinear(q, scale, zero)."""
        base = node.inputs[index].name or "const"
        inputs = [
            add_initializer(graph, self._names.new(f"{base}_quantized"), q),
            add_initializer(graph, self._names.new(f"{base}_scale"), scale),
        ]
        if zero is not None:
            inputs.append(add_initializer(graph, self._names.new(f"{base}_zero_point"), zero))
        attrs = {"axis": axis} if axis is not None else {}
        dq = ir.node(
            "DequantizeLinear", inputs, attributes=attrs, name=self._names.new(f"{base}_DQ")
        )
        dq.outputs[0].name = self._names.new(f"{base}_dequantized")
        dq.outputs[0].dtype = ir.DataType.FLOAT
        dq.outputs[0].shape = ir.Shape(q.shape)
        graph.insert_before(node, dq)
        node.replace_input_with(index, dq.outputs[0])
