"""How a compressed model is judged against its original.

compare.py: the whole-output figures reports show (top-1 agreement, cosine, max error);
components.py: fidelity per output component (what decides when no task is known);
task.py + one module per task (classify, detect + boxes, segment, sequence, embed,
threshold, regress) and custom.py (``--metric-fn``); tasks.py: the registry and what the
outputs show; judge.py: the one ``Judge`` every decision goes through; persample.py: the
per-sample drops auto's older metric names use.
"""

from onnxcomp.metrics.compare import (
    Accuracy,
    OutputComparison,
    cosine_rows,
    is_classifier_like,
    predictions,
)
from onnxcomp.metrics.judge import Judge, Verdict
from onnxcomp.metrics.task import TaskResult, TaskSettings
from onnxcomp.metrics.tasks import TASK_NAMES

__all__ = [
    "TASK_NAMES",
    "Accuracy",
    "Judge",
    "OutputComparison",
    "TaskResult",
    "TaskSettings",
    "Verdict",
    "cosine_rows",
    "is_classifier_like",
    "predictions",
]
