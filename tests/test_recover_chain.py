"""``--recover A,B``: a closed-form repair, then a trained rung from its values.

Parsing, the refusals (one line, exit 2), the passes the pipeline builds and the recipe
round trip; none of it needs torch (the end-to-end run is tests/test_recover_chain_distill.py,
``-m distill``)."""

from __future__ import annotations

import importlib.util
import re

import pytest
from model_builders import conv_net

from onnxcomp.cli import main
from onnxcomp.errors import OnnxcompError
from onnxcomp.methods.recover import BiasCorrectionPass, GPTQPass, SparseGPTPass
from onnxcomp.options import CompressOptions
from onnxcomp.passes.report import CompressReport
from onnxcomp.pipeline.build import When, build_pipeline
from onnxcomp.recipe import dump_toml, load_recipe, recipe_from_dict, recipe_to_dict


@pytest.fixture
def torch_found(monkeypatch):
    """The trained rungs' PyTorch check passes, whether or not torch is installed
    (nothing here imports it)."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return object() if name == "torch" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_methods_repair_and_trained():
    options = CompressOptions(quantize="int8", calib=[{}], recover="gptq, distill")
    assert options.recover_methods == ("gptq", "distill")
    assert (options.repair, options.trained) == ("gptq", "distill")
    one = CompressOptions(quantize="int8", calib=[{}], recover="blockwise")
    assert (one.recover_methods, one.repair, one.trained) == (("blockwise",), None, "blockwise")
    assert CompressOptions().recover_methods == ()


@pytest.mark.parametrize(
    ("recover", "kwargs", "message"),
    [
        ("gptq,magic", {}, "--recover must be one of"),
        ("gptq,", {}, "--recover must be one of"),
        ("distill,blockwise", {}, "one trained method at a time"),
        ("gptq,bias", {}, "one closed-form repair at a time"),
        ("gptq,gptq", {}, "one closed-form repair at a time"),
        ("distill,gptq", {}, "comes first (gptq,distill)"),
        ("gptq,distill,blockwise", {}, "at most two methods"),
        # each method's own preconditions, as alone
        ("gptq,distill", {"quantize": None, "prune_sparsity": 0.5}, "add --quantize"),
        ("sparsegpt,blockwise", {}, "--prune-sparsity"),
        (
            "bias,distill",
            {"quantize": "weights", "calib": None},
            "--recover bias,distill needs calibration data",
        ),
    ],
)
def test_chains_are_refused(torch_found, recover, kwargs, message):
    options = {"quantize": "int8", "calib": [{}], "recover": recover, **kwargs}
    with pytest.raises(OnnxcompError, match=re.escape(message)):
        CompressOptions(**options).validate()


def test_a_trained_rung_needs_torch(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a)
    )
    options = CompressOptions(quantize="int8", calib=[{}], recover="gptq,distill")
    with pytest.raises(OnnxcompError, match="--recover distill needs PyTorch"):
        options.validate()


def test_distill_options_need_distill_in_the_chain(torch_found):
    hint = {"quantize": "int8", "calib": [{}], "distill_hint": ("h",)}
    CompressOptions(recover="gptq,distill", **hint).validate()
    with pytest.raises(OnnxcompError, match="need --recover distill"):
        CompressOptions(recover="gptq,blockwise", **hint).validate()


@pytest.mark.parametrize(
    ("recover", "needle"),
    [
        ("distill,gptq", "comes first"),
        ("gptq,distill,blockwise", "at most two"),
        ("gptq,nope", "--recover must be one of"),
    ],
)
def test_cli_refuses_in_one_line(capsys, tmp_path, save_model, recover, needle):
    out = tmp_path / "o.onnx"
    args = ["compress", save_model(conv_net()), "-o", out, "--quantize", "int8"]
    code = main([str(a) for a in [*args, "--calib", tmp_path / "x.npz", "--recover", recover]])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not out.exists()


def _passes(options: CompressOptions) -> list:
    """The pipeline's passes, the ones a When wraps included."""
    found = []
    for p in build_pipeline(options, CompressReport()).passes:
        found += list(p.passes.passes) if isinstance(p, When) else [p]
    return found


@pytest.mark.parametrize(
    ("recover", "kwargs", "repair"),
    [
        ("gptq,distill", {"quantize": "int8"}, GPTQPass),
        ("bias,distill", {"quantize": "weights"}, BiasCorrectionPass),
        ("sparsegpt,blockwise", {"prune_sparsity": 0.5}, SparseGPTPass),
    ],
)
def test_the_pipeline_runs_the_repair_then_trains_from_it(torch_found, recover, kwargs, repair):
    """The closed-form pass where it stands alone, the trained one last but packing, told
    which repair it starts from (its guard compares against that result)."""
    from onnxcomp.methods.distill import DistillPass
    from onnxcomp.methods.distill.blockwise import BlockwisePass

    options = CompressOptions(calib=[{}], recover=recover, **kwargs)
    options.validate()
    passes = _passes(options)
    trained = DistillPass if recover.endswith("distill") else BlockwisePass
    kinds = [type(p) for p in passes]
    assert repair in kinds and trained in kinds
    assert kinds.index(repair) < kinds.index(trained)
    assert passes[kinds.index(trained)].start == recover.split(",")[0]
    alone = _passes(CompressOptions(calib=[{}], recover=recover.split(",")[1], **kwargs))
    assert next(p for p in alone if isinstance(p, trained)).start is None


def test_recipe_records_and_replays_the_chain(torch_found, tmp_path):
    options = CompressOptions(
        quantize="int8", calib=str(tmp_path / "c.npz"), recover="gptq, distill", lr=1e-4
    )
    options.validate()
    saved = recipe_to_dict(options)["compress"]
    assert saved["recover"] == "gptq,distill"
    # a distilled model depends on its training: steps, rate and seed always written
    assert {"distill_steps", "lr", "seed"} <= set(saved)
    path = tmp_path / "r.toml"
    path.write_text(dump_toml(options))
    assert 'recover = "gptq,distill"' in path.read_text()
    replayed = load_recipe(path)
    assert replayed.recover == "gptq,distill"
    assert (replayed.distill_steps, replayed.lr, replayed.seed) == (200, 1e-4, 0)
    assert recipe_to_dict(replayed)["compress"] == recipe_to_dict(options)["compress"]


def test_recipe_refuses_a_bad_chain(torch_found):
    raw = {"compress": {"quantize": "int8", "calib": "c.npz", "recover": "distill,gptq"}}
    with pytest.raises(
        OnnxcompError, match=re.escape("r.toml: --recover distill,gptq: the closed-form")
    ):
        recipe_from_dict(raw, where="r.toml")
    raw["compress"]["recover"] = ["gptq", "distill"]
    with pytest.raises(
        OnnxcompError, match=re.escape("'compress.recover' has a value of the wrong type")
    ):
        recipe_from_dict(raw, where="r.toml")


def test_one_method_recipes_are_unchanged():
    """A single method is recorded as before, and only distill writes its training."""
    for method, extra in (("gptq", set()), ("distill", {"distill_steps", "lr", "seed"})):
        options = CompressOptions(quantize="int8", calib="c.npz", recover=method)
        saved = recipe_to_dict(options)["compress"]
        assert saved == {"quantize": "int8", "calib": "c.npz", "recover": method} | {
            k: getattr(options, k) for k in extra
        }
