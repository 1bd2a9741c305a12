"""Where trials run: the seam a distributed engine plugs into.

Anything with ``map(fn, items) -> iterator`` and ``shutdown()`` serves, which includes
every ``concurrent.futures`` executor. A Ray-backed one only has to implement those two
(e.g. submit ``fn`` as a remote task per item and return ``ray.get`` in order); the
search never schedules anything itself.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import warnings
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


def worker_cap(workers: int) -> int:
    """At most one worker per CPU this process may use (like ``--threads``): 1,000
    workers on 2 CPUs only made the run slower and its memory larger."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(int(workers), cpus))


def process_pool(
    workers: int, initializer: Callable[..., None], initargs: tuple
) -> ProcessPoolExecutor:
    """Local worker processes; spawned, so no onnxruntime thread pool is forked. Each
    worker dies with this process (a ``kill -9`` of onnxcomp left them running, holding
    its stdout open) and stays silent when interrupted."""
    return ProcessPoolExecutor(
        max_workers=worker_cap(workers),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), logging.getLogger().level, initializer, initargs),
    )


_PR_SET_PDEATHSIG = 1


def _start_worker(
    parent: int, level: int, initializer: Callable[..., None], initargs: tuple
) -> None:
    """In the worker, first: die on the parent's death (Linux: prctl), leave Ctrl-C to
    the parent (the terminal sends it to the whole group), end quietly on SIGTERM, and
    keep third-party warnings off stderr unless the parent was verbose."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if level >= logging.WARNING:
        warnings.simplefilter("ignore")
        logging.getLogger().setLevel(logging.ERROR)
    initializer(*initargs)
