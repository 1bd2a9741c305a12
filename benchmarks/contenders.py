"""Every compressor under test, behind one signature: compress(src, out, calib_npz).

A contender runs in a fresh child process (see worker.py) so its wall time and peak
memory are its own. Adding one means adding a function and a CONTENDERS entry; an
optional peer reports why it is unavailable instead of failing the whole run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Compress = Callable[[Path, Path, Path], None]


@dataclass(frozen=True)
class Contender:
    name: str
    family: str  # onnxcomp | onnxruntime | inc | nncf
    summary: str
    run: Compress
    needs: str | None = None  # import name of an optional package

    def unavailable(self) -> str | None:
        """Why this contender cannot run here, or None."""
        if self.needs and importlib.util.find_spec(self.needs) is None:
            return f"{self.needs} not installed"
        return None


def feeds(calib_npz: Path, input_names: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """One sample per feed: the same calibration set every contender sees."""
    with np.load(calib_npz) as data:
        arrays = {name: data[name] for name in input_names}
    count = next(iter(arrays.values())).shape[0]
    for i in range(count):
        yield {name: array[i : i + 1] for name, array in arrays.items()}


def _input_names(src: Path) -> list[str]:
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in inits]


# --- onnxcomp -------------------------------------------------------------------------


def _onnxcomp(**options) -> Compress:
    def run(src: Path, out: Path, calib: Path) -> None:
        import onnxcomp

        if options.get("quantize") == "int8":
            onnxcomp.compress(src, out, calib=str(calib), **options)
        else:
            onnxcomp.compress(src, out, **options)

    return run


# --- onnxruntime.quantization -----------------------------------------------------------


def _ort_static(activation: str) -> Compress:
    def run(src: Path, out: Path, calib: Path) -> None:
        from onnxruntime import quantization as q

        class Reader(q.CalibrationDataReader):
            def __init__(self) -> None:
                self._it = feeds(calib, _input_names(src))

            def get_next(self):
                return next(self._it, None)

        q.quantize_static(
            str(src),
            str(out),
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=getattr(q.QuantType, activation),
            weight_type=q.QuantType.QInt8,
        )

    return run


def _ort_dynamic(src: Path, out: Path, calib: Path) -> None:
    from onnxruntime import quantization as q

    q.quantize_dynamic(str(src), str(out), weight_type=q.QuantType.QInt8)


# --- optional peers -------------------------------------------------------------------


def _inc(src: Path, out: Path, calib: Path) -> None:
    """Intel Neural Compressor 2.x post-training static quantization, QDQ format."""
    from neural_compressor import PostTrainingQuantConfig, quantization

    names = _input_names(src)

    class Loader:
        batch_size = 1

        def __iter__(self):
            for feed in feeds(calib, names):
                yield (feed if len(names) > 1 else feed[names[0]]), 0

    conf = PostTrainingQuantConfig(approach="static", quant_format="QDQ")
    model = quantization.fit(str(src), conf, calib_dataloader=Loader())
    if model is None:
        raise RuntimeError("neural_compressor returned no model")
    model.save(str(out))


def _nncf(src: Path, out: Path, calib: Path) -> None:
    """NNCF post-training quantization of an ONNX model."""
    import nncf
    import onnx

    model = onnx.load(str(src))
    dataset = nncf.Dataset(list(feeds(calib, _input_names(src))))
    onnx.save(nncf.quantize(model, dataset), str(out))


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in [
        Contender(
            "onnxcomp-weights",
            "onnxcomp",
            "onnxcomp, int8 weights only (per-channel QDQ), float activations",
            _onnxcomp(quantize="weights"),
        ),
        Contender(
            "onnxcomp-int8",
            "onnxcomp",
            "onnxcomp, int8 weights and activations, minmax calibration",
            _onnxcomp(quantize="int8"),
        ),
        Contender(
            "onnxcomp-prune50-int8",
            "onnxcomp",
            "onnxcomp, 50% magnitude pruning then full int8",
            _onnxcomp(prune_sparsity=0.5, quantize="int8"),
        ),
        Contender(
            "ort-static-u8",
            "onnxruntime",
            "quantize_static QDQ, per-channel QInt8 weights, QUInt8 activations, minmax",
            _ort_static("QUInt8"),
        ),
        Contender(
            "ort-static-s8",
            "onnxruntime",
            "quantize_static QDQ, per-channel QInt8 weights, QInt8 activations, minmax",
            _ort_static("QInt8"),
        ),
        Contender(
            "ort-dynamic",
            "onnxruntime",
            "quantize_dynamic, QInt8 weights, activations quantized at run time",
            _ort_dynamic,
        ),
        Contender(
            "inc-static",
            "inc",
            "Intel Neural Compressor PTQ static, QDQ",
            _inc,
            needs="neural_compressor",
        ),
        Contender("nncf-ptq", "nncf", "NNCF ONNX post-training quantization", _nncf, "nncf"),
    ]
}
