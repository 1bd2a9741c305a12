"""Recipes: per-layer settings, replay, and errors that name the key."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_builders import conv_net

from onnxcomp import CompressOptions, OnnxcompError, compress
from onnxcomp.cli import main
from onnxcomp.pipeline.layers import LayerOptions
from onnxcomp.recipe import dump_toml, load_recipe, save_recipe


def _write(tmp_path, text, name="r.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_per_layer_settings_apply(save_model, tmp_path):
    src = save_model(conv_net())
    recipe = _write(
        tmp_path,
        """
version = 1
[compress]
quantize = "weights"
prune-sparsity = 0.5
[layers.ConvTranspose]
precision = "float"
[layers.fc]
prune_sparsity = 0.0
""",
    )
    out = tmp_path / "o.onnx"
    result = compress(src, out, load_recipe(recipe))
    assert {q.name for q in result.quantized} == {"w1", "wg"}
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    assert weights["wt"].dtype == np.float32 and np.mean(weights["wt"] == 0) == 0.5
    assert np.count_nonzero(weights["wg_quantized"] == 0) == 0  # fc: sparsity 0
    assert np.mean(weights["w1_quantized"] == 0) >= 0.5


def test_round_trip_toml_and_json(tmp_path):
    opts = CompressOptions(quantize="weights", prune_sparsity=0.25, exclude=("Gemm",))
    opts.layers = {"conv1": LayerOptions(prune_sparsity=0.75, precision="weights")}
    for name in ("r.toml", "r.json"):
        back = load_recipe(save_recipe(opts, tmp_path / name))
        assert back == opts
    assert '[layers."conv1"]' in dump_toml(opts)


def test_cli_options_override_the_recipe(save_model, tmp_path, capsys):
    src = save_model(conv_net())
    recipe = _write(tmp_path, '[compress]\nquantize = "weights"\nprune_sparsity = 0.5\n')
    out = tmp_path / "o.onnx"
    assert (
        main(
            [
                "compress",
                str(src),
                "--recipe",
                str(recipe),
                "--prune-sparsity",
                "0.25",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    assert '"sparsity": 0.25' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[compress]\nprune_sparsty = 0.5\n", "unknown key 'compress.prune_sparsty'"),
        ("[compress]\nprune_sparsity = 1.5\n", "sparsity"),
        ("[compress]\nquantize = 8\n", "'compress.quantize' has a value of the wrong type"),
        ('[layers.fc]\nprecision = "int2"\n', "'layers.fc.precision' must be one of"),
        ("[layers.fc]\nbits = 4\n", "layer 'fc' sets bits: set quantize = \"codebook\""),
        ('[compress]\nquantize = "codebook"\n[layers.fc]\nbits = 9\n', "bits must be in 2..8"),
        ("[layers.fc]\nbitz = 4\n", "unknown key 'layers.fc.bitz'"),
        ('[layers.fc]\nprecision = "int8"\n[compress]\nquantize = "weights"\n', "int8"),
        ("[compress\n", "not a valid recipe"),
        ("version = 2\n", "'version' must be 1"),
        ("[oops]\n", "unknown key 'oops'"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path, text, needle):
    with pytest.raises(OnnxcompError, match=None) as err:
        load_recipe(_write(tmp_path, text))
    assert needle in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "r.toml"))


def test_bad_recipe_on_the_command_line(save_model, tmp_path, capsys):
    src = save_model(conv_net())
    recipe = _write(tmp_path, "[compress]\nfoo = 1\n")
    code = main(["compress", str(src), "--recipe", str(recipe), "-o", str(tmp_path / "o.onnx")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'compress.foo'" in err
