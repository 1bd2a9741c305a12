"""``--pack`` after distillation: codebook codes are packed once they are final.

With ``--recover distill`` the codebook step stores plain uint8 codes (the form the
student trains, forms.py) and this pass, after training, stores each tensor's final codes
in the smallest packed form (methods/codebook/pack.py), exactly as the codebook step
would have: the packed decode folds back to the trained codes bit for bit.
int8 weights need nothing here: PackInt8Pass already runs after the distill step.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxcomp.graph.edit import insert_at_front
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.methods.codebook.pack import Emitter, choose, emit_codes
from onnxcomp.methods.codebook.quantize_codebook import CodebookRecord
from onnxcomp.methods.distill.forms import CodebookForm, find_forms
from onnxcomp.passes.report import CompressReport
from onnxcomp.passes.strip import RemoveUnusedSubgraphInitializersPass

NOTE = "codebook weights are decoded once by onnxruntime at load"


class PackCodebookCodesPass(ir.passes.InPlacePass):
    def __init__(self, report: CompressReport | None = None) -> None:
        super().__init__()
        self.report = report
        self.packed: dict[str, str] = {}  # weight name -> storage form

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = NameAllocator(model)
        pool: dict = {}
        cursors: dict[int, ir.Node] = {}
        saved: dict[str, int] = {}
        for book in find_forms(model).books:
            base, form, nbytes = self._pack(graph, book, names, pool, cursors)
            if base is not None:
                self.packed[base], saved[base] = form, nbytes
        if self.packed:
            RemoveUnusedNodesPass()(model)
            RemoveUnusedSubgraphInitializersPass()(model)
            self._report(saved)
        return ir.passes.PassResult(model, modified=bool(self.packed))

    def _pack(
        self, graph: ir.Graph, book: CodebookForm, names: NameAllocator, pool: dict,
        cursors: dict[int, ir.Node],
    ) -> tuple[str | None, str, int]:  # fmt: skip
        value = graph.initializers[book.codes]
        codes, table = value.const_value, graph.initializers[book.table].const_value
        assert codes is not None and table is not None
        codes_array = codes.numpy()
        zero = 0 if table.numpy()[0] == 0 else None
        form = choose(codes_array, zero, True)
        if form.kind == "plain":
            return None, "", 0
        base = book.codes.removesuffix("_codes")
        cast = next(iter(value.uses())).node
        gather = next(iter(cast.outputs[0].uses())).node
        em = Emitter(graph, names, base, pool)
        packed = emit_codes(em, codes_array, form)
        for node in em.nodes:
            insert_at_front(graph, node, cursors)
        gather.replace_input_with(1, packed)
        return base, form.describe(), codes_array.size - form.nbytes

    def _report(self, saved: dict[str, int]) -> None:
        if self.report is None:
            return
        forms: dict[str, int] = {}
        for record in self.report.quantized:
            if not isinstance(record, CodebookRecord):
                continue
            if record.name in self.packed:
                kept = record.storage.rsplit(", ", 1)[0]
                record.storage = f"{kept}, {self.packed[record.name]}"
                record.bytes_after -= saved[record.name]
            kind = record.storage.split(", ")[-1].split(" (")[0]
            forms[kind] = forms.get(kind, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(forms.items()))
        notes = self.report.notes
        for i, note in enumerate(notes):
            if note.startswith(NOTE):
                notes[i] = (
                    f"{NOTE} ({summary}): the model runs at fp32 speed and fp32 memory; this "
                    "mode shrinks downloads and disk"
                )


def decoded_codes(model: ir.Model) -> dict[str, np.ndarray]:
    """Each codebook Gather's codes as the packed file decodes them (onnxruntime folds the
    decode chain), by the Gather's output name: for tests and checks."""
    import onnxruntime as ort

    from onnxcomp.graph import opaque_types

    copy = model.clone()
    gathers = [
        n for n in copy.graph if n.op_type == "Gather" and n.inputs[1] is not None
        and n.inputs[1].producer() is not None
    ]  # fmt: skip
    copy.graph.outputs.clear()
    for node in gathers:
        index = node.inputs[1]
        assert index is not None
        index.dtype = ir.DataType.INT32
        copy.graph.outputs.append(index)
    proto = opaque_types.to_proto(copy)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        feeds[spec.name] = np.zeros(shape, np.float32)
    outs = session.run(None, feeds)
    return {n.outputs[0].name or "": o for n, o in zip(gathers, outs, strict=True)}
