"""LSTM and GRU in ONNX's layouts (gates iofc and zrh), step by step over time.

The input projections of every step are one matmul; only the recurrent part loops.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
import torch

from onnxcomp.methods.distill.ops.common import Fn, fail, given, int_, string

_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


def _check(node: ir.Node) -> tuple[str, int]:
    direction = string(node, "direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        fail(node, f"direction={direction}")
    acts = node.attributes.get("activations")
    n_dirs = 2 if direction == "bidirectional" else 1
    if acts is not None and list(acts.as_strings()) != _DEFAULT_ACTS[node.op_type] * n_dirs:
        fail(node, f"activations={list(acts.as_strings())}")
    if node.attributes.get("clip") is not None:
        fail(node, "clip")
    if int_(node, "input_forget", 0):
        fail(node, "input_forget=1")
    if int_(node, "layout", 0):
        fail(node, "layout=1")
    return direction, n_dirs


def _full_lengths(node: ir.Node, lens: Any, seq: int) -> None:
    if lens is not None and bool((lens != seq).any()):
        fail(node, "sequence_lens shorter than the sequence")


def _lstm(node: ir.Node, opset: int) -> Fn:
    direction, n_dirs = _check(node)

    def run(x: list[Any]) -> list[Any]:
        xs, w, r = x[0], x[1], x[2]
        b, lens, h0, c0 = given(x, 3), given(x, 4), given(x, 5), given(x, 6)
        if given(x, 7) is not None:
            fail(node, "peepholes (input P)")
        seq, batch = xs.shape[0], xs.shape[1]
        _full_lengths(node, lens, seq)
        hidden = r.shape[-1]
        ys, hs, cs = [], [], []
        for d in range(n_dirs):
            reverse = direction == "reverse" or d == 1
            gx = xs @ w[d].transpose(0, 1)  # [seq, batch, 4H]
            if b is not None:
                gx = gx + b[d, : 4 * hidden] + b[d, 4 * hidden :]
            h = h0[d] if h0 is not None else xs.new_zeros(batch, hidden)
            c = c0[d] if c0 is not None else xs.new_zeros(batch, hidden)
            rt = r[d].transpose(0, 1)
            out = [None] * seq
            for t in range(seq - 1, -1, -1) if reverse else range(seq):
                gates = gx[t] + h @ rt
                i, o, f, g = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                out[t] = h
            ys.append(torch.stack(out))
            hs.append(h)
            cs.append(c)
        y = torch.stack(ys, dim=1)  # [seq, dirs, batch, H]
        return [y, torch.stack(hs), torch.stack(cs)][: len(node.outputs)]

    return run


def _gru(node: ir.Node, opset: int) -> Fn:
    direction, n_dirs = _check(node)
    before = int_(node, "linear_before_reset", 0)

    def run(x: list[Any]) -> list[Any]:
        xs, w, r = x[0], x[1], x[2]
        b, lens, h0 = given(x, 3), given(x, 4), given(x, 5)
        seq, batch = xs.shape[0], xs.shape[1]
        _full_lengths(node, lens, seq)
        hidden = r.shape[-1]
        ys, hs = [], []
        for d in range(n_dirs):
            reverse = direction == "reverse" or d == 1
            gx = xs @ w[d].transpose(0, 1)  # [seq, batch, 3H]: z, r, h
            rb = b[d, 3 * hidden :] if b is not None else None
            if b is not None:
                gx = gx + b[d, : 3 * hidden]
            rz, rr, rh = r[d].chunk(3, dim=0)
            rzr = torch.cat([rz, rr]).transpose(0, 1)
            rh_t = rh.transpose(0, 1)
            h = h0[d] if h0 is not None else xs.new_zeros(batch, hidden)
            out = [None] * seq
            for t in range(seq - 1, -1, -1) if reverse else range(seq):
                xz, xr, xh = gx[t].chunk(3, dim=-1)
                hzr = h @ rzr
                if rb is not None:
                    hzr = hzr + rb[: 2 * hidden]
                hz, hr = hzr.chunk(2, dim=-1)
                z = torch.sigmoid(xz + hz)
                rg = torch.sigmoid(xr + hr)
                if before:
                    hh = h @ rh_t + (rb[2 * hidden :] if rb is not None else 0)
                    cand = torch.tanh(xh + rg * hh)
                else:
                    cand = torch.tanh(
                        xh + (rg * h) @ rh_t + (rb[2 * hidden :] if rb is not None else 0)
                    )
                h = (1 - z) * cand + z * h
                out[t] = h
            ys.append(torch.stack(out))
            hs.append(h)
        y = torch.stack(ys, dim=1)
        return [y, torch.stack(hs)][: len(node.outputs)]

    return run


OPS = {"LSTM": _lstm, "GRU": _gru}
