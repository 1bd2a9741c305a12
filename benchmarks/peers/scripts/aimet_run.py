"""aimet-onnx in its own venv: ``QuantizationSimModel`` with its defaults (int8 weights
and activations, min-max, the default config file) calibrated on the feeds, exported as
an onnxruntime QDQ model.

Config keys: ``min_opset`` (upgrade older models first: aimet's QDQ export is per
channel from opset 13), ``quant_scheme`` (aimet's name, default ``min_max``), ``prequantize``
(int8 weight initializers, a real int8 file; default true).
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from _common import load_model, main
from aimet_onnx.quantsim import QuantizationSimModel


def _symbolic_negative_dims(model: onnx.ModelProto) -> int:
    """Paddle writes dynamic axes as dim_value -1; aimet makes random inputs of those
    shapes and fails. A named axis means the same to onnxruntime."""
    count = 0
    for value in [*model.graph.input, *model.graph.output]:
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.dim_param = f"{value.name}_dim{i}"
                count += 1
    return count


def quantize(src: Path, out: Path, feeds: list[dict], cfg: dict) -> dict:
    model, upgraded = load_model(src, int(cfg.get("min_opset", 0)))
    renamed = _symbolic_negative_dims(model)
    scheme = cfg.get("quant_scheme", "min_max")
    sim = QuantizationSimModel(model, quant_scheme=scheme, providers=["CPUExecutionProvider"])
    sim.compute_encodings(feeds)
    prequantize = bool(cfg.get("prequantize", True))
    onnx.save(sim.to_onnx_qdq(prequantize_constants=prequantize), str(out))
    extra = {"quant_scheme": scheme, "prequantize_constants": prequantize}
    if renamed:
        extra["negative_dims_named"] = renamed
    return extra | ({"upgraded": upgraded} if upgraded else {})


if __name__ == "__main__":
    sys.exit(main(quantize, ("aimet-onnx", "torch")))
