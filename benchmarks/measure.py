"""Fidelity and latency of every contender's model against the fp32 original.

All sessions of one model live in this one process: fidelity compares each output with
the original's on the same evaluation batches, and latency runs the sessions
interleaved (a new random order every round) so machine noise hits all of them alike.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.worker import one_line
from onnxcomp.metrics import Accuracy, OutputComparison, cosine_rows
from onnxcomp.runtime.session import make_session


def session(path: Path, threads: int) -> ort.InferenceSession:
    # Sessions are timed alternately: a spinning idle pool would steal the cores of the
    # one running (SqueezeNet fp32 at 2 threads: 16.7 ms spinning vs 8.1 ms not).
    return make_session(path, threads=threads, config={"session.intra_op.allow_spinning": "0"})


def eval_batches(
    path: Path, sess: ort.InferenceSession, limit: int, labels: str | None
) -> list[tuple[dict[str, np.ndarray], np.ndarray | None]]:
    """Evaluation feeds: batches of 16 where the batch axis is dynamic, else single samples."""
    names = [i.name for i in sess.get_inputs()]
    fixed = any(isinstance(i.shape[0], int) for i in sess.get_inputs() if i.shape)
    step = 1 if fixed else 16
    with np.load(path) as data:
        arrays = {n: data[n][:limit] for n in names}
        label_array = data[labels][:limit] if labels else None
    count = next(iter(arrays.values())).shape[0]
    out = []
    for start in range(0, count, step):
        feed = {n: a[start : start + step] for n, a in arrays.items()}
        lab = label_array[start : start + step] if label_array is not None else None
        out.append((feed, lab))
    return out


def _rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1) if array.ndim > 2 else array


def _neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Index of each row's nearest other row by cosine: a semantic-search answer."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)


def fidelity(
    reference: Path,
    candidates: dict[str, Path],
    eval_npz: Path,
    *,
    output: str,
    labels: str | None,
    kind: str,
    limit: int,
) -> dict[str, dict]:
    """Per candidate: top-1 agreement, cosine, max abs error, accuracy; '' key = fp32."""
    ref = session(reference, 2)
    batches = eval_batches(eval_npz, ref, limit, labels)
    ref_out = [ref.run([output], feed)[0] for feed, _ in batches]
    results: dict[str, dict] = {}
    ref_acc = Accuracy()
    for (_, lab), out in zip(batches, ref_out, strict=True):
        if lab is not None:
            ref_acc.update(_rows(out), lab)
    results[""] = {"accuracy": ref_acc.value}
    for name, path in candidates.items():
        try:
            sess = session(path, 2)
            comp, acc, new_out = OutputComparison(output), Accuracy(), []
            for (feed, lab), expected in zip(batches, ref_out, strict=True):
                got = sess.run([output], feed)[0]
                if kind == "classifier":  # [N, C, 1, 1] scores (GAP heads) count as [N, C]
                    expected, got = _rows(expected), _rows(got)
                comp.update(expected, got)
                new_out.append(got)
                if lab is not None:
                    acc.update(_rows(got), lab)
        except Exception as exc:
            results[name] = {"error": "inference: " + one_line(exc)}
            continue
        row = {
            "top1_agreement": comp.top1_agreement if kind == "classifier" else None,
            "cosine": comp.cosine,
            "max_abs_error": comp.max_abs_error,
            "accuracy": acc.value,
            "samples": comp.samples,
        }
        if kind == "embedding":
            a, b = np.concatenate(ref_out), np.concatenate(new_out)
            row["neighbour_agreement"] = float(np.mean(_neighbours(a) == _neighbours(b)))
            row["cosine_min"] = float(cosine_rows(a, b).min())
        results[name] = row
    return results


def latency(
    paths: dict[str, Path],
    feed: dict[str, np.ndarray],
    *,
    threads: int,
    max_runs: int,
    budget_s: float,
    warmup: int = 3,
) -> dict[str, dict]:
    """Median and p90 ms per model, sessions interleaved; stops at max_runs or budget.

    Also per model: the median CPU time of the calling thread per run (at 1 thread
    onnxruntime works on that thread alone, so this moves least on a busy machine) and,
    for all but the first model (fp32), the median of its per-round ratios to the first.

    Each round runs the models in a new seeded random order, and no model runs twice in a
    row: which model ran before (and left its weights in cache) varies. Alternating
    forward and reversed rounds ran the first and last model twice in a row with their
    weights still cached: on MiniLM that favoured the last contender by ~8%."""
    sessions, results = {}, {}
    for name, path in paths.items():
        try:
            sessions[name] = session(path, threads)
            for _ in range(warmup):
                sessions[name].run(None, feed)
        except Exception as exc:
            results[name] = {"error": "latency: " + one_line(exc)}
    names = list(sessions)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    last = None
    for i in range(max_runs):
        order = [names[j] for j in rng.permutation(len(names))]
        if len(order) > 1 and order[0] == last:
            order[0], order[1] = order[1], order[0]
        last = order[-1] if order else None
        for name in order:
            t0, c0 = time.perf_counter(), time.thread_time()
            sessions[name].run(None, feed)
            cpu[name].append((time.thread_time() - c0) * 1000)
            times[name].append((time.perf_counter() - t0) * 1000)
        if i >= 4 and time.perf_counter() - start > budget_s:
            break
    ref = names[0] if names else None
    for name in names:
        ms = np.array(times[name])
        results[name] = {
            "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)),
            "runs": len(ms),
            # At 1 thread onnxruntime runs on the calling thread, so its CPU time is the
            # model's work alone, whatever else the machine runs.
            "cpu_median_ms": float(np.median(cpu[name])),
        }
        if ref is not None and name != ref:
            # each round ran the first model (fp32) too: the median per-round ratio
            pair = np.array(times[ref]) / ms
            results[name]["paired_speedup"] = float(np.median(pair))
    return results
