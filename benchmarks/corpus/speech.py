"""Corpus models: speech. Silero VAD (voice-activity detection) in four ONNX exports.

All four come from the silero-vad wheel and are stateful: audio goes in 512-sample chunks at
16 kHz (each with the previous chunk's last 64 samples in front), and the recurrent state
comes back out to be fed into the next call, exactly as the package's ``OnnxWrapper`` and
``SileroVADSequence`` do. Scoring therefore runs each recording sequentially, and the
calibration feeds are the (chunk, state, sr) feeds recorded from an fp32 sequential run, so a
quantizer sees the states the model really meets. The task metric is frame-level ROC-AUC of
the speech probability against labels from the clean speech track (``speech_audio``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.corpus import Prepared, RealModel, Score, Wheel
from benchmarks.corpus import session as _session
from benchmarks.corpus.speech_audio import FRAME, SR, recordings

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

WHEEL = Wheel(
    package="silero-vad",
    version="6.2.3",
    filename="silero_vad-6.2.3-py3-none-any.whl",
    sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
    licence="MIT",
)
CONTEXT = 64  # samples of the previous chunk put in front of each chunk at 16 kHz
STATE = 128  # LSTM width
SEQ_BLOCK = 512  # frames per call of the sequence model when scoring (the package default)
SEQ_FEED_BLOCK = 32  # smaller blocks for the recorded calibration/evaluation feeds: more
EVAL_FEEDS = 256  # streaming feeds kept in eval/ (evenly spread over the evaluation run)
METRIC = "frame ROC-AUC"

Feed = dict[str, np.ndarray]


def _is_sequence(sess: InferenceSession) -> bool:
    """The sequence export takes (input, h, c); the streaming ones (input, state, sr)."""
    return "h" in {i.name for i in sess.get_inputs()}


def _stream(sess: InferenceSession, audio: np.ndarray, record: list[Feed] | None) -> np.ndarray:
    """Speech probability per chunk, one call per chunk, state carried (``OnnxWrapper``)."""
    state = np.zeros((2, 1, STATE), np.float32)
    context = np.zeros((1, CONTEXT), np.float32)
    sr = np.array(SR, np.int64)
    chunks = audio.reshape(-1, FRAME)
    probs = np.empty(len(chunks), np.float32)
    for i, chunk in enumerate(chunks):
        x = np.concatenate([context, chunk[None]], axis=1)
        feed = {"input": x, "state": state, "sr": sr}
        if record is not None:
            record.append(feed)
        out, state = sess.run(None, feed)
        probs[i] = out.reshape(-1)[0]
        context = x[:, -CONTEXT:]
    return probs


def _sequence(
    sess: InferenceSession, audio: np.ndarray, block: int, record: list[Feed] | None
) -> np.ndarray:
    """Speech probability per frame, ``block`` frames per call, (h, c) carried between calls
    (``SileroVADSequence.audio_forward``): each row is 64 context samples + one frame."""
    frames = audio.reshape(-1, FRAME)
    contexts = np.concatenate([np.zeros((1, CONTEXT), np.float32), frames[:-1, -CONTEXT:]])
    rows = np.ascontiguousarray(np.concatenate([contexts, frames], axis=1), dtype=np.float32)
    h = np.zeros((1, 1, STATE), np.float32)
    c = np.zeros((1, 1, STATE), np.float32)
    probs = []
    for start in range(0, len(rows), block):
        feed = {"input": rows[start : start + block], "h": h, "c": c}
        if record is not None:
            record.append(feed)
        out, h, c = sess.run(None, feed)
        probs.append(out.reshape(-1))
    return np.concatenate(probs)


def _probs(
    sess: InferenceSession,
    audio: np.ndarray,
    block: int = SEQ_BLOCK,
    record: list[Feed] | None = None,
) -> np.ndarray:
    """Per-frame speech probabilities of one recording, from a fresh state."""
    if _is_sequence(sess):
        return _sequence(sess, audio, block, record)
    return _stream(sess, audio, record)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney ROC-AUC with tied scores given their average rank (sklearn's value)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    pos = int(labels.sum())
    neg = labels.size - pos
    if pos == 0 or neg == 0:
        return float("nan")
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _save_feeds(feeds: list[Feed], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    width = len(str(len(feeds)))
    for i, feed in enumerate(feeds):
        np.savez(folder / f"{i:0{width}d}.npz", **feed)


def _prepare(model_file: Path, folder: Path) -> Prepared:
    """Record calibration and evaluation feeds from fp32 runs; store the evaluation audio."""
    sess = _session(model_file, 1)
    calib: list[Feed] = []
    for rec in recordings("calib"):
        _probs(sess, rec.audio, SEQ_FEED_BLOCK, calib)
    _save_feeds(calib, folder / "calib")

    feeds: list[Feed] = []
    arrays: dict[str, np.ndarray] = {}
    for i, rec in enumerate(recordings("eval")):
        _probs(sess, rec.audio, SEQ_FEED_BLOCK, feeds)
        arrays[f"audio_{i}"] = rec.audio
        arrays[f"labels_{i}"] = rec.labels
    if len(feeds) > EVAL_FEEDS:
        feeds = [feeds[i] for i in np.linspace(0, len(feeds) - 1, EVAL_FEEDS).astype(int)]
    _save_feeds(feeds, folder / "eval")
    targets = folder / "targets.npz"
    np.savez_compressed(targets, **arrays)

    labels = np.concatenate([r.labels for r in recordings("eval")])
    extra = {
        "targets": str(targets),  # audio_<i> (float32, 16 kHz) and labels_<i> (per frame)
        "recordings": len(recordings("eval")),
        "eval_seconds": round(labels.size * FRAME / SR, 1),
        "calib_seconds": round(sum(r.audio.size for r in recordings("calib")) / SR, 1),
        "speech_fraction": round(float(labels.mean()), 3),
        "calib_feeds": len(calib),
    }
    prep = Prepared(folder.name, folder, model_file, folder / "calib", folder / "eval", extra)
    extra["fp32"] = _score(model_file, prep, 1).value
    return prep


def _score(model_file: Path, prepared: Prepared, threads: int) -> Score:
    """Run every evaluation recording from a fresh state; pool the frames for the metrics."""
    sess = _session(model_file, threads)
    probs, labels = [], []
    with np.load(prepared.extra["targets"]) as data:
        for i in range(prepared.extra["recordings"]):
            probs.append(_probs(sess, data[f"audio_{i}"]))
            labels.append(data[f"labels_{i}"])
    p = np.concatenate(probs)
    y = np.concatenate(labels).astype(bool)
    hit = p >= 0.5
    tp = float(np.sum(hit & y))
    f1 = 2 * tp / max(1.0, float(hit.sum() + y.sum()))
    extra = {"accuracy@0.5": float(np.mean(hit == y)), "f1@0.5": f1, "frames": float(y.size)}
    return Score(METRIC, roc_auc(y, p), extra)


_TASK = (
    "voice-activity detection, 512-sample chunks at 16 kHz run sequentially with the state "
    "carried; frame ROC-AUC against espeak-ng speech energy on ~2 min of synthetic recordings "
    "(speech between silence, coloured noise, hum and clicks, varied SNR)"
)


def _model(name: str, member: str, exporter: str) -> RealModel:
    return RealModel(
        name=name,
        wheel=WHEEL,
        member=f"silero_vad/data/{member}",
        exporter=exporter,
        task=_TASK,
        metric=METRIC,
        prepare=_prepare,
        score=_score,
        needs=("scipy",),
        tools=("espeak-ng",),
    )


MODELS: list[RealModel] = [
    _model("silero-vad", "silero_vad.onnx", "spox (opset 16, whole net inside an If on sr)"),
    _model("silero-vad-op15", "silero_vad_16k_op15.onnx", "PyTorch 2.3 (TorchScript, opset 15)"),
    _model("silero-vad-op18", "silero_vad_op18_ifless.onnx", "PyTorch 2.9 (opset 18)"),
    _model("silero-vad-seq", "silero_vad_16k_sequence.onnx", "PyTorch 2.11 (opset 16)"),
]
