"""The int8 measure step on a busy machine: CPU-time timing, decisions cached per machine,
and replayed exactly from a recipe."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest

from onnxcomp import compress
from onnxcomp.methods.int8 import measure_cache
from onnxcomp.methods.int8.measure_step import _latency_ratios


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def mlp(tmp_path, save_model):
    from model_builders import mlp_with_constants

    src = save_model(mlp_with_constants())
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32))
    return src, data


def test_cached_decisions_give_the_same_file_and_fresh_measures_again(tmp_path, mlp):
    src, data = mlp
    first = compress(src, tmp_path / "a.onnx", quantize="int8", calib=str(data))
    stored = list(measure_cache.cache_dir().glob("*.json"))
    assert len(stored) == 1
    entry = json.loads(stored[0].read_text())
    assert entry["families"] == first.activations["families"]
    assert first.activations["decided_by"].startswith("measured now")
    # the entry, not a new timing, decides the second run: edit it and see it obeyed
    entry["families"] = entry["families"][:-1] if entry["families"] else ["matmul"]
    stored[0].write_text(json.dumps(entry))
    second = compress(src, tmp_path / "b.onnx", quantize="int8", calib=str(data))
    assert second.activations["decided_by"].startswith("this machine's cached measurement")
    assert second.activations["families"] == sorted(entry["families"])
    fresh = compress(src, tmp_path / "c.onnx", quantize="int8", calib=str(data), measure="fresh")
    assert fresh.activations["decided_by"].startswith("measured now")
    # a recipe's int8-families replays the decision: the same bytes, nothing timed
    pinned = compress(
        src, tmp_path / "d.onnx", quantize="int8", calib=str(data),
        int8_families=tuple(fresh.activations["families"]) or ("none",),
    )  # fmt: skip
    assert pinned.activations["trials"] == [] and _sha(tmp_path / "c.onnx") == _sha(
        tmp_path / "d.onnx"
    )


def test_measure_off_never_touches_the_cache(tmp_path, mlp):
    src, data = mlp
    compress(src, tmp_path / "a.onnx", quantize="int8", calib=str(data), measure="off")
    compress(src, tmp_path / "b.onnx", quantize="int8", calib=str(data), no_measure=True)
    assert not list(measure_cache.cache_dir().glob("*.json"))
    assert _sha(tmp_path / "a.onnx") == _sha(tmp_path / "b.onnx")


def test_run_times_are_this_threads_cpu_time():
    """A session whose run sleeps: wall time grows, CPU time does not (the load another
    process puts on the core looks the same to a wall clock)."""

    class Sleepy:
        def __init__(self, spin: float, sleep: float) -> None:
            self.spin, self.sleep = spin, sleep

        def run(self, *_):
            end = time.thread_time() + self.spin
            while time.thread_time() < end:
                pass
            time.sleep(self.sleep)

    ref, cand = Sleepy(0.002, 0.0), Sleepy(0.002, 0.004)
    ratios, cpu, wall, _ = _latency_ratios(ref, [cand], {}, budget=0.05)
    assert ratios[0] == pytest.approx(1.0, abs=0.25)  # wall time would say ~3x
    assert wall > cpu * 1.5


def test_the_key_moves_with_the_model_the_ranges_and_the_options():
    k = measure_cache.key(b"model", {"x": 1}, {"task": None})
    assert k == measure_cache.key(b"model", {"x": 1}, {"task": None})
    assert k != measure_cache.key(b"model2", {"x": 1}, {"task": None})
    assert k != measure_cache.key(b"model", {"x": 2}, {"task": None})
    assert k != measure_cache.key(b"model", {"x": 1}, {"task": "detect"})
    assert np.isfinite(len(measure_cache.machine()))
