"""Codebook quantization and packed storage: the math, the storage forms, and models whose
packed and unpacked files decode to the same weights bit for bit inside onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from model_builders import (
    conv_net,
    embedding_model,
    if_model,
    loop_model,
    mlp_with_constants,
    ort_session,
    shared_weight_model,
)

from onnxcomp import compress
from onnxcomp.cli import main
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.methods.codebook.pack import Emitter, choose, decode_exact, emit_codes
from onnxcomp.numerics.codebook import fit_codebook, fit_values, gptq_assign, refit_values
from onnxcomp.recipe import load_recipe

DECODE_OPS = {"BitShift", "Mod", "CumSum", "ScatterElements", "ConstantOfShape", "Gather"}


_session = ort_session


def _feed(sess) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 3 for d in i.shape]
        if i.type == "tensor(float)":
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif i.type == "tensor(int64)":
            feed[i.name] = np.ones(shape, np.int64) if shape else np.array(2, np.int64)
        else:
            feed[i.name] = np.array(True)
    return feed


# --- math -------------------------------------------------------------------------------


def test_kmeans_beats_a_uniform_grid_on_bell_shaped_weights():
    x = np.random.default_rng(0).standard_normal(20000)
    values = fit_values(x, 16)
    assert values.size == 16 and np.all(np.diff(values) > 0)
    kmeans = np.mean((values[np.abs(x[:, None] - values).argmin(1)] - x) ** 2)
    grid = np.linspace(x.min(), x.max(), 16)
    uniform = np.mean((grid[np.abs(x[:, None] - grid).argmin(1)] - x) ** 2)
    assert kmeans < 0.6 * uniform
    assert np.array_equal(values, fit_values(x, 16))  # deterministic


def test_importance_pulls_the_codebook_toward_important_values():
    x = np.concatenate([np.linspace(-1, 1, 1000), np.linspace(5, 6, 1000)])
    imp = np.concatenate([np.full(1000, 1e-3), np.ones(1000)])
    plain, weighted = fit_values(x, 4), fit_values(x, 4, imp)
    assert np.sum(weighted >= 5) > np.sum(plain >= 5)


def test_pruned_zeros_stay_exact_and_take_code_zero():
    w = np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)
    w[np.abs(w) < 0.8] = 0
    book = fit_codebook(w, 3)
    assert book.values[0] == 0.0 and book.values.size == 8
    decoded = book.decode()
    assert np.array_equal(decoded == 0, w == 0)
    assert np.all(book.codes[w == 0] == 0)


def test_channel_scaled_codebook_decodes_to_values_times_scale():
    w = np.random.default_rng(2).standard_normal((16, 40)).astype(np.float32)
    w *= np.logspace(-2, 1, 16, dtype=np.float32)[:, None]
    book = fit_codebook(w, 4, axis=0)
    per_tensor = fit_codebook(w, 4)
    assert np.sum((book.decode() - w) ** 2) < np.sum((per_tensor.decode() - w) ** 2)


def test_gptq_assignment_and_refit_lower_the_output_error():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, 24)) @ rng.standard_normal((24, 24))
    h = x.T @ x
    w = rng.standard_normal((12, 24))
    book = fit_codebook(w, 3)
    plain = book.values[book.codes]
    codes = gptq_assign(w, h, book.values, None, None, None)

    def err(dec):
        return float(np.sum(((w - dec) @ x.T) ** 2))

    assert err(book.values[codes]) < err(plain)
    refit = refit_values([w], [h], [codes], book.values, [None], False)
    assert err(refit[codes]) <= err(book.values[codes]) * (1 + 1e-9)


# --- storage forms ----------------------------------------------------------------------


def _codes(n: int, bits: int, sparsity: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(1, 1 << bits, n)
    codes[rng.random(n) < sparsity] = 0
    return codes.astype(np.uint8)


@pytest.mark.parametrize(
    ("bits", "sparsity", "kind"),
    [(4, 0.0, "bits"), (2, 0.1, "bits"), (3, 0.0, "bits"), (5, 0.0, "bits"), (8, 0.0, "plain"),
     (4, 0.97, "sparse"), (2, 0.998, "sparse"), (3, 0.7, "mask")],
)  # fmt: skip
def test_each_form_decodes_exactly_in_onnxruntime(bits, sparsity, kind, tmp_path):
    codes = _codes(30001, bits, sparsity).reshape(30001, 1)
    form = choose(codes, 0, pack=True)
    assert form.kind == kind
    assert form.nbytes <= codes.size  # never larger than one byte per code
    assert np.array_equal(decode_exact(codes, form), codes.astype(np.int32))
    graph = ir.Graph([], [], nodes=[], name="g", opset_imports={"": 13})
    model = ir.Model(graph, ir_version=8)
    em = Emitter(graph, NameAllocator(model), "w")
    out = emit_codes(em, codes, form)
    for node in em.nodes:
        graph.append(node)
    out.dtype, out.shape = ir.DataType.INT32, ir.Shape(codes.shape)
    graph.outputs.append(out)
    path = tmp_path / "codes.onnx"
    ir.save(model, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    (got,) = _session(path).run(None, {})
    assert np.array_equal(got, codes.astype(np.int32))


def test_sparse_gaps_wider_than_the_field_get_fillers():
    codes = np.zeros(5000, np.uint8)
    codes[[3, 4, 2000, 4999]] = [1, 2, 3, 1]
    form = choose(codes, 0, pack=True)
    assert form.kind == "sparse"
    assert np.array_equal(decode_exact(codes, form), codes.astype(np.int32))


# --- models -----------------------------------------------------------------------------

MODELS = {
    "conv": conv_net,
    "constants": mlp_with_constants,
    "if": if_model,
    "shared": shared_weight_model,
    "embedding": embedding_model,
    "loop": loop_model,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_packed_model_equals_unpacked_bit_for_bit_and_folds_at_load(name, save_model, tmp_path):
    src = save_model(MODELS[name]())
    plain, packed = tmp_path / "plain.onnx", tmp_path / "packed.onnx"
    opts = dict(quantize="codebook", bits=3, prune_sparsity=0.6, allow_larger=True)
    r1 = compress(src, plain, **opts)
    r2 = compress(src, packed, pack=True, **opts)
    assert r1.quantized and r2.output_bytes <= r1.output_bytes
    for path in (plain, packed):
        onnx.checker.check_model(onnx.load(path), full_check=True)
    ref = _session(src)
    feed = _feed(ref)
    a = _session(plain).run(None, feed)
    b = _session(packed, tmp_path / "opt.onnx").run(None, feed)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)  # decode is exact: same weights, same outputs
    optimized = onnx.load(tmp_path / "opt.onnx").graph
    left = {n.op_type for n in optimized.node} & (DECODE_OPS - {"Gather"})
    assert not left  # nothing of the decode survives session creation
    if name == "conv":  # main-graph weights only: the decode Gathers are folded too
        assert not any(n.op_type == "Gather" for n in optimized.node)


def test_same_options_same_bytes(save_model, tmp_path):
    src = save_model(conv_net())
    for i in range(2):
        compress(src, tmp_path / f"{i}.onnx", quantize="codebook", bits=4, pack=True)
    assert (tmp_path / "0.onnx").read_bytes() == (tmp_path / "1.onnx").read_bytes()


def test_calibrated_codebook_uses_gptq_and_beats_plain(save_model, tmp_path):
    from model_builders import robust_fragile_model, write_data

    src = save_model(robust_fragile_model())
    data = tmp_path / "calib.npz"
    write_data(data)
    r = compress(src, tmp_path / "c.onnx", quantize="codebook", bits=2, pack=True, calib=data)
    assert r.recovered
    assert all(rec.error <= rec.baseline * (1 + 1e-6) for rec in r.recovered)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pack"], "--pack stores codebook codes"),
        (["--quantize", "codebook", "--bits", "9"], "9"),
    ],
)
def test_bad_options_exit_2(args, message, save_model, tmp_path, capsys):
    src = save_model(conv_net())
    code = main(["compress", str(src), "-o", str(tmp_path / "o.onnx"), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_reports_storage_and_fp32_speed(save_model, tmp_path, capsys):
    src = save_model(conv_net())
    out = tmp_path / "o.onnx"
    code = main(["compress", str(src), "-o", str(out), "--quantize", "codebook", "--pack",
                 "--allow-larger"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert "codebook (4-bit)" in text and "fp32 speed" in text


def test_inspect_names_each_weights_storage_form(save_model, tmp_path):
    from onnxcomp.cli.inspect_cmd import render
    from onnxcomp.inspect_model import inspect

    src = save_model(conv_net())
    out = tmp_path / "o.onnx"
    compress(src, out, quantize="codebook", bits=2, pack=True, allow_larger=True)
    forms = {f.name: f for f in inspect(out).storage}
    assert any("codebook k=4" in f.form for f in forms.values())
    assert all(f.bytes > 0 and f.elements > 0 for f in forms.values())
    assert "storage:" in render(inspect(out))
    plain = {f.name: f.form for f in inspect(src).storage}
    assert plain and all(form.startswith("dense float") for form in plain.values())


def test_check_says_a_codebook_model_runs_at_fp32_speed(save_model, tmp_path, capsys):
    src = save_model(conv_net())
    out = tmp_path / "o.onnx"
    compress(src, out, quantize="codebook", bits=4, allow_larger=True)
    assert main(["check", str(src), str(out), "--runs", "3"]) == 0
    assert "fp32 speed with fp32 memory" in capsys.readouterr().out


def test_a_lone_outlier_gets_its_own_value_instead_of_dragging_a_neighbour():
    # 767 bell-shaped values and one 20 sigma out: Lloyd alone leaves the outlier sharing
    # the tail's value (a quantile start) or parks values in the empty range (an even
    # start). 255 values for 767 points leave < 2% error once the outlier has its own.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(767) * 0.05, [1.0]])
    values = fit_values(x, 256)
    decoded = values[np.abs(x[:, None] - values).argmin(1)]
    assert np.isclose(decoded[-1], 1.0)
    assert np.linalg.norm(decoded - x) / np.linalg.norm(x) < 0.02


def test_a_huge_tensor_is_fitted_on_merged_runs_within_a_hair_of_the_full_fit(monkeypatch):
    import onnxcomp.numerics.codebook as cb

    x = np.random.default_rng(1).standard_normal(1 << 17)

    def sse(values):
        return float(np.sum((values[cb.nearest(values, x)] - x) ** 2))

    full = cb.fit_values(x, 16)
    monkeypatch.setattr(cb, "MAX_POINTS", 1 << 13)  # 16 values a run
    merged = cb.fit_values(x, 16)
    assert not np.array_equal(full, merged)  # the merged path ran
    assert sse(merged) <= sse(full) * 1.01


def test_a_layer_sets_its_own_bits(save_model, tmp_path):
    src = save_model(mlp_with_constants())
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'version = 1\n[compress]\nquantize = "codebook"\nbits = 4\n[layers.mm2]\nbits = 2\n'
    )
    out = tmp_path / "o.onnx"
    report = compress(src, out, load_recipe(recipe))
    ks = {r.name: r.k for r in report.quantized}
    assert ks == {"w1": 16, "w2": 4}  # w1 (read by mm1) keeps the global 4 bits
    # and the replay through the command line writes the same bytes
    again = tmp_path / "again.onnx"
    assert main(["compress", str(src), "--recipe", str(recipe), "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_a_dead_channel_stays_exactly_zero_under_channel_scales():
    """A BN-folded Conv with a gamma of 0 has an all-zero output channel; channel-scaled,
    it would decode to the code nearest 0 times a unit of 1, larger than live weights of
    RMS 0.01 here. Its scale is 0, so it decodes to 0 whatever its codes."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32) * np.geomspace(0.01, 1, 8)[
        :, None, None, None
    ].astype(np.float32)
    w[3] = 0.0
    book = fit_codebook(w, 4, axis=0)
    dec = book.decode()
    assert book.scale is not None and book.scale[3] == 0
    assert not dec[3].any()
    live = np.delete(np.arange(8), 3)
    rel = np.linalg.norm(dec[live] - w[live]) / np.linalg.norm(w[live])
    assert rel < 0.15  # 16 k-means levels on Gaussian values: ~0.1 (Lloyd-Max, 20 dB)
    # GPTQ codes divide rows by their scale: a dead row must not make them NaN
    mat = w.reshape(8, -1)
    h = np.eye(mat.shape[1])
    codes = gptq_assign(mat, h, book.values, book.scale, None, None)
    assert codes.min() >= 0 and codes.max() < book.values.size
    assert not (book.values[codes] * book.scale[:, None])[3].any()
