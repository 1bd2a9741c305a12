"""Every cached corpus model's fp32 graph through the op table vs onnxruntime
(opt-in: ``pytest -m "real and distill"``; skips without the corpus cache or torch).

Tolerance: the largest relative error over the fp32 corpus is ~2e-5 of an output's
magnitude (paddle-ocr-det: 62 convolutions deep, float32 sums in another order), so
1e-4 of the output's largest magnitude leaves a margin of five and no more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.distill_ops import CORPUS, reference, rel_error, samples

pytestmark = [pytest.mark.real, pytest.mark.distill]
NAMES = sorted(p.parent.name for p in CORPUS.glob("*/model.onnx")) if CORPUS.exists() else []
ML_OPS = {"sklearn-digits"}  # ai.onnx.ml: no gradient, refused by name


@pytest.mark.parametrize("name", NAMES or ["(no corpus cache)"])
def test_corpus_graph_runs_like_onnxruntime(name: str) -> None:
    if not NAMES:
        pytest.skip(f"no corpus cache at {CORPUS}")
    torch = pytest.importorskip("torch")
    from onnxcomp.io.model_io import load
    from onnxcomp.methods.distill.ops.common import tensor_of
    from onnxcomp.methods.distill.optable import run_graph, unsupported

    path: Path = CORPUS / name / "model.onnx"
    model = load(path)
    if name in ML_OPS:
        assert all(op.startswith("ai.onnx.ml.") for op in unsupported(model.graph))
        return
    assert unsupported(model.graph) == []
    feeds = samples(model, CORPUS / name / "calib", 2)
    names, refs = reference(path, feeds)
    weights = {n: tensor_of(v.const_value.numpy()) for n, v in model.graph.initializers.items()}
    for feed, ref in zip(feeds, refs, strict=True):
        env = {**weights, **{k: torch.from_numpy(np.array(v)) for k, v in feed.items()}}
        with torch.no_grad():
            out = run_graph(model.graph, env)
        for out_name, r in zip(names, ref, strict=True):
            assert rel_error(out[out_name].numpy(), r) < 1e-4, out_name
