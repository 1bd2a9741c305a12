"""Every compressed form distillation trains, without torch: the numpy code path that
computes what the file will store equals, bit for bit, what the written file decodes to
(onnx numpy_helper for the stored codes, onnxruntime for the decoded weight), and the
write-back changes values only."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from _models import mlp
from model_builders import table_model
from onnx import numpy_helper

from onnxcomp.graph import opaque_types
from onnxcomp.methods.distill.forms import (
    block_codes,
    find_forms,
    simulated_codes,
    write_back,
)
from onnxcomp.methods.distill.repack import PackCodebookCodesPass, decoded_codes
from onnxcomp.methods.weights.pack_int8 import PackInt8Pass
from onnxcomp.numerics.blocks import expand
from onnxcomp.options import CompressOptions
from onnxcomp.pipeline.compress import compress_model

RNG = np.random.default_rng(0)


def _calib() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((4, 256)).astype(np.float32)} for _ in range(8)]


def _compressed(**kwargs) -> ir.Model:
    model, _ = compress_model(mlp(256, 128), CompressOptions(**kwargs))
    return ir.from_proto(opaque_types.to_proto(model))  # as the file is read back


def _array(model: ir.Model, name: str) -> np.ndarray:
    return model.graph.initializers[name].const_value.numpy()


def _signature(model: ir.Model):
    graph = model.graph
    return (
        [(n.op_type, n.domain, n.name, [i.name if i else None for i in n.inputs],
          [o.name for o in n.outputs], sorted(n.attributes)) for n in graph],
        {k: (v.const_value.dtype, tuple(v.const_value.shape))
         for k, v in graph.initializers.items()},
        dict(model.opset_imports), dict(model.metadata_props),
        [v.name for v in graph.inputs], [v.name for v in graph.outputs],
    )  # fmt: skip


def _decoded(model: ir.Model, names: list[str]) -> dict[str, np.ndarray]:
    """Values of the graph, by name, as onnxruntime computes them from the file."""
    proto = opaque_types.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    known = {o.name for o in proto.graph.output}
    for name in names:
        if name not in known:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = session.run(names, {"x": np.zeros((1, 256), np.float32)})
    return dict(zip(names, outs, strict=True))


def _stored(model: ir.Model, name: str) -> np.ndarray:
    """The initializer as the serialized file holds it (onnx numpy_helper)."""
    proto = opaque_types.to_proto(model)
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    return numpy_helper.to_array(tensor)


@pytest.mark.parametrize("symmetric", [True, False], ids=["int4", "uint4-zero-point"])
def test_int4_blocks_codes_are_the_file(symmetric):
    model = _compressed(quantize="int4", symmetric=symmetric)
    form = find_forms(model).int4[0]
    q = _array(model, form.codes).astype(np.int8)
    s = _array(model, form.scale)
    z = _array(model, form.zero).astype(np.int8) if form.zero else None
    k = q.shape[0]
    centred = q.astype(np.float32) - (expand(z, k, form.block_size) if z is not None else 0)
    start = centred * expand(s, k, form.block_size)
    assert np.array_equal(block_codes(start, s, z, form), q)  # the student starts at the file
    before = _signature(model)
    trained_s = (s * np.float32(1.07)).astype(np.float32)
    latent = start + RNG.normal(0, 0.6, start.shape).astype(np.float32) * expand(s, k, 32)
    latent[0, :4] = 100.0  # far past the range: clamps
    codes = block_codes(latent, trained_s, z, form)
    assert codes.min() >= form.lo and codes.max() <= form.hi and form.hi in codes
    write_back(model, {form.codes: codes, form.scale: trained_s})
    assert _signature(model) == before
    assert np.array_equal(_stored(model, form.codes).astype(np.int8), codes)
    dq = next(n for n in model.graph if n.op_type == "DequantizeLinear")
    decoded = _decoded(model, [dq.outputs[0].name])[dq.outputs[0].name]
    zero = expand(z, k, 32).astype(np.float32) if z is not None else 0
    expect = (codes.astype(np.float32) - zero) * expand(trained_s, k, 32)
    assert np.array_equal(decoded, expect)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quantize": "weights", "prune_sparsity": 0.75},
        {"quantize": "int8", "int8_families": ("matmul",)},
        {"quantize": "int8", "int8_families": ("dynamic", "matmul")},
        {"quantize": "int8", "int8_families": ("matmul",), "weight_range": "reduced"},
    ],
    ids=["decode-at-load", "int8-qdq", "int8-dynamic", "int8-7bit"],
)
def test_int8_codes_are_the_file(kwargs):
    data = {"calib": _calib(), "measure": "off"} if kwargs["quantize"] == "int8" else {}
    model = _compressed(**kwargs, **data)
    reduced = kwargs.get("weight_range") == "reduced"
    forms = find_forms(model, reduced=reduced).int8
    assert len(forms) == 2
    before = _signature(model)
    values = {}
    for form in forms:
        assert form.qmax == (63 if reduced else 127)
        q = _array(model, form.codes)
        s = _array(model, form.scale).astype(np.float32).reshape(form.scale_shape)
        assert np.array_equal(simulated_codes(q.astype(np.float32) * s, s, form.qmax), q)
        trained = (s * np.float32(0.97)).astype(np.float16 if form.half else np.float32)
        used = trained.astype(np.float32)  # what the file's Cast (or the value) gives
        latent = q * s + RNG.normal(0, 0.7, q.shape).astype(np.float32) * s
        latent[q == 0] = 0  # pruned stays pruned (the student's mask)
        codes = simulated_codes(latent, used, form.qmax)
        assert np.abs(codes).max() == form.qmax  # clamped at the machine's weight range
        assert np.array_equal(codes == 0, q == 0) or not kwargs.get("prune_sparsity")
        values[form.codes] = codes
        values[form.scale] = trained.reshape(_array(model, form.scale).shape)
    if kwargs["quantize"] == "weights":
        assert any(f.half for f in forms), "a float16 scale behind a Cast is a form too"
    write_back(model, values)
    assert _signature(model) == before
    for name, array in values.items():
        assert np.array_equal(_stored(model, name), array)


def test_packed_int8_decodes_to_the_trained_codes():
    model = _compressed(quantize="weights", prune_sparsity=0.75)
    form = find_forms(model).int8[0]
    q = _array(model, form.codes)
    codes = np.where(q != 0, np.clip(q + RNG.integers(-3, 4, q.shape), -127, 127), 0)
    write_back(model, {form.codes: codes.astype(np.int8)})
    cast = next(iter(model.graph.initializers[form.codes].uses())).node
    step = PackInt8Pass()
    step(model)
    assert step.packed and form.codes not in model.graph.initializers
    got = _decoded(model, [cast.inputs[0].name])[cast.inputs[0].name]
    assert np.array_equal(got, codes)


def test_packed_codebook_decodes_to_the_trained_codes():
    model = _compressed(quantize="codebook", bits=2, prune_sparsity=0.75)
    books = find_forms(model).books
    values = {}
    for book in books:
        q = _array(model, book.codes)
        table = _array(model, book.table)
        keep = q == 0 if table[0] == 0 else np.zeros(q.shape, bool)
        moved = RNG.integers(0, table.size, q.shape).astype(np.uint8)
        values[book.codes] = np.where(keep | (RNG.random(q.shape) < 0.7), q, moved)
        values[book.table] = (table * np.float32(1.1)).astype(np.float32)
    write_back(model, values)
    step = PackCodebookCodesPass()
    step(model)
    assert step.packed, "2-bit codes over 75% zeros pack"
    decoded = decoded_codes(model)
    for book in books:
        assert np.array_equal(decoded[book.decoded], values[book.codes].astype(np.int32))
    onnx.checker.check_model(opaque_types.to_proto(model), full_check=True)


def test_int4_embedding_rows_codes_are_the_file():
    model, _ = compress_model(ir.from_proto(table_model()), CompressOptions(quantize="int4"))
    model = ir.from_proto(opaque_types.to_proto(model))
    form = next(f for f in find_forms(model).int4 if f.axis == 1)
    q = _array(model, form.codes).astype(np.int8)
    s = _array(model, form.scale)
    rows = np.repeat(s, form.block_size, axis=1)
    assert np.array_equal(block_codes(q.astype(np.float32) * rows, s, None, form), q)
    latent = q * rows + RNG.normal(0, 0.6, q.shape).astype(np.float32) * rows
    trained = (s * np.float32(0.95)).astype(np.float32)
    codes = block_codes(latent, trained, None, form)
    write_back(model, {form.codes: codes, form.scale: trained})
    assert np.array_equal(_stored(model, form.codes).astype(np.int8), codes)
    ids = np.arange(0, 1024, 37, dtype=np.int64)
    proto = opaque_types.to_proto(model)
    proto.graph.output.append(onnx.helper.make_empty_tensor_value_info("emb"))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(["emb"], {"ids": ids})[0]
    expect = (codes.astype(np.float32) * np.repeat(trained, form.block_size, axis=1))[ids]
    assert np.array_equal(got, expect)


def test_write_back_keeps_a_scalar_a_scalar():
    """A trained scalar constant (GELU's 0.5, an attention scale) stays shape [] as
    write_back promises (np.ascontiguousarray wrote it as [1]: a graph whose fusion
    patterns or shape logic expect a scalar would differ from the original)."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    node = onnx.helper.make_node("Mul", ["x", "half"], ["y"])
    graph = onnx.helper.make_graph(
        [node], "g", [x], [y], [numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    )
    model = ir.from_proto(onnx.helper.make_model(graph))
    assert write_back(model, {"half": np.array(0.625, np.float32)}) == ["half"]
    stored = model.graph.initializers["half"].const_value
    assert stored is not None and stored.numpy().shape == () and float(stored.numpy()) == 0.625


def test_one_number_constants_are_not_trained():
    """GELU's 0.044715 or an attention scale define the function: distill trains the
    weight beside them and leaves them as they are (trained, onnxruntime stopped fusing
    the tanh GELU it recognises by those values)."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    nodes = [
        onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
        onnx.helper.make_node("Mul", ["h", "c"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.eye(4, dtype=np.float32), "w"),
        numpy_helper.from_array(np.array(0.044715, np.float32), "c"),
    ]
    model = ir.from_proto(
        onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y], inits))
    )
    assert [f.name for f in find_forms(model).floats] == ["w"]
