"""The training loop: the student against the teacher's outputs (computed once).

Losses per target from targets.py. Every ``eval_every`` steps the loss on the held-back
samples is measured; the values at its best are kept, and training stops once it has
not improved for ``patience`` measurements (4, or a quarter of the run when longer), or
at ``time_limit`` seconds (the best so far is kept, and said). Deterministic: seeded,
deterministic algorithms, one thread.

Memory: a forward keeps only the values the losses read (the rest are freed as it goes)
and a step runs its minibatch in chunks, each forward and backward in turn, gradients
summed to those of the whole minibatch's mean loss (up to float rounding; a graph whose
values mix samples, DynamicQuantizeLinear's range over the batch, sees chunks as
onnxruntime sees the caller's batches); a chunk holds as many samples as keep autograd's
saved tensors under ``ACTIVATION_BYTES``, measured on one sample. The PaddleOCR
recognizer saves ~190 MB per 48x320 line: all 26 lines of a minibatch at once, every
intermediate kept beside them, peaked at 14.4 GB.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from onnxcomp.methods.distill.student import Student
from onnxcomp.methods.distill.targets import TEMPERATURE, Target

REASSIGN_EVERY = 25  # steps between codebook code reassignments
SCALE_LR = 0.1  # the scales' relative learning rate, as a fraction of --lr
EVAL_EVERY = 25  # steps between held-back measurements (a multiple of REASSIGN_EVERY)
PATIENCE = 4  # measurements without improvement before stopping
MAX_BACKOFF = 2  # restarts at a tenth of the rate when the first measurement is worse
CONTRAST_TAU = 0.1  # temperature of the embeddings' batch contrastive term
ACTIVATION_BYTES = 512 << 20  # autograd's saved tensors per chunk of a training step


@dataclass
class Plan:
    steps: int
    lr: float
    batch: int
    seed: int = 0
    fixed: int | None = None  # the model's fixed batch size: a minibatch runs that many at once
    eval_every: int = EVAL_EVERY
    patience: int | None = None  # None: PATIENCE, or a quarter of the measurements if more
    time_limit: float | None = None  # seconds
    progress: Callable[[str], None] | None = None
    # (sample indices, rng) -> (feeds, targets) of new inputs for a step (mixup.Mixer)
    augment: Callable[..., tuple[dict[str, np.ndarray], list[Target]]] | None = None


@dataclass
class Outcome:
    first: float  # loss on the training part before any step
    held_first: float  # held-back loss before any step
    held_best: float
    best_step: int  # 0: the starting values were best
    steps_run: int
    stopped: str  # "steps", "patience" or "time limit"
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, held-back loss)
    lr: float = 0.0  # the rate the kept run used (a tenth per back-off from --lr)


def _select(t: Target, x: torch.Tensor) -> torch.Tensor:
    if t.channels is None:
        return x
    axis = t.axis % x.dim()
    return x.narrow(axis, t.channels[0], t.channels[1] - t.channels[0])


def _kl(student: torch.Tensor, teacher: torch.Tensor, axis: int) -> torch.Tensor:
    """Hinton's KL at T per position along ``axis`` (summed over classes, averaged over
    samples and positions), times T^2."""
    t = TEMPERATURE
    log_s = F.log_softmax(student / t, dim=axis)
    log_t = F.log_softmax(teacher / t, dim=axis)
    return (log_t.exp() * (log_t - log_s)).sum(dim=axis).mean() * t * t


EMIT_FLOOR = 0.05  # the weight of a step the teacher surely leaves blank


def _kl_emitting(
    student: torch.Tensor, teacher: torch.Tensor, axis: int, blank: int
) -> torch.Tensor:
    """_kl per step, weighted by the teacher's probability of emitting a character there
    (1 - p(blank), floored): a CTC line is mostly blank steps, and the plain mean spent a
    half-width recognizer's capacity on them while its decoded strings got worse
    (ddddocr channels 0.5: held-back KL 0.81 -> 0.56, exact-match drop 0.27 -> 0.34)."""
    t = TEMPERATURE
    log_s = F.log_softmax(student / t, dim=axis)
    log_t = F.log_softmax(teacher / t, dim=axis)
    per_step = (log_t.exp() * (log_t - log_s)).sum(dim=axis)
    emit = 1.0 - F.softmax(teacher, dim=axis).select(axis, blank)
    weight = emit.clamp_min(0.0) + EMIT_FLOOR
    return (per_step * weight).sum() / weight.sum() * t * t


def _binary_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL between independent sigmoid scores at T (detector classes), per score."""
    t = TEMPERATURE
    eps = 1e-6
    ls = torch.logit(student.clamp(eps, 1 - eps)) / t
    lt = torch.logit(teacher.clamp(eps, 1 - eps)) / t
    pt = torch.sigmoid(lt)
    kl = pt * (F.logsigmoid(lt) - F.logsigmoid(ls)) + (1 - pt) * (
        F.logsigmoid(-lt) - F.logsigmoid(-ls)
    )
    return kl.mean() * t * t


def _tokens(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Token states [N, T, D] of an embedding read through a mask (weights [N, T], 0 on
    padding): the cosine of each real token's state, weighted, plus ``_cosine`` of the
    mask-weighted means, the vectors the Judge and a search pool. Flattened, the padding
    positions (free under the mask, half the positions of short texts) filled the loss,
    and one vector per sample constrains the weights less than one per token (MiniLM-L3
    esp export, channels 0.3, 48 texts)."""
    w = weights.to(student.dtype)
    per_token = 1 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-12)
    token_loss = (per_token * w).sum() / w.sum().clamp_min(1e-12)
    total = w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    pooled = [(x * w[:, :, None]).sum(dim=1) / total for x in (student, teacher)]
    return token_loss + _cosine(*pooled)


def _cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s = F.normalize(student.reshape(len(student), -1), dim=1)
    t = F.normalize(teacher.reshape(len(teacher), -1), dim=1)
    loss = (1 - (s * t).sum(dim=1)).mean()
    if len(s) > 1:  # each student vector nearest its own teacher vector in the batch
        logits = s @ t.T / CONTRAST_TAU
        loss = loss + CONTRAST_TAU * F.cross_entropy(logits, torch.arange(len(s)))
    return loss


def loss_of(t: Target, env: dict[str, torch.Tensor], idx: np.ndarray) -> torch.Tensor:
    teacher = _select(t, torch.from_numpy(np.ascontiguousarray(t.teacher[idx])))

    def value(name: str) -> torch.Tensor:
        x = env[name]
        return x.transpose(0, 1) if t.time_major else x

    if t.kind == "kl":
        if t.logits_of is not None:
            student = value(t.logits_of)
        elif t.probabilities:
            student = torch.log(value(t.name).clamp_min(1e-12))
        else:
            student = value(t.name)
        if t.blank is not None:
            return _kl_emitting(student, teacher, t.axis, t.blank)
        return _kl(student, teacher, t.axis)
    student = _select(t, value(t.name))
    if t.kind == "bkl":
        return _binary_kl(student, teacher)
    if t.kind == "cosine" and t.weights is not None:
        weights = torch.from_numpy(np.ascontiguousarray(t.weights[idx]))
        return _tokens(student, teacher, weights)
    if t.kind == "cosine":
        return _cosine(student, teacher)
    assert t.spread is not None
    diff = (student - teacher) / torch.from_numpy(t.spread)
    return (diff * diff).mean()


def _reads(targets: list[Target]) -> frozenset[str]:
    """The student values the losses read."""
    return frozenset(n for t in targets for n in (t.name, t.logits_of) if n is not None)


Weights = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


def _batch_loss(
    student: Student,
    feeds: dict[str, np.ndarray],
    targets: list[Target],
    idx: np.ndarray,
    weights: Weights | None = None,
    fixed: int | None = None,
) -> torch.Tensor:
    """The losses over the samples ``idx``; a model of a ``fixed`` batch runs them that
    many at a time, the values the losses read joined on their sample axis."""
    reads = _reads(targets)
    runs = []
    for start in range(0, len(idx), fixed or len(idx)):
        part = idx[start : start + (fixed or len(idx))]
        feed = {k: torch.from_numpy(np.ascontiguousarray(v[part])) for k, v in feeds.items()}
        runs.append(student(feed, reads, weights))
    if len(runs) == 1:
        env = runs[0]
    else:
        swapped = {n for t in targets if t.time_major for n in (t.name, t.logits_of) if n}
        env = {n: torch.cat([r[n] for r in runs], dim=int(n in swapped)) for n in reads}
    return sum((loss_of(t, env, idx) for t in targets), torch.zeros(()))


def chunk_size(
    student: Student, feeds: dict[str, np.ndarray], targets: list[Target], plan: Plan
) -> int:
    """Samples per forward/backward of a training step: the whole minibatch when its
    samples are coupled (the contrastive term over the batch), else as many whole runs
    (one sample, or the model's fixed batch) as keep the tensors autograd saves for them
    (weights' included, so an upper bound) under ``ACTIVATION_BYTES``."""
    if any(t.kind == "cosine" for t in targets):
        return plan.batch
    unit = plan.fixed or 1
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _batch_loss(student, feeds, targets, np.arange(unit))
    runs = ACTIVATION_BYTES // max(sum(saved.values()), 1)
    return max(unit, min(plan.batch, runs * unit))


def _step(
    student: Student,
    feeds: dict[str, np.ndarray],
    targets: list[Target],
    idx: np.ndarray,
    chunk: int,
    fixed: int | None = None,
) -> float:
    """Gradients of the mean loss over ``idx`` (every loss is a mean over samples, so
    each chunk's counts by its share of them); returns that loss. The weights'
    straight-through forms are made once: the chunks' gradients gather on detached
    copies and go back through the forms in one backward."""
    env, extra = student.substitutes()
    cut: list[tuple[torch.Tensor, torch.Tensor]] = []

    def detached(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, value in values.items():
            if value.requires_grad:
                cut.append((value, value.detach().requires_grad_()))
                value = cut[-1][1]
            out[name] = value
        return out

    weights = (detached(env), detached(extra))
    total = 0.0
    for start in range(0, len(idx), chunk):
        part = idx[start : start + chunk]
        loss = _batch_loss(student, feeds, targets, part, weights, fixed) * (len(part) / len(idx))
        loss.backward()
        total += float(loss.detach())
    reached = [(value, leaf.grad) for value, leaf in cut if leaf.grad is not None]
    if reached:
        torch.autograd.backward([v for v, _ in reached], [g for _, g in reached])
    return total


@torch.no_grad()
def full_loss(
    student: Student, feeds: dict[str, np.ndarray], targets: list[Target], plan: Plan
) -> float:
    """The loss over every sample of ``feeds``, batch by batch (whole runs of a fixed
    batch: a ragged tail is left out)."""
    n = len(next(iter(feeds.values())))
    if plan.fixed:
        n -= n % plan.fixed
    total, seen = 0.0, 0
    for start in range(0, n, plan.batch):
        idx = np.arange(start, min(start + plan.batch, n))
        seen += len(idx)
        total += float(_batch_loss(student, feeds, targets, idx, fixed=plan.fixed)) * len(idx)
    return total / max(seen, 1)


def _snapshot(student: Student) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    for i, codes in enumerate(student.codes):
        state[f"#codes{i}"] = codes.clone()
    return state


def _restore(student: Student, state: dict[str, torch.Tensor]) -> None:
    student.load_state_dict({k: v for k, v in state.items() if not k.startswith("#")})
    for i in range(len(student.codes)):
        student.codes[i] = state[f"#codes{i}"].clone()


def train(
    student: Student,
    feeds: dict[str, np.ndarray],
    targets: list[Target],
    held: tuple[dict[str, np.ndarray], list[Target]],
    plan: Plan,
) -> Outcome:
    """Adam with cosine decay for up to ``plan.steps`` minibatches; the student ends at the
    values with the lowest held-back loss seen. A run whose first held-back measurement
    is worse than the start begins again at a tenth of the rate (at most MAX_BACKOFF
    times): no rate suits every model, and the held-back loss says which overshoots."""
    torch.manual_seed(plan.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rng = np.random.default_rng(plan.seed)
    n = len(next(iter(feeds.values())))
    steps = plan.steps
    held_feeds, held_targets = held
    # A quarter of the run at least: with --distill-steps 1000 the rate is still high at
    # step 200 and the held-back loss noisy (digits, 2-bit codebooks: stopping after 4
    # measurements ended at 0.958, the whole run at 0.975).
    patience = plan.patience or max(PATIENCE, -(-steps // plan.eval_every) // 4)
    chunk = chunk_size(student, feeds, targets, plan)
    first = full_loss(student, feeds, targets, plan)
    best = held_first = full_loss(student, held_feeds, held_targets, plan)
    start_state = _snapshot(student)
    best_state, best_step, since, stopped = start_state, 0, 0, "steps"
    curve = [(0, held_first)]
    step, lr = 0, plan.lr
    for attempt in range(MAX_BACKOFF + 1):
        optimizer, schedule = _optimizer(student, lr, steps)
        retry = False
        for step in range(1, steps + 1):
            idx = np.sort(rng.choice(n, size=min(plan.batch, n), replace=False))
            optimizer.zero_grad()
            if plan.augment is not None:
                step_feeds, step_targets = plan.augment(idx, rng)
                whole = np.arange(len(idx))
                loss = _step(student, step_feeds, step_targets, whole, chunk, plan.fixed)
            else:
                loss = _step(student, feeds, targets, idx, chunk, plan.fixed)
            optimizer.step()
            schedule.step()
            if student.books and step % REASSIGN_EVERY == 0:
                student.reassign()
            late = plan.time_limit is not None and time.perf_counter() - start > plan.time_limit
            if step % plan.eval_every and step != steps and not late:
                continue
            if student.books:
                student.reassign()
            value = full_loss(student, held_feeds, held_targets, plan)
            curve.append((step, value))
            if plan.progress is not None:
                plan.progress(
                    f"distill step {step}/{steps} (lr {lr:.3g}): loss {loss:.4g}, held-back "
                    f"{value:.4g} (best {min(best, value):.4g} at step "
                    f"{step if value < best else best_step})"
                )
            # The first measurement worse than the start: the rate overshoots (ddddocr's
            # channel-pruned CNN at 1e-3 went 0.113 -> 0.171; at 1e-4 to 0.063). Start
            # again from the stored values at a tenth of it.
            if len(curve) == 2 and value > held_first and attempt < MAX_BACKOFF and not late:
                retry = True
                break
            if value < best:
                best, best_state, best_step, since = value, _snapshot(student), step, 0
            else:
                since += 1
            if since >= patience and step != steps:
                stopped = "patience"
                break
            if late and step != steps:
                stopped = "time limit"
                break
        if not retry:
            break
        _restore(student, start_state)
        curve, lr = curve[:1], lr / 10
    _restore(student, best_state)
    return Outcome(first, held_first, best, best_step, step, stopped, curve, lr)


def _optimizer(student: Student, lr: float, steps: int) -> tuple[Any, Any]:
    """Adam with cosine decay to zero: the last steps settle instead of oscillating
    around the minimum (biases at a constant 1e-3 undid most of the gain on the digits
    MLP)."""
    optimizer = torch.optim.Adam(student.param_groups(lr, lr * SCALE_LR))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))
    )
    return optimizer, schedule


def stderr_progress(line: str) -> None:
    """One progress line, rewritten in place on a terminal."""
    end = "\r" if sys.stderr.isatty() else "\n"
    sys.stderr.write(f"{line}{end}")
    sys.stderr.flush()
