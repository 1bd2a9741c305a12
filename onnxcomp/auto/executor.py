"""Where trials run: the seam a distributed engine plugs into.

Anything with ``map(fn, items) -> iterator`` and ``shutdown()`` serves, which includes
every ``concurrent.futures`` executor. A Ray-backed one only has to implement those two
(e.g. submit ``fn`` as a remote task per item and return ``ray.get`` in order); the
search never schedules anything itself.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol


class TrialExecutor(Protocol):
    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]: ...

    def shutdown(self, wait: bool = True) -> None: ...


class SerialExecutor:
    """In-process, one trial at a time: for unpicklable metrics and data, and debugging."""

    def __init__(self, initializer: Callable[..., None] | None = None, initargs: tuple = ()):
        if initializer is not None:
            initializer(*initargs)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        return map(fn, items)

    def shutdown(self, wait: bool = True) -> None:
        return None


def process_pool(
    workers: int, initializer: Callable[..., None], initargs: tuple
) -> ProcessPoolExecutor:
    """Local worker processes; spawned, so no onnxruntime thread pool is forked."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer,
        initargs=initargs,
    )
