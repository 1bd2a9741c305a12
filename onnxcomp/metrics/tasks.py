"""The built-in task metrics by name, and which task a model's outputs show.

Detection from the outputs is limited to what is unambiguous (and said): a YOLO-style
head is a detector; [N, T, C] rows of probabilities are a sequence read step by step
(a text recognizer); [N, C] scores or [N] labels are a classifier. Everything else is
judged per output component unless ``--task`` says what the outputs mean.
"""

from __future__ import annotations

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics.boxes import yolo_axis
from onnxcomp.metrics.classify import Classify
from onnxcomp.metrics.custom import Custom, load, spec_name
from onnxcomp.metrics.detect import Detect
from onnxcomp.metrics.embed import Embed
from onnxcomp.metrics.regress import Regress
from onnxcomp.metrics.segment import Segment
from onnxcomp.metrics.sequence import Sequence
from onnxcomp.metrics.task import Outputs, TaskMetric, TaskSettings
from onnxcomp.metrics.threshold import Threshold

TASKS: dict[str, type[TaskMetric]] = {
    "classify": Classify,
    "detect": Detect,
    "segment": Segment,
    "sequence": Sequence,
    "ctc": Sequence,
    "embed": Embed,
    "threshold": Threshold,
    "regress": Regress,
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def make(
    task: str | None, settings: TaskSettings | None = None, metric_fn=None
) -> TaskMetric | None:
    if metric_fn is not None:
        if task is not None:
            raise OnnxcompError("give --task or --metric-fn, not both")
        return Custom(load(metric_fn), spec_name(metric_fn), settings)
    if task is None:
        return None
    if task not in TASKS:
        raise OnnxcompError(f"--task must be one of {', '.join(TASK_NAMES)}, got {task!r}")
    return TASKS[task](settings)


def detect(outputs: Outputs) -> tuple[str, str] | tuple[str, str, str] | None:
    """(task, why) when the outputs show it unambiguously, else None; (task, why,
    output) when the task must read one output among several."""
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    heads = [(k, a) for k, a in arrays.items() if a.dtype.kind == "f" and yolo_axis(a.shape)]
    if len(heads) == 1 and _looks_like_boxes_and_scores(heads[0][1]):
        name, a = heads[0]
        style = "channel-first (v8/v11)" if yolo_axis(a.shape) == 1 else "channel-last (v5)"
        return "detect", f"output '{name}' {list(a.shape)} is a YOLO-style head, {style}"
    for k, a in arrays.items():
        if a.dtype.kind == "f" and a.ndim == 3 and min(a.shape[1:]) > 1 and _step_probs(a):
            return "sequence", (
                f"output '{k}' {list(a.shape)} holds class probabilities per step (greedy "
                "CTC decode; --task classify or regress reads it otherwise)"
            )
    found = _embedding(arrays)
    if found is not None:
        return found
    for k, a in arrays.items():
        if a.dtype.kind == "f" and a.ndim == 2 and a.shape[1] > 1:
            return "classify", f"output '{k}' {list(a.shape)} holds class scores"
        if a.dtype.kind in "iu" and a.ndim == 1:
            return "classify", f"output '{k}' {list(a.shape)} holds labels"
    return None


_EMBEDDING_NAMES = ("embed", "hidden", "pooler", "pooled", "sentence", "feature")


def _embedding(arrays: dict[str, np.ndarray]) -> tuple[str, str, str] | None:
    """(embed, why, output) for an output that is an embedding, not class scores: named
    so (sentence_embedding, last_hidden_state, pooler_output), rows of unit length (a
    normalized embedding), or [N, D] beside the [N, T, D] token states it pools (an
    exporter's numbered outputs, as paraphrase-MiniLM's). Argmax agreement over
    embedding features would judge something retrieval never reads."""
    floats = {k: a for k, a in arrays.items() if a.dtype.kind == "f" and a.ndim in (2, 3)}
    if any(w in k.lower() for k in arrays for w in ("logit", "prob", "score")):
        return None
    tokens = {a.shape[2] for a in floats.values() if a.ndim == 3}
    for k, a in floats.items():
        shape = list(a.shape)
        if a.shape[-1] < 2:
            continue
        if any(w in k.lower() for w in _EMBEDDING_NAMES):
            return "embed", f"output '{k}' {shape} is named as an embedding", k
        if a.ndim == 2 and a.shape[1] >= 8 and _unit_rows(a):
            return "embed", f"output '{k}' {shape} holds rows of unit length", k
        if a.ndim == 2 and a.shape[1] in tokens:
            return "embed", f"output '{k}' {shape} pools the token states beside it", k
    return None


def _unit_rows(a: np.ndarray) -> bool:
    norms = np.linalg.norm(a.astype(np.float64), axis=1)
    return bool(np.all(np.abs(norms - 1.0) < 1e-3) and np.any(a < 0))


def _step_probs(a: np.ndarray) -> bool:
    """[N, T, C] rows along C that are probabilities (a text recognizer's softmax)."""
    return bool(np.all(a >= 0) and np.allclose(a.sum(axis=2), 1.0, atol=1e-3))


def _looks_like_boxes_and_scores(a: np.ndarray) -> bool:
    """A YOLO head's values: widths and heights >= 0, scores in [0, 1], and not rows of
    probabilities along the long axis. A language model's [N, T, vocab] logits or a CTC
    recognizer's [N, T, classes] probabilities have the shape but not these values."""
    fields = a if yolo_axis(a.shape) == 1 else np.swapaxes(a, 1, 2)  # [N, fields, anchors]
    if fields.shape[1] < 5:
        return False
    wh, scores = fields[:, 2:4], fields[:, 4:]
    if float(wh.min()) < 0.0 or float(scores.min()) < 0.0 or float(scores.max()) > 1.0:
        return False
    return not np.allclose(a.sum(axis=2 if a.shape[2] > a.shape[1] else 1), 1.0, atol=1e-2)
