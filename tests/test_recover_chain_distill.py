"""``--recover gptq,distill`` end to end (opt-in: ``pytest -m distill``, needs .[distill]).

The digits MLP pruned 80% with int8 weights: GPTQ repairs the rounding, distillation
then trains from GPTQ's values against the original. Both rungs run and say so, GPTQ's
part is what ``--recover gptq`` alone does, and the result is never worse than GPTQ
alone on distillation's held-back samples: better when kept, GPTQ's own bytes when not."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcomp.methods.distill.passes import split
from onnxcomp.pipeline.compress import compress

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.distill

HARSH = {"prune_sparsity": 0.8, "quantize": "weights"}


def _top1(path, pixels) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": pixels})[0].argmax(1)


def _held_back(calib) -> np.ndarray:
    """The samples distillation held back (seed 0): neither rung trained on them."""
    pixels = np.load(calib)["pixels"]
    return pixels[split(len(pixels), 0)[1]]


def test_gptq_then_distill_beats_gptq_alone(digits, tmp_path):
    model, _, calib = digits
    alone = compress(model, tmp_path / "gptq.onnx", calib=str(calib), recover="gptq", **HARSH)
    chain = compress(
        model, tmp_path / "chain.onnx", calib=str(calib), recover="gptq,distill", **HARSH
    )
    said = [n for n in chain.notes if n.startswith(("recover gptq,distill", "distill"))]
    assert len(said) == 2, chain.notes
    assert said[0].startswith("recover gptq,distill: gptq repaired 3 layers")
    assert said[1].startswith("distill from the gptq result") and "; kept" in said[1]
    # the closed-form rung is --recover gptq's, layer for layer
    assert [(r.layer, r.method, r.error) for r in chain.recovered] == [
        (r.layer, r.method, r.error) for r in alone.recovered
    ]
    held = _held_back(calib)
    teacher = _top1(model, held)
    agree = {p: float((_top1(tmp_path / p, held) == teacher).mean()) for p in ("gptq.onnx",
             "chain.onnx")}  # fmt: skip
    assert agree["chain.onnx"] > agree["gptq.onnx"], agree


def test_a_rejected_rung_writes_the_gptq_result(digits, tmp_path):
    """A rate that wrecks every step (1e4, backed off twice to 1e2): the held-back loss is
    never better than GPTQ's start, so the guard writes GPTQ's file, byte for byte."""
    model, _, calib = digits
    compress(model, tmp_path / "gptq.onnx", calib=str(calib), recover="gptq", **HARSH)
    chain = compress(
        model, tmp_path / "chain.onnx", calib=str(calib), recover="gptq,distill",
        lr=1e4, distill_steps=25, **HARSH,
    )  # fmt: skip
    note = next(n for n in chain.notes if n.startswith("distill"))
    assert note.endswith("not kept: the gptq result is written"), note
    assert (tmp_path / "chain.onnx").read_bytes() == (tmp_path / "gptq.onnx").read_bytes()
