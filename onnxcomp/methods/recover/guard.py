"""Keep a repair only when it measurably brings the student closer to its teacher.

Bias correction moves each layer's mean output onto the teacher's, layer by layer; on a
model whose int8 error is not a mean shift (PaddleOCR's text recognizer) the shifts add
up and the output gets further away (exact match 0.95 -> 0.78). Judged on the model's
own outputs over the calibration data (metrics.Judge: the task's metric when given or
shown by the outputs, else the worst output component), a repair that does not help is
not kept.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from onnxcomp.io.data import DataSource
from onnxcomp.metrics import Judge
from onnxcomp.runtime.session import make_session

MAX_SAMPLES = 64


def output_fidelity(
    teacher: ir.Model, students: list[ir.Model], data: DataSource, options: Any = None
) -> tuple[list[float], str]:
    """Each student's fidelity to the teacher (1 - the judged drop), and its name."""
    ref = make_session(teacher)
    sessions = [make_session(s) for s in students]
    names = {i.name for i in ref.get_inputs()}
    judges = [Judge.for_session(ref, options) for _ in students]
    seen = 0
    for batch in data:
        feed = {k: v for k, v in batch.feed.items() if k in names}
        expected = ref.run(None, feed)
        for judge, session in zip(judges, sessions, strict=True):
            judge.update(expected, session.run(None, feed), feed=feed)
        seen += batch.size
        if seen >= MAX_SAMPLES:
            break
    gauges = [j.verdict().gauge() for j in judges]
    return [1.0 - g[0] for g in gauges], gauges[0][1] if gauges else "fidelity"
