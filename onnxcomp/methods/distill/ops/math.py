"""Elementwise, matrix, reduction, comparison and normalization ops."""

from __future__ import annotations

import functools
from typing import Any

import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxcomp.methods.distill.ops.common import (
    Fn,
    Maker,
    fail,
    float_,
    given,
    int_,
    ints,
    is_int,
    string,
    to_list,
)  # fmt: skip


def _unary(fn: Any) -> Maker:
    return lambda node, opset: lambda x: [fn(x[0])]


def _div(node: ir.Node, opset: int) -> Fn:
    def run(x: list[Any]) -> list[Any]:
        a, b = x
        if is_int(a) and is_int(b):  # C integer division truncates toward zero
            return [torch.div(a, b, rounding_mode="trunc")]
        return [a / b]

    return run


def _pow(node: ir.Node, opset: int) -> Fn:
    def run(x: list[Any]) -> list[Any]:
        a, b = x
        if b.dim() == 0 and not b.requires_grad and float(b) == 2.0 and a.is_floating_point():
            return [a * a]
        return [torch.pow(a, b.to(a.dtype) if a.is_floating_point() else b).to(a.dtype)]

    return run


def _mod(node: ir.Node, opset: int) -> Fn:
    fmod = int_(node, "fmod", 0)
    return lambda x: [torch.fmod(x[0], x[1]) if fmod else torch.remainder(x[0], x[1])]


def _variadic(fn: Any) -> Maker:
    return lambda node, opset: lambda x: [functools.reduce(fn, x)]


def _mean(node: ir.Node, opset: int) -> Fn:
    return lambda x: [functools.reduce(torch.add, x) / len(x)]


def _matmul(node: ir.Node, opset: int) -> Fn:
    return lambda x: [torch.matmul(x[0], x[1])]


def _gemm(node: ir.Node, opset: int) -> Fn:
    ta, tb = int_(node, "transA", 0), int_(node, "transB", 0)
    alpha, beta = float_(node, "alpha", 1.0), float_(node, "beta", 1.0)

    def run(x: list[Any]) -> list[Any]:
        a, b, c = x[0], x[1], given(x, 2)
        a = a.transpose(0, 1) if ta else a
        b = b.transpose(0, 1) if tb else b
        y = a @ b if alpha == 1.0 else alpha * (a @ b)
        if c is not None:
            y = y + (c if beta == 1.0 else beta * c)
        return [y]

    return run


def _einsum(node: ir.Node, opset: int) -> Fn:
    equation = string(node, "equation", "")
    return lambda x: [torch.einsum(equation, *x)]


def _clip(node: ir.Node, opset: int) -> Fn:
    if opset < 11:
        low, high = float_(node, "min", float("-inf")), float_(node, "max", float("inf"))
        return lambda x: [torch.clamp(x[0], low, high)]

    def run(x: list[Any]) -> list[Any]:
        lo, hi = given(x, 1), given(x, 2)
        y = x[0]
        fixed = [b is None or (b.numel() == 1 and not b.requires_grad) for b in (lo, hi)]
        if all(fixed) and y.is_floating_point():  # one pass with scalar bounds
            return [torch.clamp(y, *(None if b is None else float(b) for b in (lo, hi)))]
        if lo is not None:
            y = torch.maximum(y, lo.to(y.dtype))
        if hi is not None:
            y = torch.minimum(y, hi.to(y.dtype))
        return [y]

    return run


def _hard_sigmoid(node: ir.Node, opset: int) -> Fn:
    alpha, beta = float_(node, "alpha", 0.2), float_(node, "beta", 0.5)
    return lambda x: [torch.clamp(alpha * x[0] + beta, 0.0, 1.0)]


def _hard_swish(node: ir.Node, opset: int) -> Fn:
    return lambda x: [x[0] * torch.clamp(x[0] / 6.0 + 0.5, 0.0, 1.0)]


def _leaky(node: ir.Node, opset: int) -> Fn:
    alpha = float_(node, "alpha", 0.01)
    return lambda x: [F.leaky_relu(x[0], alpha)]


def _prelu(node: ir.Node, opset: int) -> Fn:
    return lambda x: [torch.where(x[0] < 0, x[0] * x[1], x[0])]


def _elu(node: ir.Node, opset: int) -> Fn:
    alpha = float_(node, "alpha", 1.0)
    return lambda x: [F.elu(x[0], alpha)]


def _selu(node: ir.Node, opset: int) -> Fn:
    alpha = float_(node, "alpha", 1.67326319217681884765625)
    gamma = float_(node, "gamma", 1.05070102214813232421875)
    return lambda x: [gamma * torch.where(x[0] > 0, x[0], alpha * (torch.exp(x[0]) - 1))]


def _gelu(node: ir.Node, opset: int) -> Fn:
    approximate = string(node, "approximate", "none")
    if approximate not in ("none", "tanh"):
        fail(node, f"approximate='{approximate}'")
    return lambda x: [F.gelu(x[0], approximate=approximate)]


def _softmax(kind: str) -> Maker:
    def make(node: ir.Node, opset: int) -> Fn:
        fn = torch.softmax if kind == "Softmax" else torch.log_softmax
        axis = int_(node, "axis", -1 if opset >= 13 else 1)
        if opset >= 13:
            return lambda x: [fn(x[0], dim=axis)]

        def coerced(x: list[Any]) -> list[Any]:  # before 13: over the flattened tail
            shape = x[0].shape
            a = axis % max(x[0].dim(), 1)
            flat = x[0].reshape(*shape[:a], -1)
            return [fn(flat, dim=-1).reshape(shape)]

        return coerced

    return make


def _reduce_axes(node: ir.Node, x: list[Any], from_input: bool) -> list[int] | None:
    if from_input:
        axes_t = given(x, 1)
        return to_list(axes_t) if axes_t is not None and axes_t.numel() else None
    return ints(node, "axes")


def _reduce(kind: str) -> Maker:
    def make(node: ir.Node, opset: int) -> Fn:
        keep = bool(int_(node, "keepdims", 1))
        noop = bool(int_(node, "noop_with_empty_axes", 0))
        from_input = opset >= (13 if kind == "ReduceSum" else 18)

        def run(x: list[Any]) -> list[Any]:
            axes = _reduce_axes(node, x, from_input)
            t = x[0]
            if axes is None:
                if noop:
                    return [t]
                axes = list(range(t.dim()))
            dims = tuple(a % max(t.dim(), 1) for a in axes)
            if not dims:
                return [t]
            return [_REDUCERS[kind](t, dims, keep)]

        return run

    return make


def _amax(t: Any, dims: tuple[int, ...], keep: bool) -> Any:
    return torch.amax(t, dim=dims, keepdim=keep)


def _amin(t: Any, dims: tuple[int, ...], keep: bool) -> Any:
    return torch.amin(t, dim=dims, keepdim=keep)


def _prod(t: Any, dims: tuple[int, ...], keep: bool) -> Any:
    for d in sorted(dims, reverse=True):
        t = torch.prod(t, dim=d, keepdim=keep)
    return t


_REDUCERS: dict[str, Any] = {
    "ReduceMean": lambda t, d, k: torch.mean(t, dim=d, keepdim=k),
    "ReduceSum": lambda t, d, k: torch.sum(t, dim=d, keepdim=k),
    "ReduceMax": _amax,
    "ReduceMin": _amin,
    "ReduceProd": _prod,
    "ReduceL1": lambda t, d, k: torch.sum(t.abs(), dim=d, keepdim=k),
    "ReduceL2": lambda t, d, k: torch.sqrt(torch.sum(t * t, dim=d, keepdim=k)),
    "ReduceSumSquare": lambda t, d, k: torch.sum(t * t, dim=d, keepdim=k),
    "ReduceLogSumExp": lambda t, d, k: torch.logsumexp(t, dim=d, keepdim=k),
    "ReduceLogSum": lambda t, d, k: torch.log(torch.sum(t, dim=d, keepdim=k)),
}


def _arg(node: ir.Node, opset: int) -> Fn:
    axis, keep = int_(node, "axis", 0), bool(int_(node, "keepdims", 1))
    last = int_(node, "select_last_index", 0)
    fn = torch.argmax if node.op_type == "ArgMax" else torch.argmin

    def run(x: list[Any]) -> list[Any]:
        t = x[0].detach()
        if last:  # the last of equal extremes: search the flipped axis
            a = axis % t.dim()
            idx = fn(torch.flip(t, (a,)), dim=a, keepdim=keep)
            return [t.shape[a] - 1 - idx]
        return [fn(t, dim=axis, keepdim=keep)]

    return run


def _layer_norm(node: ir.Node, opset: int) -> Fn:
    axis, eps = int_(node, "axis", -1), float_(node, "epsilon", 1e-5)
    if int_(node, "stash_type", 1) != 1:
        fail(node, "stash_type other than float")
    extra = len(node.outputs) > 1

    def run(x: list[Any]) -> list[Any]:
        t, scale, bias = x[0], x[1], given(x, 2)
        shape = tuple(t.shape[axis % t.dim() :])
        weight = scale.expand(shape) if tuple(scale.shape) != shape else scale
        b = bias.expand(shape) if bias is not None and tuple(bias.shape) != shape else bias
        y = F.layer_norm(t, shape, weight, b, eps)
        if not extra:
            return [y]
        dims = tuple(range(axis % t.dim(), t.dim()))
        mean = t.mean(dim=dims, keepdim=True)
        var = ((t - mean) ** 2).mean(dim=dims, keepdim=True)
        return [y, mean, torch.rsqrt(var + eps)]

    return run


def _instance_norm(node: ir.Node, opset: int) -> Fn:
    eps = float_(node, "epsilon", 1e-5)
    return lambda x: [F.instance_norm(x[0], weight=x[1], bias=x[2], eps=eps)]


def _where(node: ir.Node, opset: int) -> Fn:
    return lambda x: [torch.where(x[0].bool(), x[1], x[2])]


def _cumsum(node: ir.Node, opset: int) -> Fn:
    exclusive, reverse = int_(node, "exclusive", 0), int_(node, "reverse", 0)

    def run(x: list[Any]) -> list[Any]:
        t, axis = x[0], int(x[1])
        if reverse:
            t = torch.flip(t, (axis,))
        y = torch.cumsum(t, dim=axis).to(t.dtype)
        if exclusive:
            y = y - t
        return [torch.flip(y, (axis,)) if reverse else y]

    return run


def _bitshift(node: ir.Node, opset: int) -> Fn:
    right = string(node, "direction", "") == "RIGHT"
    return lambda x: [
        torch.bitwise_right_shift(x[0], x[1]) if right else torch.bitwise_left_shift(x[0], x[1])
    ]


def _cmp(fn: Any) -> Maker:
    return lambda node, opset: lambda x: [fn(x[0].detach(), x[1].detach())]


def _round(t: Any) -> Any:
    return torch.round(t)  # half to even, as ONNX Round


OPS: dict[str, Maker] = {
    "Add": lambda n, o: lambda x: [x[0] + x[1]],
    "Sub": lambda n, o: lambda x: [x[0] - x[1]],
    "Mul": lambda n, o: lambda x: [x[0] * x[1]],
    "Div": _div,
    "Pow": _pow,
    "Mod": _mod,
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "Mean": _mean,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Einsum": _einsum,
    "Relu": _unary(torch.relu),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Sqrt": _unary(torch.sqrt),
    "Reciprocal": _unary(torch.reciprocal),
    "Erf": _unary(torch.erf),
    "Floor": _unary(torch.floor),
    "Ceil": _unary(torch.ceil),
    "Round": _unary(_round),
    "Sign": _unary(torch.sign),
    "Sin": _unary(torch.sin),
    "Cos": _unary(torch.cos),
    "Softplus": _unary(F.softplus),
    "Softsign": _unary(F.softsign),
    "Not": _unary(torch.logical_not),
    "Clip": _clip,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "LeakyRelu": _leaky,
    "PRelu": _prelu,
    "Elu": _elu,
    "Selu": _selu,
    "Gelu": _gelu,
    "Softmax": _softmax("Softmax"),
    "LogSoftmax": _softmax("LogSoftmax"),
    **{kind: _reduce(kind) for kind in _REDUCERS},
    "ArgMax": _arg,
    "ArgMin": _arg,
    "LayerNormalization": _layer_norm,
    "InstanceNormalization": _instance_norm,
    "Where": _where,
    "CumSum": _cumsum,
    "BitShift": _bitshift,
    "Equal": _cmp(torch.eq),
    "Less": _cmp(torch.lt),
    "LessOrEqual": _cmp(torch.le),
    "Greater": _cmp(torch.gt),
    "GreaterOrEqual": _cmp(torch.ge),
    "And": _cmp(torch.logical_and),
    "Or": _cmp(torch.logical_or),
    "Xor": _cmp(torch.logical_xor),
}


def _lp_norm(node: ir.Node, opset: int) -> Fn:
    axis, p = int_(node, "axis", -1), int_(node, "p", 2)
    if p not in (1, 2):
        fail(node, f"p={p}")

    def run(x: list[Any]) -> list[Any]:
        t = x[0]
        norm = (
            t.abs().sum(axis, keepdim=True)
            if p == 1
            else torch.sqrt((t * t).sum(axis, keepdim=True))
        )
        return [torch.where(norm == 0, t, t / norm)]

    return run


OPS["LpNormalization"] = _lp_norm
