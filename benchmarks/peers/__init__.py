"""Peer quantizers (NNCF, AMD Quark, aimet-onnx) as benchmark contenders, each in its own
cached venv (``venv.py``) and run there as a subprocess (``run.py``, ``scripts/``), so the
benchmark's environment never imports them and their pins never touch ours.

Opt-in: ``python -m benchmarks --peers`` (every peer contender not marked slow) or name them
in ``--contenders``. Versions are pinned here; bump a pin and the venv is rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.peers.venv import PeerEnv

SCRIPTS = Path(__file__).resolve().parent / "scripts"

# onnxruntime pinned to the benchmark's own version where the peer allows it; torch is
# the CPU build (Quark's AdaRound/AdaQuant and aimet-onnx import it).
ORT = "onnxruntime==1.32.0"
TORCH_CPU = "torch==2.13.0+cpu"

NNCF = PeerEnv("nncf", "nncf", "3.4.0", (ORT, "onnx==1.23.2"), ("onnx", "onnxruntime", "numpy"))
QUARK = PeerEnv(
    "quark", "amd-quark", "0.13", (ORT, "onnx==1.22.0", TORCH_CPU),
    ("onnx", "onnxruntime", "torch", "numpy"),
)  # fmt: skip
AIMET = PeerEnv(
    "aimet", "aimet-onnx", "2.42.0", (ORT, "onnx==1.23.2", TORCH_CPU),
    ("onnx", "onnxruntime", "torch", "numpy"),
)  # fmt: skip
ENVS = {e.name: e for e in (NNCF, QUARK, AIMET)}


@dataclass(frozen=True)
class Peer:
    """How one peer contender runs: its venv, its runner script and the config it gets."""

    env: PeerEnv
    script: str  # file name under scripts/
    config: dict = field(default_factory=dict)
    transformer_only: bool = False  # e.g. NNCF's transformer preset

    @property
    def script_path(self) -> Path:
        return SCRIPTS / self.script


def _nncf(**config) -> Peer:
    return Peer(NNCF, "nncf_run.py", {"min_opset": 13, **config})


def _quark(name: str) -> Peer:
    return Peer(QUARK, "quark_run.py", {"config": name})


# name -> (summary, peer, slow); slow ones run only when named in --contenders
PEER_CONTENDERS: dict[str, tuple[str, Peer, bool]] = {
    "nncf-ptq": ("NNCF 3.4 nncf.quantize, defaults (opset < 13 upgraded to 13)", _nncf(), False),
    "nncf-ptq-transformer": (
        "NNCF 3.4 nncf.quantize, model_type=TRANSFORMER (transformer models only)",
        Peer(NNCF, "nncf_run.py", {"min_opset": 13, "model_type": "transformer"}, True),
        False,
    ),
    "nncf-accuracy": (
        "NNCF 3.4 quantize_with_accuracy_control, max_drop 0.01 of the output cosine to fp32 "
        "on the calibration feeds; transformer preset on transformers",
        _nncf(accuracy_control=True, max_drop=0.01, model_type="auto"),
        False,
    ),
    "quark-xint8": ("Quark 0.13 ModelQuantizer, XINT8_QCONFIG", _quark("XINT8_QCONFIG"), False),
    "quark-a8w8": ("Quark 0.13 ModelQuantizer, A8W8_QCONFIG", _quark("A8W8_QCONFIG"), False),
    "quark-s8s8": ("Quark 0.13 ModelQuantizer, S8S8_AAWS", _quark("S8S8_AAWS"), False),
    "quark-u8s8": ("Quark 0.13 ModelQuantizer, U8S8_AAWS", _quark("U8S8_AAWS"), False),
    "quark-s8s8-adaround": (
        "Quark 0.13 ModelQuantizer, S8S8_AAWS_ADAROUND (AdaRound on CPU, torch)",
        _quark("S8S8_AAWS_ADAROUND"),
        True,
    ),
    "quark-s8s8-adaquant": (
        "Quark 0.13 ModelQuantizer, S8S8_AAWS_ADAQUANT (AdaQuant on CPU, torch)",
        _quark("S8S8_AAWS_ADAQUANT"),
        True,
    ),
    "aimet-int8": (
        "aimet-onnx 2.42 QuantizationSimModel defaults (int8, min_max), to_onnx_qdq with int8 "
        "weights (opset < 13 upgraded to 13)",
        Peer(AIMET, "aimet_run.py", {"min_opset": 13}),
        False,
    ),
}


def is_transformer(path: Path) -> bool:
    """Attention inside: a Softmax and a MatMul of two activations (no weight operand).

    Decides where NNCF's transformer preset applies; a CNN, an LSTM or an MLP has none."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consts = {t.name for t in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    ops = {n.op_type for n in graph.node}
    dynamic_matmul = any(
        n.op_type == "MatMul" and all(i not in consts for i in n.input) for n in graph.node
    )
    return "Softmax" in ops and dynamic_matmul
