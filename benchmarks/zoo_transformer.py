"""A BERT-style encoder written with onnx.helper, from a dict of weights.

The same builder serves two zoo entries: a synthetic 4-layer encoder with a classifier
head (random weights), and all-MiniLM-L6-v2 (real weights read from safetensors, see
zoo_minilm.py). Weight names follow the Hugging Face BERT layout so both share it.
Post-LayerNorm blocks, GELU via Erf, attention mask added to the scores, masked mean
pooling: the ops a transformer export really contains (Gather, MatMul, Softmax,
LayerNormalization, Erf, Transpose, Reshape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization


@dataclass(frozen=True)
class BertConfig:
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    ffn: int = 1024
    vocab: int = 8000
    seq: int = 128
    classes: int = 0  # > 0: a classifier head producing "logits"
    normalize: bool = False  # L2-normalise the pooled embedding (sentence-transformers)
    eps: float = 1e-12


class _Graph:
    """Tiny helper that names nodes and collects initializers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
        """PyTorch Linear (weight [out, in]) as MatMul with the transposed weight + Add."""
        w = self.const(f"{prefix}.weight", np.ascontiguousarray(weights[f"{prefix}.weight"].T))
        b = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def layer_norm(self, x: str, weights: dict[str, np.ndarray], prefix: str, eps: float) -> str:
        g = self.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
        b = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("LayerNormalization", [x, g, b], axis=-1, epsilon=eps)


def _attention(g: _Graph, x: str, mask: str, w: dict, prefix: str, cfg: BertConfig) -> str:
    head = cfg.hidden // cfg.heads
    split = g.const(f"{prefix}.split_shape", np.array([0, -1, cfg.heads, head], np.int64))
    q = g.op("Transpose", [g.op("Reshape", [g.linear(x, w, f"{prefix}.self.query"), split])],
             perm=[0, 2, 1, 3])  # fmt: skip
    k = g.op("Transpose", [g.op("Reshape", [g.linear(x, w, f"{prefix}.self.key"), split])],
             perm=[0, 2, 3, 1])  # fmt: skip
    v = g.op("Transpose", [g.op("Reshape", [g.linear(x, w, f"{prefix}.self.value"), split])],
             perm=[0, 2, 1, 3])  # fmt: skip
    scale = g.const(f"{prefix}.scale", np.array(1.0 / np.sqrt(head), np.float32))
    scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), mask])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    merge = g.const(f"{prefix}.merge_shape", np.array([0, -1, cfg.hidden], np.int64))
    context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merge])
    out = g.op("Add", [g.linear(context, w, f"{prefix}.output.dense"), x])
    return g.layer_norm(out, w, f"{prefix}.output.LayerNorm", cfg.eps)


def _gelu(g: _Graph, x: str, prefix: str) -> str:
    inv_sqrt2 = g.const(f"{prefix}.inv_sqrt2", np.array(1 / np.sqrt(2.0), np.float32))
    one = g.const(f"{prefix}.one", np.array(1.0, np.float32))
    half = g.const(f"{prefix}.half", np.array(0.5, np.float32))
    erf = g.op("Add", [g.op("Erf", [g.op("Mul", [x, inv_sqrt2])]), one])
    return g.op("Mul", [g.op("Mul", [x, half]), erf])


def bert_graph(weights: dict[str, np.ndarray], cfg: BertConfig, name: str) -> onnx.ModelProto:
    """The encoder; inputs input_ids / attention_mask [batch, seq] int64."""
    g = _Graph()
    w = weights
    words = g.const("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"])
    # Fixed sequence length: position + token-type-0 embeddings fold into one constant.
    pos = w["embeddings.position_embeddings.weight"][: cfg.seq]
    pos = pos + w["embeddings.token_type_embeddings.weight"][0]
    pos_name = g.const("embeddings.position_plus_type", pos.astype(np.float32)[None])
    x = g.op("Add", [g.op("Gather", [words, "input_ids"], axis=0), pos_name])
    x = g.layer_norm(x, w, "embeddings.LayerNorm", cfg.eps)
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    one = g.const("mask.one", np.array(1.0, np.float32))
    big = g.const("mask.neg", np.array(-10000.0, np.float32))
    axes12 = g.const("mask.axes", np.array([1, 2], np.int64))
    mask = g.op("Unsqueeze", [g.op("Mul", [g.op("Sub", [one, mask_f]), big]), axes12])
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}"
        x = _attention(g, x, mask, w, f"{p}.attention", cfg)
        h = _gelu(g, g.linear(x, w, f"{p}.intermediate.dense"), p)
        h = g.op("Add", [g.linear(h, w, f"{p}.output.dense"), x])
        x = g.layer_norm(h, w, f"{p}.output.LayerNorm", cfg.eps)
    # masked mean pooling over the sequence
    axis_last = g.const("pool.axis_last", np.array([-1], np.int64))
    axis_seq = g.const("pool.axis_seq", np.array([1], np.int64))
    tiny = g.const("pool.tiny", np.array(1e-9, np.float32))
    m3 = g.op("Unsqueeze", [mask_f, axis_last])
    total = g.op("ReduceSum", [g.op("Mul", [x, m3]), axis_seq], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [m3, axis_seq], keepdims=0), tiny])
    pooled = g.op("Div", [total, count])
    if cfg.normalize:
        pooled = g.op("LpNormalization", [pooled], axis=-1, p=2)
    if cfg.classes:
        pooled = g.linear(pooled, w, "classifier")
    out_name = "logits" if cfg.classes else "sentence_embedding"
    g.nodes[-1].output[0] = out_name
    width = cfg.classes or cfg.hidden
    graph = helper.make_graph(
        g.nodes,
        name,
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", cfg.seq]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", cfg.seq]),
        ],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", width])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    model.producer_name = "onnxcomp-benchmarks"
    onnx.checker.check_model(model)
    return model


def random_weights(cfg: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded weights in the Hugging Face layout; linear layers scaled by 1/sqrt(fan_in)."""
    rng = np.random.default_rng(seed)
    h, f = cfg.hidden, cfg.ffn
    w: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": rng.normal(0, 1.0, (cfg.vocab, h)),
        "embeddings.position_embeddings.weight": rng.normal(0, 0.5, (cfg.seq, h)),
        "embeddings.token_type_embeddings.weight": rng.normal(0, 0.1, (2, h)),
    }

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        w[f"{prefix}.weight"] = rng.normal(0, 1 / np.sqrt(n_in), (n_out, n_in))
        w[f"{prefix}.bias"] = rng.normal(0, 0.02, n_out)

    def norm(prefix: str) -> None:
        w[f"{prefix}.weight"] = 1 + 0.05 * rng.standard_normal(h)
        w[f"{prefix}.bias"] = 0.02 * rng.standard_normal(h)

    norm("embeddings.LayerNorm")
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            linear(f"{p}.attention.self.{part}", h, h)
        linear(f"{p}.attention.output.dense", h, h)
        norm(f"{p}.attention.output.LayerNorm")
        linear(f"{p}.intermediate.dense", f, h)
        linear(f"{p}.output.dense", h, f)
        norm(f"{p}.output.LayerNorm")
    if cfg.classes:
        linear("classifier", cfg.classes, h)
    return {k: v.astype(np.float32) for k, v in w.items()}


def random_tokens(cfg: BertConfig, count: int, seed: int) -> dict[str, np.ndarray]:
    """Zipf-distributed token ids with varied lengths and padding, like real batches."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, cfg.seq), np.int64)
    mask = np.zeros((count, cfg.seq), np.int64)
    for i in range(count):
        n = int(rng.integers(cfg.seq // 4, cfg.seq + 1))
        ids[i, :n] = np.minimum(rng.zipf(1.3, n), cfg.vocab - 1)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def build_synthetic(cfg: BertConfig, seed: int = 0) -> onnx.ModelProto:
    """Random encoder whose classifier logits are standardised on sample inputs.

    Mean-pooled random features share a large common direction, so an untouched random
    head gives every input the same class; centring and scaling each logit fixes that.
    """
    from onnxcomp.runtime.session import make_session

    weights = random_weights(cfg, seed)
    model = bert_graph(weights, cfg, "synthetic_bert")
    if not cfg.classes:
        return model
    session = make_session(model, threads=0)
    logits = session.run(None, random_tokens(cfg, 32, seed=1000 + seed))[0].astype(np.float64)
    mean, std = logits.mean(0), np.maximum(logits.std(0), 1e-6)
    weights["classifier.weight"] = (weights["classifier.weight"] / std[:, None]).astype(np.float32)
    weights["classifier.bias"] = ((weights["classifier.bias"] - mean) / std).astype(np.float32)
    return bert_graph(weights, cfg, "synthetic_bert")
