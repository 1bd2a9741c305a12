"""The compressed graph as a torch module: its stored values become parameters.

int8 weights train as a latent float weight and a relative scale (learned step size):
the forward rounds ``latent / scale`` half-to-even and clamps it to the weight's code
range, gradients pass straight through, so what the forward computes is exactly the codes
the file will hold. int4 blocks the same, one scale per block (zero points stay: an
integer offset has no gradient). A float16-stored scale is rounded to float16 in the
forward. Activation scales of full int8 stay the calibrated ones: they set the ranges
onnxruntime's fused int8 kernels were measured with, and one number per activation
learned from a few hundred samples overfits more than it recovers. Codebook weights keep
their codes during a stretch of steps (the gradient reaches both the values and a latent
weight) and are reassigned to the nearest value between stretches. Pruned zeros stay zero
through masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from onnxcomp.methods.distill.forms import (
    Forms,
    Int4Form,
    block_codes,
    nearest_codes,
    simulated_codes,
)
from onnxcomp.methods.distill.optable import run_graph


def _array(graph: ir.Graph, name: str) -> np.ndarray:
    value = graph.initializers[name].const_value
    assert value is not None
    return value.numpy()


def _torchable(array: np.ndarray) -> np.ndarray:
    """4-bit arrays (ml_dtypes) as int8/uint8, which torch holds."""
    if array.dtype.name in ("int4", "uint4"):
        return array.astype(np.int8 if array.dtype.name == "int4" else np.uint8)
    return np.array(array)


class Student(torch.nn.Module):
    def __init__(self, model: ir.Model, forms: Forms, keep_zeros: bool) -> None:
        super().__init__()
        self.graph = model.graph
        int8, books, floats = forms
        self.int8, self.books, self.floats = int8, books, floats
        self.latent = torch.nn.ParameterList()
        self.log_scale = torch.nn.ParameterList()
        self.values = torch.nn.ParameterList()
        self.book_latent = torch.nn.ParameterList()
        self.float_params = torch.nn.ParameterList()
        self.masks: list[torch.Tensor | None] = []
        self.scale0: list[torch.Tensor] = []
        for form in int8:
            q = _array(self.graph, form.codes).astype(np.float32)
            s0 = torch.from_numpy(_array(self.graph, form.scale).astype(np.float32))
            s0 = s0.reshape(form.scale_shape)
            self.scale0.append(s0)
            self.latent.append(torch.nn.Parameter(torch.from_numpy(q) * s0))
            self.log_scale.append(torch.nn.Parameter(torch.zeros(form.scale_shape)))
            self.masks.append(torch.from_numpy(q != 0).float() if keep_zeros else None)
        self.int4: list[Int4Form] = forms.int4
        self.latent4 = torch.nn.ParameterList()
        self.log_scale4 = torch.nn.ParameterList()
        self.scale4: list[torch.Tensor] = []
        self.zero4: list[torch.Tensor | None] = []
        self.masks4: list[torch.Tensor | None] = []
        for block in self.int4:
            q = _array(self.graph, block.codes).astype(np.float32)
            s0 = torch.from_numpy(_array(self.graph, block.scale).astype(np.float32))
            z = None
            if block.zero is not None:
                z = torch.from_numpy(_array(self.graph, block.zero).astype(np.float32))
            n = q.shape[block.axis]
            centred = torch.from_numpy(q) - (self._expand(z, block, n) if z is not None else 0)
            self.scale4.append(s0)
            self.zero4.append(z)
            self.latent4.append(torch.nn.Parameter(centred * self._expand(s0, block, n)))
            self.log_scale4.append(torch.nn.Parameter(torch.zeros_like(s0)))
            self.masks4.append((centred != 0).float() if keep_zeros else None)
        self.codes: list[torch.Tensor] = []
        self.frozen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (value mask, element mask)
        for book in books:
            values = _array(self.graph, book.table).astype(np.float32)
            codes = _array(self.graph, book.codes).astype(np.int64)
            self.values.append(torch.nn.Parameter(torch.from_numpy(values.copy())))
            self.book_latent.append(torch.nn.Parameter(torch.from_numpy(values[codes])))
            self.codes.append(torch.from_numpy(codes))
            zero = values == 0
            if not keep_zeros:
                zero[:] = False
            self.frozen.append((torch.from_numpy(~zero).float(), torch.from_numpy(zero[codes])))
        self.float_masks: list[torch.Tensor | None] = []
        for f in floats:
            w = _array(self.graph, f.name).astype(np.float32)
            self.float_params.append(torch.nn.Parameter(torch.from_numpy(w.copy())))
            self.float_masks.append(torch.from_numpy(w != 0).float() if keep_zeros else None)
        trained = {f.codes for f in int8} | {f.scale for f in int8}
        trained |= {f.codes for f in self.int4} | {f.scale for f in self.int4}
        trained |= {b.table for b in books} | {b.codes for b in books} | {f.name for f in floats}
        # The table folds 4-bit initializers as constants; these are trained, read from env.
        from onnxcomp.methods.distill.ops.program import program_for

        program = program_for(self.graph)
        for block in self.int4:
            program.folded.pop(block.codes, None)
        self.fixed = {
            name: torch.from_numpy(_torchable(v.const_value.numpy()))
            for name, v in self.graph.initializers.items()
            if name not in trained and v.const_value is not None
        }

    def param_groups(self, lr: float, scale_lr: float) -> list[dict[str, Any]]:
        floats = [*self.latent, *self.latent4, *self.values, *self.book_latent]
        floats += list(self.float_params)
        scales = [*self.log_scale, *self.log_scale4]
        return [{"params": floats, "lr": lr}, {"params": scales, "lr": scale_lr}]

    @staticmethod
    def _expand(v: torch.Tensor, block: Int4Form, n: int) -> torch.Tensor:
        """Block parameters repeated over their block, ``n`` long along the block axis."""
        return torch.repeat_interleave(v, block.block_size, dim=block.axis).narrow(block.axis, 0, n)

    def _int4(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes as float with straight-through gradients, block scales, masked latent)."""
        block = self.int4[i]
        w = self.latent4[i]
        mask = self.masks4[i]
        if mask is not None:
            w = w * mask
        scale = self.scale4[i] * torch.exp(self.log_scale4[i])
        n = w.shape[block.axis]
        x = w / self._expand(scale, block, n)
        zero = self.zero4[i]
        if zero is not None:
            x = x + self._expand(zero, block, n)
        q = torch.round(x).clamp(block.lo, block.hi)
        xc = x.clamp(block.lo, block.hi)
        return q + (xc - xc.detach()), scale, w

    def _int8(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes as float with straight-through gradients, scale, masked latent)."""
        qmax = self.int8[i].qmax
        scale = self.scale0[i] * torch.exp(self.log_scale[i])
        if self.int8[i].half:  # what the Cast of the float16 initializer gives
            scale = scale + (scale.half().float() - scale).detach()
        w = self.latent[i]
        mask = self.masks[i]
        if mask is not None:
            w = w * mask
        x = w / scale
        q = torch.round(x).clamp(-qmax, qmax)
        xc = x.clamp(-qmax, qmax)
        return q + (xc - xc.detach()), scale, w

    def substitutes(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(initializer name -> tensor, value name -> straight-through term added to it)."""
        env: dict[str, torch.Tensor] = {}
        extra: dict[str, torch.Tensor] = {}
        for i, form in enumerate(self.int8):
            codes, scale, _ = self._int8(i)
            env[form.codes] = codes
            stored = self.graph.initializers[form.scale].const_value
            assert stored is not None
            scale = scale.reshape(tuple(stored.shape.numpy()))
            env[form.scale] = scale.half() if form.half else scale
        for i, block in enumerate(self.int4):
            codes, scale, _ = self._int4(i)
            env[block.codes], env[block.scale] = codes, scale
        for i, book in enumerate(self.books):
            vmask, _ = self.frozen[i]
            env[book.table] = self.values[i] * vmask
            env[book.codes] = self.codes[i]
            latent = self.book_latent[i]
            extra[book.decoded] = latent - latent.detach()
        for i, f in enumerate(self.floats):
            w = self.float_params[i]
            mask = self.float_masks[i]
            if mask is not None:
                w = w * mask
            if f.half:
                w = w + (w.half().float() - w).detach()
            env[f.name] = w
        return env, extra

    def forward(
        self,
        feed: dict[str, torch.Tensor],
        keep: frozenset[str] | None = None,
        weights: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The graph's values by name: every one, or those in ``keep`` (what the losses
        read; the rest are freed as the forward goes). ``weights``: ``substitutes()``
        made once for several forwards (the chunks of one step)."""
        env, extra = weights if weights is not None else self.substitutes()
        env = {**self.fixed, **env, **feed}
        return run_graph(self.graph, env, extra, keep)

    @torch.no_grad()
    def reassign(self) -> None:
        """Each codebook element to the value nearest its latent weight (frozen stay)."""
        for i in range(len(self.books)):
            values = (self.values[i] * self.frozen[i][0]).numpy()
            nearest = torch.from_numpy(
                nearest_codes(values, self.book_latent[i].numpy()).astype(np.int64)
            )
            keep = self.frozen[i][1]
            self.codes[i] = torch.where(keep, self.codes[i], nearest)

    @torch.no_grad()
    def stored_values(self) -> dict[str, np.ndarray]:
        """What the file will hold, by initializer name, in the stored dtypes and shapes.

        int8 codes come from numerics/scales.quantize at the trained scale and must equal
        the forward's own codes bit for bit (a mismatch is a bug, not a tolerance)."""
        out: dict[str, np.ndarray] = {}
        for i, form in enumerate(self.int8):
            codes, scale, w = self._int8(i)
            mirror = simulated_codes(w.numpy(), scale.numpy(), form.qmax)
            if not np.array_equal(mirror.astype(np.float32), codes.numpy()):
                raise AssertionError(f"distill: codes of '{form.codes}' differ from the mirror")
            out[form.codes] = mirror
            stored = self.graph.initializers[form.scale].const_value
            assert stored is not None
            scale_array = scale.numpy().reshape(tuple(stored.shape.numpy()))
            out[form.scale] = scale_array.astype(np.float16 if form.half else np.float32)
        for i, block in enumerate(self.int4):
            codes, scale, w = self._int4(i)
            zero = self.zero4[i]
            mirror = block_codes(
                w.numpy(), scale.numpy(), None if zero is None else zero.numpy(), block
            )
            if not np.array_equal(mirror.astype(np.float32), codes.numpy()):
                raise AssertionError(f"distill: codes of '{block.codes}' differ from the mirror")
            out[block.codes] = mirror
            out[block.scale] = scale.numpy().astype(np.float32)
        for i, book in enumerate(self.books):
            out[book.table] = (self.values[i] * self.frozen[i][0]).numpy().astype(np.float32)
            out[book.codes] = self.codes[i].numpy().astype(np.uint8)
        env, _ = self.substitutes()
        for f in self.floats:
            array = env[f.name].numpy()
            out[f.name] = array.astype(np.float16 if f.half else np.float32)
        return out
