"""ONNX model-zoo CNNs that ship inside the onnx wheel, given seeded random weights.

The ``light_*`` models under ``onnx/backend/test/data/light`` keep the real architectures
but replace every weight with a ``ConstantOfShape`` placeholder so the wheel stays small.
We swap each placeholder for an initializer of the same shape: He-normal for Conv/Gemm
weights, BatchNorm with mean 0, var 1, scale 1, bias 0 (plus a little noise so channels
differ). The graph is then upgraded to opset 13, so every contender starts from the same
per-channel-capable model, and the pre-softmax scores become an extra ``logits`` output:
with random weights the softmax is almost flat, so fidelity is judged on the logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
TARGET_OPSET = 13
LOGITS = "logits"

# zoo name -> file stem under LIGHT_DIR
LIGHT_MODELS = {
    "resnet50": "light_resnet50",
    "densenet121": "light_densenet121",
    "inception_v1": "light_inception_v1",
    "inception_v2": "light_inception_v2",
    "shufflenet": "light_shufflenet",
    "squeezenet": "light_squeezenet",
    "vgg19": "light_vgg19",
    "alexnet": "light_bvlc_alexnet",
    "zfnet512": "light_zfnet512",
}


def _role(name: str, consumers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> str:
    """What a placeholder feeds decides how it is initialised."""
    for node, index in consumers.get(name, []):
        op = node.op_type
        if op in ("Conv", "Gemm", "MatMul") and index == 1:
            return "gemm_b" if op == "Gemm" else "conv_w"
        if op in ("Conv", "Gemm") and index == 2:
            return "bias"
        if op == "BatchNormalization":
            return ("x", "bn_scale", "bn_bias", "bn_mean", "bn_var")[index]
        if op == "Unsqueeze":  # caffe2 "Scale" layers: Unsqueeze -> Mul/Add
            lower = name.lower()
            return "bn_scale" if "scale" in lower or "_s_" in lower else "bn_bias"
    return "small"


def _random_weight(
    role: str, shape: tuple[int, ...], node: onnx.NodeProto | None, rng: np.random.Generator
) -> np.ndarray:
    if role == "conv_w":
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if role == "gemm_b":
        trans_b = any(a.name == "transB" and a.i for a in node.attribute) if node else False
        fan_in = shape[1] if trans_b else shape[0]
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if role == "bn_scale":
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if role == "bn_var":
        return rng.uniform(0.8, 1.2, shape)
    if role in ("bn_mean", "bn_bias", "bias"):
        return 0.05 * rng.standard_normal(shape)
    return 0.05 * rng.standard_normal(shape)


def materialize(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace ConstantOfShape placeholders by seeded random initializers, in place.

    The few normalisation parameters the light files keep as real numbers (first-layer
    BatchNorm statistics of the original) are reset too: they belong to the original
    weights, not ours, and would leave a layer scaled by 1/30.
    """
    rng = np.random.default_rng(seed)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    keep, new_inits, dropped = [], [], set()
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
        out = node.output[0]
        role = _role(out, consumers)
        users = consumers.get(out, [])
        value = _random_weight(role, shape, users[0][0] if users else None, rng)
        new_inits.append(numpy_helper.from_array(value.astype(np.float32), out))
        dropped.add(node.input[0])
    del graph.node[:]
    graph.node.extend(keep)
    remaining = [t for t in graph.initializer if t.name not in dropped] + new_inits
    for i, tensor in enumerate(remaining):
        role = _role(tensor.name, consumers)
        if role.startswith("bn_") and tensor.data_type == onnx.TensorProto.FLOAT:
            shape = tuple(tensor.dims)
            value = _random_weight(role, shape, None, rng).astype(np.float32)
            remaining[i] = numpy_helper.from_array(value, tensor.name)
    del graph.initializer[:]
    graph.initializer.extend(remaining)
    # Old IR listed every initializer as a graph input; keep only the real inputs.
    names = {t.name for t in graph.initializer}
    real_inputs = [v for v in graph.input if v.name not in names and v.name not in dropped]
    del graph.input[:]
    graph.input.extend(real_inputs)
    model.ir_version = max(model.ir_version, 7)  # IR >= 4: initializers need not be inputs
    return model


def _expose_logits(model: onnx.ModelProto) -> None:
    """Add the input of the final Softmax as a graph output named ``logits``."""
    outputs = {o.name for o in model.graph.output}
    for node in reversed(model.graph.node):
        if node.op_type == "Softmax" and node.output[0] in outputs:
            source = node.input[0]
            model.graph.node.append(helper.make_node("Identity", [source], [LOGITS]))
            model.graph.output.append(
                helper.make_tensor_value_info(LOGITS, onnx.TensorProto.FLOAT, None)
            )
            return


def _weight_layers(
    model: onnx.ModelProto, level: dict[str, int] | None = None
) -> list[tuple[onnx.NodeProto, int, int]]:
    """Conv/Gemm nodes with a constant weight: (node, output-channel axis, depth).

    Depth counts weight layers on the longest path from the input, so every layer of
    depth d only depends on layers of smaller depth; ``level`` receives every tensor's.
    """
    inits = {t.name for t in model.graph.initializer}
    level = {} if level is None else level
    layers = []
    for node in model.graph.node:  # the zoo graphs are stored in topological order
        depth = max((level.get(name, 0) for name in node.input if name), default=0)
        axis = None
        if node.op_type == "Conv" and node.input[1] in inits:
            axis = 0
        elif node.op_type == "Gemm" and node.input[1] in inits:
            axis = 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
        if axis is not None:
            depth = level.get(node.input[0], 0) + 1
            layers.append((node, axis, depth))
        for name in node.output:
            level[name] = depth
    return layers


def damp_residuals(model: onnx.ModelProto, alpha: float = 0.2) -> int:
    """Scale the deeper input of every residual Sum/Add, when a BatchNorm makes it, by alpha.

    Random residual networks are chaotic: each block adds a branch as large as the stream,
    so a tiny perturbation (quantization noise) grows block after block until the output
    is unrelated. Trained ResNets keep branches small (the zero-init-gamma practice); a
    BatchNorm scale of ``alpha`` on the branch does the same here. Returns blocks damped.
    """
    level: dict[str, int] = {}
    _weight_layers(model, level)
    producer = {out: node for node in model.graph.node for out in node.output}
    inits = {t.name: t for t in model.graph.initializer}
    damped = 0
    for node in model.graph.node:
        if node.op_type not in ("Sum", "Add") or len(node.input) != 2:
            continue
        if any(name in inits for name in node.input):
            continue
        branch = max(node.input, key=lambda name: level.get(name, 0))
        bn = producer.get(branch)
        if bn is None or bn.op_type != "BatchNormalization":
            continue
        for name in bn.input[1:3]:  # scale and bias
            value = numpy_helper.to_array(inits[name]) * np.float32(alpha)
            inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
        damped += 1
    return damped


def _ensure_bias(model: onnx.ModelProto, node: onnx.NodeProto, axis: int, inits: dict) -> None:
    """Give a bias-less Conv/Gemm a zero bias that standardising can then fill in."""
    if len(node.input) >= 3 and node.input[2]:
        return
    channels = numpy_helper.to_array(inits[node.input[1]]).shape[axis]
    name = f"{node.output[0]}_bench_bias"
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = name
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(channels, np.float32), name))
    inits[name] = model.graph.initializer[-1]


def standardize(model: onnx.ModelProto, samples: np.ndarray) -> None:
    """Rescale each Conv/Gemm so its outputs have zero mean, unit variance per channel.

    A trained network keeps its activations in a sane range; random He weights drift
    (residual sums grow, ReLU means pile up until every input gets the same class).
    Standardising every layer on sample inputs, shallowest first, gives a network whose
    activations are well scaled and whose outputs depend on the input.
    """
    from onnxcomp.runtime.session import make_session

    layers = _weight_layers(model)
    inits = {t.name: t for t in model.graph.initializer}
    for node, axis, _ in layers:
        _ensure_bias(model, node, axis, inits)
    input_name = model.graph.input[0].name
    for depth in range(1, max((d for *_, d in layers), default=0) + 1):
        todo = [(node, axis) for node, axis, d in layers if d == depth]
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        names = [node.output[0] for node, _ in todo]
        del probe.graph.output[:]
        for name in names:
            probe.graph.output.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
        session = make_session(probe, threads=0)
        stats: dict[str, list] = {name: [] for name in names}
        for i in range(samples.shape[0]):
            outs = session.run(names, {input_name: samples[i : i + 1]})
            for name, out in zip(names, outs, strict=True):
                stats[name].append(np.moveaxis(out, 1, 0).reshape(out.shape[1], -1))
        for node, axis in todo:
            flat = np.concatenate(stats[node.output[0]], axis=1).astype(np.float64)
            mean, std = flat.mean(1), flat.std(1)
            # a nearly constant channel must not be blown up into a noise amplifier
            std = np.maximum(std, max(0.1 * float(np.median(std)), 1e-6))
            w = numpy_helper.to_array(inits[node.input[1]])
            b = np.broadcast_to(numpy_helper.to_array(inits[node.input[2]]), mean.shape)
            shape = [1] * w.ndim
            shape[axis] = -1
            w = (w / std.reshape(shape)).astype(np.float32)
            b = ((b - mean) / std).astype(np.float32)
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(w, node.input[1]))
            inits[node.input[2]].CopyFrom(numpy_helper.from_array(b, node.input[2]))


def build_light(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Write ``<name>.onnx`` with random, standardised weights at opset 13; return its path."""
    src = LIGHT_DIR / f"{LIGHT_MODELS[name]}.onnx"
    model = onnx.load(str(src))
    materialize(model, seed)
    _expose_logits(model)
    damp_residuals(model)
    shape = tuple(d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim)
    standardize(model, images(shape, 4, seed=1000 + seed))
    model = version_converter.convert_version(model, TARGET_OPSET)
    model = onnx.shape_inference.infer_shapes(model)
    # Shape inference gives `logits` its real shape; drop stale intermediate value_info.
    del model.graph.value_info[:]
    model.producer_name = "onnxcomp-benchmarks"
    onnx.checker.check_model(model)
    path = out_dir / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def input_spec(model_path: Path) -> tuple[str, tuple[int, ...]]:
    """The single image input's name and fixed shape."""
    model = onnx.load(str(model_path), load_external_data=False)
    inp = model.graph.input[0]
    dims = tuple(d.dim_value or 1 for d in inp.type.tensor_type.shape.dim)
    return inp.name, dims


def images(shape: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    """Image-like inputs: smooth low-frequency structure plus pixel noise, normalised.

    White noise makes every activation look alike; smooth blobs give the spatially
    correlated statistics a CNN sees on photos, which matters for calibration ranges.
    """
    rng = np.random.default_rng(seed)
    _, c, h, w = shape
    coarse = rng.standard_normal((count, c, 7, 7)).astype(np.float32)
    reps = (int(np.ceil(h / 7)), int(np.ceil(w / 7)))
    smooth = np.kron(coarse, np.ones(reps, np.float32))[:, :, :h, :w]
    noise = 0.3 * rng.standard_normal((count, c, h, w)).astype(np.float32)
    return (smooth + noise).astype(np.float32)
