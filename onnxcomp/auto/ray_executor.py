"""Trials as Ray tasks (``auto --executor ray [--address ADDR]``, extra ``onnxcomp[ray]``).

The original model, the evaluation data and the calibration data go into Ray's object
store once; each worker process writes them to a private folder the first time a task
needs them and builds its evaluator there, so nodes need no shared filesystem. A task
lost with its worker is re-run by Ray elsewhere (``max_retries``); Ctrl-C cancels every
task still pending. Results come back in submission order: the same trial list gives the
same results as the local executor."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from onnxcomp.errors import OnnxcompError

INSTALL_HINT = "--executor ray needs Ray: pip install 'onnxcomp[ray]'"


def _pack(path: Any) -> Any:
    """A file or folder as bytes ({relative path: bytes} for a folder); other values as is."""
    if not isinstance(path, (str, os.PathLike)):
        return path
    p = Path(path)
    if p.is_file():
        return ("file", p.name, p.read_bytes())
    if p.is_dir():
        files = {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}
        return ("dir", p.name, files)
    return path  # not a path on this machine: let the worker's own error say so


def _unpack(packed: Any, into: Path) -> Any:
    if not (isinstance(packed, tuple) and len(packed) == 3 and packed[0] in ("file", "dir")):
        return packed
    kind, name, payload = packed
    target = into / name
    if kind == "file":
        target.write_bytes(payload)
    else:
        for rel, data in payload.items():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(data)
    return str(target)


class _Worker:
    """Per worker process: the inputs materialized once (keyed by the bundle's id)."""

    key: str | None = None
    folder: Path | None = None
    calib: str | None = None


def _trial(bundle: dict[str, Any], task: Any) -> Any:
    from onnxcomp.auto.trials import init_worker, run_trial

    if _Worker.key != bundle["key"]:
        folder = Path(tempfile.mkdtemp(prefix="onnxcomp-ray-"))
        model = _unpack(bundle["model"], folder)
        data = _unpack(bundle["data"], folder)
        _Worker.calib = _unpack(bundle["calib"], folder)
        init_worker(model, data, bundle["labels"], bundle["metric"])
        _Worker.key, _Worker.folder = bundle["key"], folder
    assert _Worker.folder is not None
    options = task.options
    if options.calib is not None:
        options = dataclasses.replace(options, calib=_Worker.calib)
    local = dataclasses.replace(task, options=options, workdir=str(_Worker.folder), keep=False)
    return run_trial(local)


class RayExecutor:
    """``map`` submits one Ray task per trial and yields the results in order."""

    def __init__(
        self,
        init_args: tuple,
        calib: Any,
        *,
        address: str | None = None,
        max_retries: int = 3,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise OnnxcompError(INSTALL_HINT) from None
        self.ray = ray
        self.owned = not ray.is_initialized()
        if self.owned:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        original, data, labels, metric = init_args
        bundle = {
            "key": f"{os.getpid()}-{id(self)}",
            "model": _pack(original),
            "data": _pack(data),
            "calib": _pack(calib),
            "labels": labels,
            "metric": metric,
        }
        self.bundle = ray.put(bundle)  # once; every task gets the reference
        self.remote = ray.remote(max_retries=max_retries, retry_exceptions=False)(_trial)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        from onnxcomp.auto.trials import run_trial

        if fn is not run_trial:
            raise TypeError("RayExecutor runs auto's trials (run_trial) only")
        refs = [self.remote.remote(self.bundle, item) for item in items]
        try:
            for ref in refs:
                yield self.ray.get(ref)
        except BaseException:  # Ctrl-C or a failure: nothing keeps running behind us
            for ref in refs:
                self.ray.cancel(ref, force=True)
            raise

    def shutdown(self, wait: bool = True) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
