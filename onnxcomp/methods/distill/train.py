"""The training loop: the student against the teacher's outputs (computed once).

Losses per output, from the task: class scores get Hinton's KL at temperature T on
softmax (probabilities are read as log-probabilities, a Softmax's input as logits);
everything else per-component normalized MSE (each component divided by its spread in
the teacher, so a small-valued channel counts as much as a large one).
Deterministic: seeded, deterministic algorithms, one thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from onnxcomp.methods.distill.student import Student

TEMPERATURE = 2.0
REASSIGN_EVERY = 25  # steps between codebook code reassignments
SCALE_LR = 0.1  # the scales' relative learning rate, as a fraction of --lr


@dataclass
class Target:
    name: str  # the graph output
    kind: str  # "kl" or "mse"
    teacher: np.ndarray  # [N, ...]: logits for kl, the raw output for mse
    logits_of: str | None = None  # the student value holding logits (a Softmax input)
    probabilities: bool = False  # the student's output is probabilities: take its log
    spread: np.ndarray | None = None  # mse: per-component spread (broadcast shape)


def is_probabilities(a: np.ndarray) -> bool:
    return bool(a.size) and a.min() >= 0 and np.allclose(a.sum(axis=-1), 1.0, atol=1e-3)


def make_target(name: str, kind: str, teacher: np.ndarray, softmax_input: str | None) -> Target:
    if kind == "kl":
        probs = is_probabilities(teacher)
        logits = np.log(np.clip(teacher, 1e-12, None)) if probs else teacher
        return Target(name, kind, logits.astype(np.float32), softmax_input, probs)
    axis = 1 if teacher.ndim >= 2 else None
    others = tuple(i for i in range(teacher.ndim) if i != axis)
    spread = teacher.astype(np.float64).std(axis=others, keepdims=True)
    floor = max(float(spread.max()) * 1e-6, 1e-12)
    return Target(name, kind, teacher, spread=np.maximum(spread, floor).astype(np.float32))


def _loss(target: Target, env: dict[str, torch.Tensor], idx: np.ndarray) -> torch.Tensor:
    teacher = torch.from_numpy(target.teacher[idx])
    if target.kind == "kl":
        if target.logits_of is not None:
            student = env[target.logits_of]
        elif target.probabilities:
            student = torch.log(env[target.name].clamp_min(1e-12))
        else:
            student = env[target.name]
        t = TEMPERATURE
        return (
            F.kl_div(
                F.log_softmax(student / t, dim=-1),
                F.log_softmax(teacher / t, dim=-1),
                log_target=True,
                reduction="batchmean",
            )
            * t
            * t
        )
    assert target.spread is not None
    diff = (env[target.name] - teacher) / torch.from_numpy(target.spread)
    return (diff * diff).mean()


def train(
    student: Student,
    feeds: dict[str, np.ndarray],
    targets: list[Target],
    *,
    steps: int,
    lr: float,
    batch: int,
    seed: int = 0,
    exact: bool = False,
) -> tuple[float, float]:
    """Adam for ``steps`` minibatches; (first, last) loss, each over the whole train part.
    ``exact``: the model's batch size is fixed: every run gets exactly ``batch`` samples."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    n = len(next(iter(feeds.values())))
    optimizer = torch.optim.Adam(student.param_groups(lr, lr * SCALE_LR))
    # Cosine decay to zero: the last steps settle instead of oscillating around the
    # minimum (biases at a constant 1e-3 undid most of the gain on the digits MLP).
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))
    )
    first = _full_loss(student, feeds, targets, batch, exact)
    for step in range(steps):
        idx = rng.choice(n, size=min(batch, n), replace=False)
        env = student({k: torch.from_numpy(v[idx]) for k, v in feeds.items()})
        loss = sum((_loss(t, env, idx) for t in targets), torch.zeros(()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if student.books and (step + 1) % REASSIGN_EVERY == 0:
            student.reassign()
    student.reassign()
    return first, _full_loss(student, feeds, targets, batch, exact)


@torch.no_grad()
def _full_loss(
    student: Student, feeds: dict[str, np.ndarray], targets: list[Target], batch: int, exact: bool
) -> float:
    n = len(next(iter(feeds.values())))
    total, seen = 0.0, 0
    for start in range(0, n, batch):
        idx = np.arange(start, min(start + batch, n))
        if exact and len(idx) < batch:
            break
        seen += len(idx)
        env = student({k: torch.from_numpy(v[idx]) for k, v in feeds.items()})
        total += sum(float(_loss(t, env, idx)) for t in targets) * len(idx)
    return total / max(seen, 1)
