"""methods/recover/: the layers it rebuilds, the output energy, the guard's fidelity."""

from __future__ import annotations

import numpy as np
from _models import data_for, mlp

from onnxcomp.methods.recover.driver import output_energy
from onnxcomp.methods.recover.guard import output_fidelity
from onnxcomp.methods.recover.layers import find_layers
from onnxcomp.options import CompressOptions


def test_find_layers_sees_both_matmuls() -> None:
    layers = find_layers(mlp(), lambda w: True)
    assert len(layers) == 2


def test_output_energy_is_the_trace() -> None:
    w = np.arange(6, dtype=np.float64).reshape(2, 3)
    h = np.eye(3)
    assert output_energy(w, h) == float((w * w).sum())


def test_a_model_is_its_own_teacher() -> None:
    model = mlp()
    (fidelity,), _gauge = output_fidelity(model, [mlp()], data_for(model), CompressOptions())
    assert fidelity > 0.9999
