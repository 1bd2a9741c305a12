"""Every compressor under test, behind one signature: run(src, out, calib_npz, **options).

A contender runs in a fresh child process (see worker.py) so its wall time and peak
memory are its own. Adding one means adding a function and a CONTENDERS entry; an
optional peer reports why it is unavailable instead of failing the whole run.
``options`` are per-model settings from the runner (only ``auto`` takes any: its
budget); a contender may return a dict of extra figures, kept in results.json.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnxcomp.auto.trials import TrialResult

Compress = Callable[..., "dict | None"]  # (src, out, calib_npz, **options) -> extras


@dataclass(frozen=True)
class Contender:
    name: str
    family: str  # onnxcomp | onnxruntime | inc | nncf | quark | aimet
    summary: str
    run: Compress
    needs: str | None = None  # import name of an optional package
    extended: bool = False  # recovery / auto: slow, run on zoo.EXTENDED_MODELS by default
    objective: str | None = None  # auto only: size | latency; needs the model's budget
    peer: bool = False  # runs in its own venv (benchmarks/peers), opt-in with --peers
    slow: bool = False  # a peer that runs only when named in --contenders

    def unavailable(self, src: Path | None = None) -> str | None:
        """Why this contender cannot run here (on this model), or None."""
        if self.peer:
            from benchmarks.peers.run import unavailable

            return unavailable(self.name, src)
        if self.needs and importlib.util.find_spec(self.needs) is None:
            return f"{self.needs} not installed"
        return None


def feeds(calib: Path, input_names: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """One sample per feed: the same calibration set every contender sees. ``calib`` is an
    .npz (axis 0 = samples) or a folder of .npz files, one feed each (the real corpus)."""
    if calib.is_dir():
        for path in sorted(calib.glob("*.npz")):
            with np.load(path) as data:
                yield {name: data[name] for name in input_names}
        return
    with np.load(calib) as data:
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

        if options.get("quantize") == "int8" or options.get("recover"):
            onnxcomp.compress(src, out, calib=str(calib), **options)
        else:
            onnxcomp.compress(src, out, **options)

    return run


def _auto(objective: str) -> Compress:
    """``onnxcomp.auto`` within the model's budget, searched on the calibration split.

    The evaluation split stays unseen: the harness checks the result on it afterwards.
    The best single global setting auto found is written next to OUT (``.global.onnx``)
    so the harness measures both side by side.
    """

    def run(
        src: Path,
        out: Path,
        calib: Path,
        *,
        metric: str,
        max_drop: float,
        labels: str | None = None,
        max_trials: int = 40,
        time_limit: float = 60.0,
    ) -> dict:
        from onnxcomp.auto import auto
        from onnxcomp.auto.space import build_space
        from onnxcomp.pipeline.compress import CompressOptions, compress

        res = auto(
            src, out, calib=str(calib), data=str(calib), labels=labels, max_drop=max_drop,
            objective=objective, metric=metric, max_trials=max_trials,
            time_limit=time_limit, workers=1, allow_small_data=True,
        )  # fmt: skip
        extra = {
            "found": res.found,
            "objective": objective,
            "size_measure": "bytes",  # auto's size objective: the raw file
            "metric": metric,  # the name the harness measures on the evaluation split
            "judged_on": res.metric,  # what auto's judge read (e.g. the worst component)
            "max_drop": max_drop,
            "baseline": res.baseline,
            "trials": len(res.trials),
            "max_trials": max_trials,
            "time_limit": time_limit,
            "seconds": round(res.seconds, 2),
            "original_deflate_bytes": res.original_deflate_bytes,
            "chosen": _trial(res.chosen),
            "best_global": _trial(res.best_global),
            "latency_ms": res.latency_ms,
        }
        if res.best_global is not None:
            space = build_space(str(src), objective=objective, has_calib=True)
            space.base = CompressOptions(calib=str(calib))
            glob = out.with_name(out.stem + ".global.onnx")
            compress(src, glob, space.to_options(res.best_global.config))
            extra["global_model"] = str(glob)
            extra["global_setting"] = space.ladder[max(res.best_global.config.values())].label
        return extra

    return run


def _trial(t: TrialResult | None) -> dict | None:
    """The figures of one auto trial that results.json keeps."""
    if t is None:
        return None
    keys = ("id", "stage", "drop", "value", "bytes", "deflate_bytes")
    return {k: getattr(t, k) for k in keys} | {"layers": sum(1 for v in t.config.values() if v)}


# --- onnxruntime.quantization -----------------------------------------------------------


def _ort_static(activation: str, method: str = "MinMax") -> Compress:
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
            calibrate_method=getattr(q.CalibrationMethod, method),
            extra_options={"CalibPercentile": PERCENTILE} if method == "Percentile" else {},
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


def _in_peer_venv(src: Path, out: Path, calib: Path) -> None:
    raise RuntimeError("a peer contender runs in its venv (benchmarks.peers.run), not here")


def _peers() -> list[Contender]:
    from benchmarks.peers import PEER_CONTENDERS

    return [
        Contender(name, peer.env.name, summary, _in_peer_venv, peer=True, slow=slow)
        for name, (summary, peer, slow) in PEER_CONTENDERS.items()
    ]


PERCENTILE = 99.99  # both percentile contenders clip at the same point

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
            "onnxcomp-int8-no-measure",
            "onnxcomp",
            "onnxcomp, int8 weights and activations, no measure step (--no-measure): the "
            "same work as quantize_static",
            _onnxcomp(quantize="int8", measure=False),
            extended=True,
        ),
        Contender(
            "onnxcomp-prune50-int8",
            "onnxcomp",
            "onnxcomp, 50% magnitude pruning then full int8",
            _onnxcomp(prune_sparsity=0.5, quantize="int8"),
        ),
        Contender(
            "onnxcomp-int8-full-range",
            "onnxcomp",
            "onnxcomp, full int8 with 8-bit weights forced (--weight-range full): what a CPU "
            "without VNNI computes when it is not told",
            _onnxcomp(quantize="int8", weight_range="full"),
            extended=True,
        ),
        Contender(
            "onnxcomp-int8-percentile",
            "onnxcomp",
            f"onnxcomp, full int8, percentile {PERCENTILE} calibration (streamed histograms)",
            _onnxcomp(quantize="int8", calib_method="percentile", percentile=PERCENTILE),
            extended=True,
        ),
        Contender(
            "onnxcomp-gptq-int8",
            "onnxcomp",
            "onnxcomp, full int8 with GPTQ weight rounding from calibration data (--recover gptq)",
            _onnxcomp(quantize="int8", recover="gptq"),
            extended=True,
        ),
        Contender(
            "onnxcomp-prune50-weights",
            "onnxcomp",
            "onnxcomp, 50% magnitude pruning then int8 weights (float activations)",
            _onnxcomp(prune_sparsity=0.5, quantize="weights"),
            extended=True,
        ),
        Contender(
            "onnxcomp-prune50-sparsegpt",
            "onnxcomp",
            "onnxcomp, 50% pruning and int8 weights chosen by SparseGPT (--recover sparsegpt)",
            _onnxcomp(prune_sparsity=0.5, quantize="weights", recover="sparsegpt"),
            extended=True,
        ),
        Contender(
            "onnxcomp-auto-size",
            "onnxcomp",
            "onnxcomp auto, objective size (file bytes), within the model's budget",
            _auto("size"),
            extended=True,
            objective="size",
        ),
        Contender(
            "onnxcomp-auto-latency",
            "onnxcomp",
            "onnxcomp auto, objective latency, within the model's budget",
            _auto("latency"),
            extended=True,
            objective="latency",
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
            "ort-static-u8-percentile",
            "onnxruntime",
            f"quantize_static QDQ, per-channel QInt8 weights, QUInt8 activations, percentile "
            f"{PERCENTILE}",
            _ort_static("QUInt8", "Percentile"),
            extended=True,
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
        *_peers(),
    ]
}
