"""--recover distill without torch: the simulated codes are the stored codes, bit for bit,
and writing trained values back keeps the graph (names, op types, opsets, metadata)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from model_builders import conv_net

from onnxcomp.methods.distill.forms import (
    FULL_QMAX,
    REDUCED_QMAX,
    find_forms,
    nearest_codes,
    simulated_codes,
    write_back,
)
from onnxcomp.methods.weights.quantize_weights import QuantizeWeightsPass
from onnxcomp.numerics.scales import quantize_weight_symmetric
from onnxcomp.options import CompressOptions
from onnxcomp.pipeline.compress import compress_model


@pytest.mark.parametrize("qmax", [FULL_QMAX, REDUCED_QMAX])
def test_simulated_codes_equal_stored_codes(qmax):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32)
    w[w.__abs__() < 0.05] = 0  # pruned elements, and exact ties at half steps below
    q, scale = quantize_weight_symmetric(w, 0, qmax)
    shaped = scale.reshape(16, 1, 1, 1)
    assert np.array_equal(simulated_codes(w, shaped, qmax), q)
    # the decoded weight re-quantizes to its own codes (the student's starting point)
    assert np.array_equal(simulated_codes(q.astype(np.float32) * shaped, shaped, qmax), q)
    halves = (np.arange(-20, 20, dtype=np.float32) + 0.5) * shaped[0, 0, 0, 0]
    expect = np.clip(np.rint(halves / shaped[0, 0, 0, 0]), -qmax, qmax).astype(np.int8)
    assert np.array_equal(simulated_codes(halves, shaped[0, 0, 0], qmax), expect)


def _weights_model(decode_at_load: bool) -> ir.Model:
    model = ir.from_proto(conv_net())
    if decode_at_load:
        options = CompressOptions(quantize="weights", prune_sparsity=0.5)
        model, _ = compress_model(model, options)
    else:
        QuantizeWeightsPass()(model)
    return model


@pytest.mark.parametrize("decode_at_load", [False, True])
def test_forms_found_and_codes_reproduced(decode_at_load):
    model = _weights_model(decode_at_load)
    int8, books, floats = find_forms(model)
    assert len(int8) == 3 and not books
    assert {f.name for f in floats} >= {"b1", "bg"} or decode_at_load
    for form in int8:
        q = model.graph.initializers[form.codes].const_value.numpy()
        s = model.graph.initializers[form.scale].const_value.numpy().reshape(form.scale_shape)
        assert form.qmax == FULL_QMAX
        assert np.array_equal(simulated_codes(q.astype(np.float32) * s, s, form.qmax), q)


def _signature(model: ir.Model):
    graph = model.graph
    return (
        [(n.op_type, n.name, [i.name if i else None for i in n.inputs], [o.name for o in n.outputs])
         for n in graph],
        {k: (v.dtype, v.const_value.shape) for k, v in graph.initializers.items()},
        dict(model.opset_imports),
        dict(model.metadata_props),
        [v.name for v in graph.inputs],
        [v.name for v in graph.outputs],
    )  # fmt: skip


def test_write_back_keeps_the_graph():
    model = _weights_model(True)
    model.metadata_props["labels"] = "a,b"
    before = _signature(model)
    int8, _, floats = find_forms(model)
    values = {}
    for form in int8:
        s = model.graph.initializers[form.scale].const_value.numpy() * np.float32(1.01)
        q = model.graph.initializers[form.codes].const_value.numpy()
        latent = q.astype(np.float32) * s.reshape(form.scale_shape) * np.float32(1.02)
        values[form.scale] = s
        values[form.codes] = simulated_codes(latent, s.reshape(form.scale_shape), form.qmax)
    for f in floats:
        a = model.graph.initializers[f.name].const_value.numpy()
        values[f.name] = (a * 0.5).astype(a.dtype)
    changed = write_back(model, values)
    assert changed and _signature(model) == before
    for name, array in values.items():
        assert np.array_equal(model.graph.initializers[name].const_value.numpy(), array)
    with pytest.raises(ValueError, match="would change it"):
        write_back(model, {int8[0].codes: values[int8[0].codes].astype(np.int16)})


def test_nearest_codes():
    values = np.array([0.5, -1.0, 0.0, 2.0], np.float32)
    target = np.array([-2.0, -0.4, 0.1, 0.3, 1.2, 9.0], np.float32)
    assert nearest_codes(values, target).tolist() == [1, 2, 2, 0, 0, 3]


def test_held_back_split_is_seeded_and_disjoint():
    from onnxcomp.errors import OnnxcompError
    from onnxcomp.methods.distill.passes import split

    train, held = split(100)
    again = split(100)
    assert np.array_equal(train, again[0]) and np.array_equal(held, again[1])
    assert len(held) == 25 and not set(train) & set(held) and len(train) + len(held) == 100
    with pytest.raises(OnnxcompError, match="at least"):
        split(3)


def test_batch_axes_finds_a_time_major_output():
    """The axis that grows from one sample to two is the batch, even where the sequence is
    as long as the batch (4 steps, 4 samples); a fixed batch is read from the shapes."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from onnxcomp.methods.distill.teacher import TeacherStore, batch_axes

    nodes = [
        helper.make_node("Relu", ["x"], ["first"]),
        helper.make_node("Transpose", ["x"], ["steps"], perm=[1, 0, 2]),
    ]
    out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("first", "steps")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3])], out
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString())
    x = np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
    assert batch_axes(sess, {"x": x}, None, None) == {1}
    assert batch_axes(sess, {"x": x}, None, 2) == {1}  # batches of 2: [4, 2, 3]
    got = TeacherStore().run(sess, {"x": x}, 3, None, {1})
    np.testing.assert_array_equal(got[1], x)  # stored samples first, across batches
    np.testing.assert_array_equal(got[0], x)
