"""One block's stored values as torch parameters, and AdaRound on its integer codes.

Codes (int8 per channel at the weight's range, int4 blocks, MatMulInteger's int8) take
AdaRound's rectified-sigmoid soft rounding between floor and ceiling of the original
weight over the stored scale, its regularizer annealed so every element ends at 0 or 1;
the hard codes (``floor + (V >= 0)``, clamped) are what the file stores. Codebooks train
their values with the codes reassigned to the nearest value; float leaves (biases, scales,
pruned float weights) train directly. Pruned zeros stay zero. Nagel et al. 2020 (AdaRound),
Li et al. 2021 (BRECQ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from onnxcomp.methods.distill.blocks import Block
from onnxcomp.methods.distill.forms import nearest_codes
from onnxcomp.methods.distill.ops.common import Fn, Maker
from onnxcomp.methods.distill.ops.program import MAKERS

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch
BETA = (20.0, 2.0)  # the regularizer's exponent, annealed
WARMUP = 0.2  # share of the steps before the regularizer starts
REG = 10.0  # its weight, against the error relative to the stored codes (1 at the start)
REASSIGN_EVERY = 25
START = 0.1  # the soft rounding's start: this far from the stored code, towards the other
V_LR = 0.03  # Adam's rate on the rounding variables


def _cast(node: ir.Node, opset: int) -> Fn:
    """Cast; codes computed as floats (soft codes, integer products) stay floats."""
    to = ir.DataType(node.attributes.get_int("to", 1))
    plain = MAKERS[""]["Cast"](node, opset)
    if not to.is_integer():
        return plain
    return lambda x: [x[0]] if x[0].is_floating_point() else plain(x)


OVERRIDES: dict[str, Maker] = {"Cast": _cast}


def _maker(node: ir.Node) -> Maker | None:
    if (node.domain or "") in ("", "ai.onnx") and node.op_type in OVERRIDES:
        return OVERRIDES[node.op_type]
    return MAKERS.get(node.domain or "", {}).get(node.op_type)


def unsupported(block: Block) -> list[str]:
    return sorted({n.op_type for n in block.nodes if _maker(n) is None})


def runnable(node: ir.Node) -> bool:
    return _maker(node) is not None


Compiled = list[tuple[Fn, list[str], list[str]]]


def compile_nodes(nodes: list[ir.Node], opsets: dict[str, int]) -> Compiled:
    out = []
    for node in nodes:
        maker = _maker(node)
        assert maker is not None, node.op_type
        fn = maker(node, opsets.get(node.domain or "", 1 if node.domain else 21))
        out.append((fn, [v.name or "" if v is not None else "" for v in node.inputs],
                    [v.name or "" for v in node.outputs]))  # fmt: skip
    return out


def run_nodes(
    program: Compiled, env: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    extra = extra or {}
    for fn, ins, outs in program:
        for name, out in zip(outs, fn([env[n] if n else None for n in ins]), strict=False):
            if name:
                env[name] = out + extra[name] if name in extra else out
    return env


@dataclass
class Codes:
    """An integer code leaf under AdaRound (base: the original weight over the scale)."""

    name: str
    dtype: Any  # the stored numpy dtype
    floor: torch.Tensor
    v: torch.nn.Parameter
    lo: int
    hi: int
    mask: torch.Tensor | None

    def h(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def soft(self, hard: bool = False) -> torch.Tensor:
        up = (self.v >= 0).float() if hard else self.h()
        q = torch.clamp(self.floor + up, self.lo, self.hi)
        return q * self.mask if self.mask is not None else q

    def stored(self) -> np.ndarray:
        return self.soft(hard=True).detach().numpy().astype(np.int32).astype(self.dtype)


def adaround_codes(
    name: str, codes: np.ndarray, w_code: np.ndarray, scale: np.ndarray, lo: int, hi: int,
    keep_zeros: bool,
) -> Codes:  # fmt: skip
    """AdaRound's parameters for ``codes``, ``w_code`` the original weight and ``scale``
    the per-element step, both laid out as the codes are.

    Each element chooses between the floor and the ceiling of the original over the step,
    starting on the side the stored code is (its hard rounding is the stored codes, so
    the stored error is where it starts; GPTQ's or a clipped scale's codes are often far
    better than rounding to nearest). A stored code outside those two (GPTQ moved it
    further) chooses between itself and one above."""
    x = w_code.astype(np.float64) / np.where(scale == 0, 1.0, scale)
    floor = np.floor(x)
    q = codes.astype(np.float64)
    up = q == floor + 1
    floor = np.where(up | (q == floor), floor, q)
    rest = np.where(up, 1 - START, START)
    # sigmoid(v) * (zeta - gamma) + gamma = rest
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)
    mask = torch.from_numpy((codes != 0).astype(np.float32)) if keep_zeros else None
    return Codes(
        name, codes.dtype, torch.from_numpy(floor.astype(np.float32)),
        torch.nn.Parameter(torch.from_numpy(v.astype(np.float32))), lo, hi, mask,
    )  # fmt: skip


@dataclass
class Book:
    table: str
    codes_name: str
    decoded: str
    values: torch.nn.Parameter
    latent: torch.nn.Parameter
    codes: torch.Tensor
    vmask: torch.Tensor  # 0 at a zero value (pruned): it stays zero
    frozen: torch.Tensor  # elements coded to it keep their code

    @torch.no_grad()
    def reassign(self) -> None:
        values = (self.values * self.vmask).numpy()
        nearest = torch.from_numpy(nearest_codes(values, self.latent.numpy()).astype(np.int64))
        self.codes = torch.where(self.frozen, self.codes, nearest)


@dataclass
class Float:
    name: str
    half: bool
    w: torch.nn.Parameter
    mask: torch.Tensor | None

    def value(self) -> torch.Tensor:
        w = self.w * self.mask if self.mask is not None else self.w
        return w + (w.half().float() - w).detach() if self.half else w


class BlockParams:
    """What trains in one block, and the block's forward."""

    def __init__(
        self, block: Block, program: Compiled, fixed: dict[str, torch.Tensor],
        codes: list[Codes], books: list[Book], floats: list[Float],
    ) -> None:  # fmt: skip
        self.block, self.program, self.fixed = block, program, fixed
        self.codes, self.books, self.floats = codes, books, floats

    def substitutes(self, hard: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        env: dict[str, Any] = {c.name: c.soft(hard) for c in self.codes}
        extra: dict[str, Any] = {}
        for b in self.books:
            env[b.table] = b.values * b.vmask
            env[b.codes_name] = b.codes
            extra[b.decoded] = b.latent - b.latent.detach()
        for f in self.floats:
            env[f.name] = f.value()
        return env, extra

    def forward(self, inputs: dict[str, torch.Tensor], hard: bool = False) -> torch.Tensor:
        env, extra = self.substitutes(hard)
        out = run_nodes(self.program, {**self.fixed, **env, **inputs}, extra)
        return out[self.block.output]

    def groups(self, lr: float) -> list[dict[str, Any]]:
        groups = []
        if self.codes:  # AdaRound's own rate (the paper's 1e-3 on V)
            groups.append({"params": [c.v for c in self.codes], "lr": V_LR})
        trained = [p for b in self.books for p in (b.values, b.latent)]
        trained += [f.w for f in self.floats]
        if trained:
            groups.append({"params": trained, "lr": lr})
        return groups

    def regularizer(self, beta: float) -> torch.Tensor:
        total = torch.zeros(())
        for c in self.codes:
            total = total + (1 - (2 * c.h() - 1).abs().pow(beta)).mean()
        return total / max(len(self.codes), 1)

    @torch.no_grad()
    def stored(self) -> dict[str, np.ndarray]:
        out = {c.name: c.stored() for c in self.codes}
        for b in self.books:
            b.reassign()
            out[b.table] = (b.values * b.vmask).numpy().astype(np.float32)
            out[b.codes_name] = b.codes.numpy().astype(np.uint8)
        for f in self.floats:
            out[f.name] = f.value().numpy().astype(np.float16 if f.half else np.float32)
        return out


def optimize(
    params: BlockParams, inputs: dict[str, np.ndarray], target: np.ndarray, before: float,
    *, steps: int, lr: float, batch: int, seed: int,
) -> float:  # fmt: skip
    """Adam on the block's error relative to ``before`` (the stored values' error), plus
    AdaRound's regularizer; the error of the rebuilt hard values over all ``inputs``."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n = len(target)
    groups = params.groups(lr)
    if not groups or before == 0:
        return before
    optimizer = torch.optim.Adam(groups)
    for step in range(steps):
        idx = np.sort(rng.choice(n, size=min(batch, n), replace=False))
        y = params.forward({k: torch.from_numpy(v[idx]) for k, v in inputs.items()})
        t = torch.from_numpy(target[idx])
        loss = ((y - t) ** 2).mean() / (before + 1e-30)
        progress = step / steps
        if params.codes and progress >= WARMUP:
            mix = (progress - WARMUP) / (1 - WARMUP)
            beta = BETA[1] + 0.5 * (BETA[0] - BETA[1]) * (1 + np.cos(np.pi * mix))
            loss = loss + REG * params.regularizer(float(beta))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if params.books and (step + 1) % REASSIGN_EVERY == 0:
            for b in params.books:
                b.reassign()
    for b in params.books:
        b.reassign()
    return block_error(params, inputs, target, batch, hard=True)


@torch.no_grad()
def block_error(
    params: BlockParams, inputs: dict[str, np.ndarray], target: np.ndarray, batch: int,
    hard: bool = True,
) -> float:  # fmt: skip
    """Mean squared error of the block's output against ``target`` (hard codes)."""
    total, n = 0.0, len(target)
    for start in range(0, n, batch):
        part = {k: torch.from_numpy(v[start : start + batch]) for k, v in inputs.items()}
        y = params.forward(part, hard=hard)
        total += float(((y - torch.from_numpy(target[start : start + batch])) ** 2).sum())
    return total / max(target.size, 1)
