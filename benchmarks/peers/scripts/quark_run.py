"""AMD Quark (quark.onnx) in its own venv: ``ModelQuantizer`` with one of its named
configurations.

Config keys: ``config``, a name of quark.onnx's own: a QConfig constant of the package
(``XINT8_QCONFIG``, ``A8W8_QCONFIG``, ...) or a legacy default config name
(``S8S8_AAWS``, ``U8S8_AAWS_ADAROUND``, ...) read with ``QConfig.get_default_config``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import quark.onnx as qo
from _common import main
from onnxruntime.quantization import CalibrationDataReader


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: list[dict]) -> None:
        self._feeds = feeds
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:  # AdaRound/AdaQuant read the data again
        self._it = iter(self._feeds)


def _config(name: str):
    if name.endswith("_QCONFIG"):
        return getattr(qo, name)
    return qo.QConfig.get_default_config(name)


def quantize(src: Path, out: Path, feeds: list[dict], cfg: dict) -> dict:
    quantizer = qo.ModelQuantizer(_config(cfg["config"]))
    quantizer.quantize_model(str(src), str(out), _Reader(feeds))
    return {"config": cfg["config"]}


if __name__ == "__main__":
    sys.exit(main(quantize, ("amd-quark", "torch")))
