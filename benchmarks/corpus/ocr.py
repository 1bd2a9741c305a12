"""Corpus models: OCR (PaddleOCR recogniser, direction classifier, detector; ddddocr captcha).

The evaluation data is text rendered offline with Pillow and the Debian fonts DejaVu,
Liberation and FreeFont (a fixed list of files, so the bytes do not depend on what else is
installed), with a seeded mix of sizes, colours, blur and noise: hard enough that a bad
quantization loses lines, easy enough that fp32 gets nearly all of them. Calibration and
evaluation use different seeds and disjoint texts (odd / even words of the vocabulary).

Preprocessing follows the shipping packages (rapidocr_onnxruntime 1.4.4 ``ch_ppocr_*``,
ddddocr 1.6.1 ``core/ocr_engine.py``) with Pillow resizing in place of OpenCV, and the DB
postprocessing of the detector is redone on axis-aligned boxes with numpy/scipy.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.corpus import Prepared, RealModel, Score, Wheel
from benchmarks.corpus.ocr_words import WORDS

if TYPE_CHECKING:
    import onnxruntime
    from PIL import Image as PILImage
    from PIL import ImageFont

RAPIDOCR = Wheel(
    package="rapidocr-onnxruntime",
    version="1.4.4",
    filename="rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
    sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
    licence="Apache-2.0",
)
DDDDOCR = Wheel(
    package="ddddocr",
    version="1.6.1",
    filename="ddddocr-1.6.1-py3-none-any.whl",
    sha256="c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935",
    licence="MIT",
)

FONT_ROOT = Path("/usr/share/fonts/truetype")
# Fixed list: the rendered bytes must not depend on which other fonts are installed.
FONTS: tuple[str, ...] = (
    "dejavu/DejaVuSans.ttf",
    "dejavu/DejaVuSans-Bold.ttf",
    "dejavu/DejaVuSansCondensed.ttf",
    "dejavu/DejaVuSerif.ttf",
    "dejavu/DejaVuSerif-Italic.ttf",
    "dejavu/DejaVuSansMono.ttf",
    "liberation/LiberationSans-Regular.ttf",
    "liberation/LiberationSans-Bold.ttf",
    "liberation/LiberationSerif-Regular.ttf",
    "liberation/LiberationSerif-Italic.ttf",
    "liberation/LiberationMono-Regular.ttf",
    "liberation/LiberationSansNarrow-Regular.ttf",
    "freefont/FreeSans.ttf",
    "freefont/FreeSerif.ttf",
    "freefont/FreeSerifBold.ttf",
    "freefont/FreeMono.ttf",
)
FONT_PACKAGES = ("fonts-dejavu-core", "fonts-liberation", "fonts-freefont-ttf")

CALIB_SEED, EVAL_SEED = 1000, 2000


# ---------------------------------------------------------------- shared helpers


def _font_paths() -> list[Path]:
    """The fixed font files; a clear error names the Debian packages when one is missing."""
    paths = [FONT_ROOT / f for f in FONTS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"fonts missing ({', '.join(missing)}): apt-get install {' '.join(FONT_PACKAGES)}"
        )
    return paths


def _font(rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont:
    from PIL import ImageFont

    paths = _font_paths()
    return ImageFont.truetype(str(paths[int(rng.integers(len(paths)))]), size)


def _session(model_file: Path, threads: int) -> onnxruntime.InferenceSession:
    """CPU session, quiet, ``threads`` intra-op threads, sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])


def _save_feeds(folder: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(feeds):
        np.savez_compressed(folder / f"{i:04d}.npz", **feed)
    return folder


def _load_feeds(folder: Path) -> Iterator[dict[str, np.ndarray]]:
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as z:
            yield {k: z[k] for k in z.files}


def _targets(prep: Prepared) -> list:
    return json.loads((prep.folder / prep.extra["targets"]).read_text())


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _ctc_greedy(indices: np.ndarray, chars: list[str]) -> str:
    """Greedy CTC: collapse repeats, drop blank (index 0)."""
    keep = np.ones(len(indices), dtype=bool)
    keep[1:] = indices[1:] != indices[:-1]
    keep &= indices != 0
    return "".join(chars[i] for i in indices[keep])


# ---------------------------------------------------------------- texts


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _words(part: int) -> list[str]:
    """Half of the vocabulary: calibration (0) and evaluation (1) never share a word."""
    return list(WORDS[part::2])


def _line_text(rng: np.random.Generator, words: list[str], max_words: int = 4) -> str:
    """A line: a phrase, a number, a date, a time, a code or a mix of them."""
    kind = int(rng.integers(8))

    def pick(n: int) -> list[str]:
        return [words[int(i)] for i in rng.integers(len(words), size=n)]

    def letters(n: int) -> str:
        return "".join(chr(65 + int(c)) for c in rng.integers(26, size=n))

    if kind <= 2:
        ws = pick(int(rng.integers(1, max_words + 1)))
        style = int(rng.integers(4))
        if style == 1:
            ws = [w.capitalize() for w in ws]
        elif style == 2:
            ws[0] = ws[0].capitalize()
        elif style == 3:
            ws = [w.upper() for w in ws]
        return " ".join(ws)
    if kind == 3:
        v = int(rng.integers(10, 1_000_000))
        return [f"{v:,}", f"{v / 100:,.2f}", f"${v / 100:.2f}", f"{v % 1000 / 10:.1f}%"][
            int(rng.integers(4))
        ]
    if kind == 4:
        y, m, d = int(rng.integers(1990, 2031)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        return [f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{MONTHS[m - 1]} {d}, {y}"][
            int(rng.integers(3))
        ]
    if kind == 5:
        h, mi, s = (int(x) for x in rng.integers([0, 0, 0], [24, 60, 60]))
        return [f"{h:02d}:{mi:02d}", f"{h:02d}:{mi:02d}:{s:02d}"][int(rng.integers(2))]
    if kind == 6:
        n = int(rng.integers(100, 100000))
        return [
            f"{letters(2)}-{n:05d}",
            f"{letters(3)}{n % 1000:03d}",
            f"No. {n}",
            f"{letters(2)}-{n % 10000:04d}-{letters(2)}",
        ][int(rng.integers(4))]
    w = pick(2)
    return f"{w[0].capitalize()} {int(rng.integers(1, 1000))} {w[1]}"


def _unique_texts(
    rng: np.random.Generator, n: int, make: Callable[[], str], avoid: set[str]
) -> list[str]:
    out: list[str] = []
    seen = set(avoid)
    while len(out) < n:
        t = make()
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


# ---------------------------------------------------------------- rendering


def _degrade(
    img: PILImage.Image, rng: np.random.Generator, strength: float = 1.0
) -> PILImage.Image:
    """Seeded blur, contrast loss and Gaussian noise (what a scanned / photographed crop has)."""
    from PIL import Image, ImageFilter

    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.1)) * strength))
    a = np.asarray(img, dtype=np.float32)
    contrast = float(rng.uniform(0.65, 1.0))
    a = (a - 128.0) * contrast + 128.0 + float(rng.uniform(-15, 15))
    a = a + rng.normal(0.0, float(rng.uniform(0, 10)) * strength, size=a.shape)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Light background, dark ink, slightly tinted."""
    bg = tuple(int(v) for v in np.clip(rng.integers(185, 256) + rng.integers(-15, 16, 3), 0, 255))
    fg = tuple(int(v) for v in np.clip(rng.integers(0, 90) + rng.integers(-20, 21, 3), 0, 255))
    return bg, fg


def _render_line(
    text: str, rng: np.random.Generator, sizes: tuple[int, int] = (20, 44), strength: float = 1.0
) -> PILImage.Image:
    """One text line cropped with a small margin, as a detector would hand it over."""
    from PIL import Image, ImageDraw

    size = int(rng.integers(*sizes))
    font = _font(rng, size)
    left, top, right, bottom = font.getbbox(text)
    px = int(rng.integers(2, max(3, size // 2)))
    py = int(rng.integers(max(2, size // 8), max(3, size // 3)))
    bg, fg = _colours(rng)
    img = Image.new("RGB", (right - left + 2 * px, bottom - top + 2 * py), bg)
    ImageDraw.Draw(img).text((px - left, py - top), text, font=font, fill=fg)
    return _degrade(img, rng, strength)


def _normalise(a: np.ndarray) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [-1, 1] (PaddleOCR mean = std = 0.5)."""
    return ((a.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


# ---------------------------------------------------------------- paddle-ocr-rec

REC_H, REC_W = 48, 320  # rapidocr config.yaml Rec.rec_img_shape


def _rec_feed(img: PILImage.Image) -> dict[str, np.ndarray]:
    """rapidocr TextRecognizer.resize_norm_img for a batch of one."""
    from PIL import Image

    w, h = img.size
    ratio = w / h
    width = int(REC_H * max(REC_W / REC_H, ratio))
    rw = min(width, math.ceil(REC_H * ratio))
    arr = _normalise(np.asarray(img.resize((rw, REC_H), Image.BILINEAR)))
    out = np.zeros((3, REC_H, width), dtype=np.float32)
    out[:, :, :rw] = arr
    return {"x": out[None]}


def _rec_chars(model_file: Path) -> list[str]:
    """The CTC alphabet: blank, the model's ``character`` metadata, then a space."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return ["blank", *meta["character"].splitlines(), " "]


def _prepare_rec(model_file: Path, folder: Path) -> Prepared:
    rng_c, rng_e = np.random.default_rng(CALIB_SEED + 1), np.random.default_rng(EVAL_SEED + 1)
    calib_w, eval_w = _words(0), _words(1)
    calib_t = _unique_texts(rng_c, 48, lambda: _line_text(rng_c, calib_w), set())
    eval_t = _unique_texts(rng_e, 160, lambda: _line_text(rng_e, eval_w), set(calib_t))
    calib = _save_feeds(folder / "calib", [_rec_feed(_render_line(t, rng_c)) for t in calib_t])
    ev = _save_feeds(folder / "eval", [_rec_feed(_render_line(t, rng_e)) for t in eval_t])
    (folder / "targets.json").write_text(json.dumps(eval_t, ensure_ascii=False, indent=0))
    chars = _rec_chars(model_file)
    (folder / "chars.json").write_text(json.dumps(chars, ensure_ascii=False))
    extra = {"targets": "targets.json", "chars": "chars.json"}
    return Prepared("paddle-ocr-rec", folder, model_file, calib, ev, extra)


def _rec_match(pred: str, target: str) -> bool:
    return pred.strip() == target


def _score_rec(model_file: Path, prep: Prepared, threads: int) -> Score:
    sess = _session(model_file, threads)
    chars = json.loads((prep.folder / prep.extra["chars"]).read_text())
    targets = _targets(prep)
    exact = nospace = edits = total = 0
    for feed, target in zip(_load_feeds(prep.eval), targets, strict=True):
        probs = sess.run(None, feed)[0]
        pred = _ctc_greedy(probs[0].argmax(-1), chars).strip()
        exact += pred == target
        nospace += pred.replace(" ", "") == target.replace(" ", "")
        edits += _edit_distance(pred, target)
        total += len(target)
    n = len(targets)
    extra = {"cer": edits / total, "exact_ignoring_spaces": nospace / n, "lines": float(n)}
    return Score("exact_match", exact / n, extra)


# ---------------------------------------------------------------- paddle-ocr-cls

CLS_H, CLS_W = 48, 192  # rapidocr config.yaml Cls.cls_image_shape


def _cls_feed(img: PILImage.Image) -> dict[str, np.ndarray]:
    """rapidocr TextClassifier.resize_norm_img: keep the ratio, squeeze to 192, zero-pad."""
    from PIL import Image

    w, h = img.size
    rw = min(CLS_W, math.ceil(CLS_H * w / h))
    arr = _normalise(np.asarray(img.resize((rw, CLS_H), Image.BILINEAR)))
    out = np.zeros((3, CLS_H, CLS_W), dtype=np.float32)
    out[:, :, :rw] = arr
    return {"x": out[None]}


def _cls_set(rng: np.random.Generator, texts: list[str]) -> tuple[list[dict], list[int]]:
    """Small (10-21 px), noisier lines: at rec's sizes fp32 is 100 % right and blind to damage."""
    feeds, labels = [], []
    for i, t in enumerate(texts):
        img = _render_line(t, rng, (10, 22), 1.2)
        label = i % 2  # half of the lines upside down
        if label:
            img = img.rotate(180)
        feeds.append(_cls_feed(img))
        labels.append(label)
    return feeds, labels


def _prepare_cls(model_file: Path, folder: Path) -> Prepared:
    rng_c, rng_e = np.random.default_rng(CALIB_SEED + 2), np.random.default_rng(EVAL_SEED + 2)
    calib_w, eval_w = _words(0), _words(1)
    calib_t = _unique_texts(rng_c, 48, lambda: _line_text(rng_c, calib_w, 3), set())
    eval_t = _unique_texts(rng_e, 200, lambda: _line_text(rng_e, eval_w, 3), set(calib_t))
    calib_f, _ = _cls_set(rng_c, calib_t)
    eval_f, labels = _cls_set(rng_e, eval_t)
    calib = _save_feeds(folder / "calib", calib_f)
    ev = _save_feeds(folder / "eval", eval_f)
    (folder / "targets.json").write_text(json.dumps(labels))
    return Prepared("paddle-ocr-cls", folder, model_file, calib, ev, {"targets": "targets.json"})


def _score_cls(model_file: Path, prep: Prepared, threads: int) -> Score:
    sess = _session(model_file, threads)
    labels = _targets(prep)
    correct, margin = 0, 0.0
    for feed, label in zip(_load_feeds(prep.eval), labels, strict=True):
        probs = sess.run(None, feed)[0][0]
        correct += int(probs.argmax()) == label
        margin += float(probs[label])
    n = len(labels)
    return Score("accuracy", correct / n, {"mean_true_prob": margin / n, "lines": float(n)})


# ---------------------------------------------------------------- paddle-ocr-det

PAGE = 640  # pages are fed at their own size: a multiple of 32, PaddleOCR's limit_type "max"
DB_THRESH, DB_BOX_THRESH, DB_UNCLIP = 0.3, 0.5, 1.6  # rapidocr config.yaml Det


def _render_page(
    rng: np.random.Generator, words: list[str]
) -> tuple[PILImage.Image, list[list[int]]]:
    """A page of 4-9 lines of mixed sizes at random indents; each box is the line's ink
    plus 20 % of its height on every side (tight ink boxes make IoU vary with the letters)."""
    from PIL import Image, ImageDraw

    bg, _ = _colours(rng)
    img = Image.new("RGB", (PAGE, PAGE), bg)
    draw = ImageDraw.Draw(img)
    boxes: list[list[int]] = []
    y = int(rng.integers(10, 60))
    for _ in range(int(rng.integers(4, 10))):
        size = int(rng.integers(11, 40))
        font = _font(rng, size)
        text = _line_text(rng, words, 5)
        x = int(rng.integers(10, 200))
        box = draw.textbbox((x, y), text, font=font)
        while box[2] > PAGE - 10 and " " in text:
            text = text.rsplit(" ", 1)[0]
            box = draw.textbbox((x, y), text, font=font)
        if box[3] > PAGE - 10:
            break
        if box[2] <= PAGE - 10:
            _, fg = _colours(rng)
            draw.text((x, y), text, font=font, fill=fg)
            pad = round(0.2 * (box[3] - box[1]))  # the margin of an annotated line box
            boxes.append([box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad])
        y = box[3] + int(size * rng.uniform(0.4, 1.3))
    return _degrade(img, rng, 0.7), boxes


def _det_feed(img: PILImage.Image) -> dict[str, np.ndarray]:
    return {"x": _normalise(np.asarray(img))[None]}


def _prepare_det(model_file: Path, folder: Path) -> Prepared:
    rng_c, rng_e = np.random.default_rng(CALIB_SEED + 3), np.random.default_rng(EVAL_SEED + 3)
    calib_w, eval_w = _words(0), _words(1)
    calib = [_render_page(rng_c, calib_w)[0] for _ in range(32)]
    pages = [_render_page(rng_e, eval_w) for _ in range(36)]
    calib_dir = _save_feeds(folder / "calib", [_det_feed(p) for p in calib])
    ev = _save_feeds(folder / "eval", [_det_feed(p) for p, _ in pages])
    (folder / "targets.json").write_text(json.dumps([b for _, b in pages]))
    extra = {"targets": "targets.json"}
    return Prepared("paddle-ocr-det", folder, model_file, calib_dir, ev, extra)


def db_boxes(prob: np.ndarray) -> list[tuple[float, float, float, float]]:
    """DBNet postprocessing on axis-aligned boxes: threshold 0.3, 2x2 dilation, connected
    components, mean probability >= 0.5, expansion by area * 1.6 / perimeter."""
    from scipy import ndimage

    h, w = prob.shape
    mask = ndimage.binary_dilation(prob > DB_THRESH, structure=np.ones((2, 2), dtype=bool))
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    out = []
    for sl in ndimage.find_objects(labels):
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        bw, bh = x1 - x0, y1 - y0
        if min(bw, bh) < 3 or prob[sl].mean() < DB_BOX_THRESH:
            continue
        d = bw * bh * DB_UNCLIP / (2 * (bw + bh))
        if min(bw, bh) + 2 * d < 5:
            continue
        out.append((max(0.0, x0 - d), max(0.0, y0 - d), min(w, x1 + d), min(h, y1 + d)))
    return out


def _iou(a: tuple | list, b: tuple | list) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _matches(pred: list, gt: list, thresh: float = 0.5) -> list[float]:
    """One-to-one greedy matching by decreasing IoU; the IoUs of the matched pairs."""
    pairs = sorted(
        ((_iou(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(gt)), reverse=True
    )
    used_p, used_g, ious = set(), set(), []
    for iou, i, j in pairs:
        if iou < thresh:
            break
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            ious.append(iou)
    return ious


def _score_det(model_file: Path, prep: Prepared, threads: int) -> Score:
    sess = _session(model_file, threads)
    targets = _targets(prep)
    ious: list[float] = []
    n_pred = n_gt = 0
    for feed, gt in zip(_load_feeds(prep.eval), targets, strict=True):
        prob = sess.run(None, feed)[0][0, 0]
        pred = db_boxes(prob)  # the map has the page's size: no rescaling
        ious += _matches(pred, gt)
        n_pred += len(pred)
        n_gt += len(gt)
    hit = len(ious)
    precision = hit / n_pred if n_pred else 0.0
    recall = hit / n_gt if n_gt else 0.0
    hmean = 2 * precision * recall / (precision + recall) if hit else 0.0
    extra = {"precision": precision, "recall": recall, "lines": float(n_gt)}
    extra["mean_iou"] = float(np.mean(ious)) if ious else 0.0  # box quality of the matches
    return Score("hmean", hmean, extra)


# ---------------------------------------------------------------- ddddocr-captcha

CAPTCHA_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789"  # no 0/O, 1/l/I


def _charset_beta() -> list[str]:
    """``CHARSET_BETA`` of ddddocr/charsets.py, the alphabet of common.onnx (beta=True)."""
    from benchmarks.corpus.fetch import read_member

    tree = ast.parse(read_member(DDDDOCR, "ddddocr/charsets.py").decode("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CHARSET_BETA":
            return list(ast.literal_eval(node.value))
    raise KeyError("CHARSET_BETA not in ddddocr/charsets.py")


def _render_captcha(text: str, rng: np.random.Generator) -> PILImage.Image:
    """Glyphs of mixed fonts, each rotated +-25 degrees, over noise lines and dots."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = int(rng.integers(120, 181)), int(rng.integers(44, 65))
    bg, _ = _colours(rng)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(60, 200))):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        draw.point((x, y), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    step = (w - 12) / len(text)
    for i, ch in enumerate(text):
        size = int(h * rng.uniform(0.55, 0.8))
        font = _font(rng, size)
        tile = Image.new("L", (2 * size, 2 * size), 0)
        ImageDraw.Draw(tile).text((size // 2, size // 3), ch, font=font, fill=255)
        tile = tile.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
        bbox = tile.getbbox() or (0, 0, 1, 1)
        tile = tile.crop(bbox)
        colour = tuple(int(c) for c in rng.integers(0, 140, 3))
        cx = 6 + step * (i + 0.5) + rng.uniform(-0.12, 0.12) * step
        x = int(cx - tile.width / 2)
        y = int((h - tile.height) / 2 + rng.uniform(-0.12, 0.12) * h)
        img.paste(Image.new("RGB", tile.size, colour), (x, y), tile)
    for _ in range(int(rng.integers(2, 5))):
        pts = [(int(rng.integers(w)), int(rng.integers(h))) for _ in range(2)]
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        draw.line(pts, fill=colour, width=int(rng.integers(1, 3)))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))
    return img


def _captcha_feed(img: PILImage.Image) -> dict[str, np.ndarray]:
    """ddddocr OCREngine._preprocess_image: height 64 (Lanczos), grayscale, /255."""
    from PIL import Image

    w, h = img.size
    gray = img.resize((int(w * (64 / h)), 64), Image.LANCZOS).convert("L")
    return {"input1": (np.asarray(gray, dtype=np.float32) / 255.0)[None, None]}


def _captcha_texts(rng: np.random.Generator, n: int, avoid: set[str]) -> list[str]:
    def make() -> str:
        k = int(rng.integers(4, 7))
        return "".join(CAPTCHA_CHARS[int(i)] for i in rng.integers(len(CAPTCHA_CHARS), size=k))

    return _unique_texts(rng, n, make, avoid)


def _prepare_captcha(model_file: Path, folder: Path) -> Prepared:
    rng_c, rng_e = np.random.default_rng(CALIB_SEED + 4), np.random.default_rng(EVAL_SEED + 4)
    calib_t = _captcha_texts(rng_c, 48, set())
    eval_t = _captcha_texts(rng_e, 200, set(calib_t))
    calib_f = [_captcha_feed(_render_captcha(t, rng_c)) for t in calib_t]
    eval_f = [_captcha_feed(_render_captcha(t, rng_e)) for t in eval_t]
    calib, ev = _save_feeds(folder / "calib", calib_f), _save_feeds(folder / "eval", eval_f)
    (folder / "targets.json").write_text(json.dumps(eval_t))
    (folder / "chars.json").write_text(json.dumps(_charset_beta(), ensure_ascii=False))
    extra = {"targets": "targets.json", "chars": "chars.json"}
    return Prepared("ddddocr-captcha", folder, model_file, calib, ev, extra)


def unlabeled_pool(name: str, folder: Path, n: int) -> Path:
    """``n`` more unlabeled inputs for distillation, drawn like the calibration set (its
    half of the vocabulary, another seed), never an evaluation text: users of a model
    have many unlabeled inputs, and 48 do not train a network. Cached in ``folder``."""
    if (folder / "done").exists():
        return folder
    rng = np.random.default_rng(CALIB_SEED + 100)
    if name == "ddddocr-captcha":
        avoid = set(json.loads((prepared_folder(name) / "targets.json").read_text()))
        texts = _captcha_texts(rng, n, avoid)
        feeds = [_captcha_feed(_render_captcha(t, rng)) for t in texts]
    elif name == "paddle-ocr-rec":
        words = _words(0)
        texts = _unique_texts(rng, n, lambda: _line_text(rng, words), set())
        feeds = [_rec_feed(_render_line(t, rng)) for t in texts]
    elif name == "paddle-ocr-cls":
        words = _words(0)
        texts = _unique_texts(rng, n, lambda: _line_text(rng, words, 3), set())
        feeds, _ = _cls_set(rng, texts)  # half upside down, as the model meets them
    else:
        raise ValueError(f"no unlabeled pool for {name}")
    _save_feeds(folder, feeds)
    (folder / "done").write_text(str(n))
    return folder


def prepared_folder(name: str) -> Path:
    from benchmarks.corpus import prepare

    return prepare(name).folder


def _score_captcha(model_file: Path, prep: Prepared, threads: int) -> Score:
    sess = _session(model_file, threads)
    chars = json.loads((prep.folder / prep.extra["chars"]).read_text())
    targets = _targets(prep)
    exact = nocase = edits = total = 0
    for feed, target in zip(_load_feeds(prep.eval), targets, strict=True):
        logits = sess.run(None, feed)[0]  # [T, 1, C], whatever the graph declares
        pred = _ctc_greedy(logits[:, 0, :].argmax(-1), chars)
        exact += pred == target
        nocase += pred.lower() == target.lower()
        edits += _edit_distance(pred.lower(), target.lower())
        total += len(target)
    n = len(targets)
    extra = {"exact_case_sensitive": exact / n, "cer_nocase": edits / total}
    return Score("exact_match_nocase", nocase / n, extra)


# ---------------------------------------------------------------- registry

_NEEDS = ("PIL", "scipy", "onnx")

MODELS: list[RealModel] = [
    RealModel(
        name="paddle-ocr-rec",
        wheel=RAPIDOCR,
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        exporter="PaddlePaddle (paddle2onnx)",
        task="PP-OCRv4 CTC line recogniser; exact match on 160 rendered English/number lines",
        metric="exact_match",
        prepare=_prepare_rec,
        score=_score_rec,
        needs=_NEEDS,
        tools=FONT_PACKAGES,
    ),
    RealModel(
        name="paddle-ocr-cls",
        wheel=RAPIDOCR,
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        exporter="PaddlePaddle (paddle2onnx)",
        task="PP-OCR 0/180 degree line direction classifier; accuracy on 200 rendered lines",
        metric="accuracy",
        prepare=_prepare_cls,
        score=_score_cls,
        needs=_NEEDS,
        tools=FONT_PACKAGES,
    ),
    RealModel(
        name="paddle-ocr-det",
        wheel=RAPIDOCR,
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        exporter="PaddlePaddle (paddle2onnx)",
        task="PP-OCRv4 DBNet text detector; line F1 at IoU 0.5 on 36 rendered 640x640 pages",
        metric="hmean",
        prepare=_prepare_det,
        score=_score_det,
        needs=_NEEDS,
        tools=FONT_PACKAGES,
    ),
    RealModel(
        name="ddddocr-captcha",
        wheel=DDDDOCR,
        member="ddddocr/common.onnx",
        exporter="PyTorch 1.9 (torch.onnx)",
        task="ddddocr CNN+LSTM CTC captcha reader; exact match on 200 rendered captchas",
        metric="exact_match_nocase",
        prepare=_prepare_captcha,
        score=_score_captcha,
        needs=_NEEDS,
        tools=FONT_PACKAGES,
    ),
]
