"""auto --executor ray: the same trials and the same recipe as the local executor
(opt-in: ``pytest -m ray``, needs ``onnxcomp[ray]``; starts a 2-CPU local Ray)."""

from __future__ import annotations

import onnx
import pytest
from model_builders import robust_fragile_model, write_data

from onnxcomp.auto import auto
from onnxcomp.cli import main

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _trials(result) -> list[tuple]:
    return [(t.id, t.stage, sorted(t.config.items()), t.drop, t.bytes, t.deflate_bytes)
            for t in result.trials]  # fmt: skip


def test_same_trials_and_recipe_as_the_local_executor(local_ray, tmp_path):
    src, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(robust_fragile_model(), src)
    write_data(data, n=300)  # a third held back for verification
    common = {"data": str(data), "max_drop": 0.05, "max_trials": 16, "workers": 2}
    local = auto(src, tmp_path / "local.onnx", **common)
    remote = auto(src, tmp_path / "ray.onnx", engine="ray", **common)
    assert local.found and remote.found
    assert _trials(remote) == _trials(local)
    assert {t.pid for t in remote.trials}.isdisjoint({t.pid for t in local.trials})
    recipe = (tmp_path / "local.onnx.recipe.toml").read_text()
    assert (tmp_path / "ray.onnx.recipe.toml").read_text() == recipe
    assert (tmp_path / "ray.onnx").read_bytes() == (tmp_path / "local.onnx").read_bytes()


def test_cli_executor_flag(local_ray, tmp_path, capsys):
    src, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(robust_fragile_model(), src)
    write_data(data, n=300)
    argv = ["auto", str(src), "-o", str(tmp_path / "a.onnx"), "--data", str(data),
            "--max-drop", "0.1", "--max-trials", "6"]  # fmt: skip
    assert main([*argv, "--executor", "ray", "--json"]) == 0
    assert main([*argv, "--address", "127.0.0.1:1"]) == 2
    assert "--address needs --executor ray" in capsys.readouterr().err


def _metric_killing_one_worker(marker: str, driver: int):
    """A metric whose first call in any Ray worker kills that worker (once, via a marker
    file): the task must be re-run elsewhere and the search must not notice."""

    def mean_logit(sess, data) -> float:
        import os

        import numpy as np

        if os.getpid() != driver and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        outs = [sess.run(None, b.feed)[0] for b in data]
        return -float(np.mean(np.abs(np.concatenate(outs) - 1.0)))

    return mean_logit


def test_a_worker_dying_mid_trial_reruns_it(local_ray, tmp_path):
    import os

    src, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(robust_fragile_model(), src)
    write_data(data, n=300)
    marker = tmp_path / "killed"
    metric = _metric_killing_one_worker(str(marker), os.getpid())
    common = {"data": str(data), "max_drop": 0.05, "max_trials": 8, "workers": 2,
              "metric": metric}  # fmt: skip
    remote = auto(src, tmp_path / "ray.onnx", engine="ray", **common)
    assert marker.exists()  # a worker did die
    local = auto(src, tmp_path / "local.onnx", **common)
    assert _trials(remote) == _trials(local) and all(t.ok for t in remote.trials)
