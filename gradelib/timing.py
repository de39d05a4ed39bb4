"""The one way the course times code: ``torch.utils.benchmark.Timer``.

``Timer`` runs a warm-up call, synchronises CUDA around every measurement and reports the median of
its blocks, so the same line times a laptop CPU and a GPU honestly::

    seconds = gradelib.median_seconds(lambda: model(x), min_run_time=0.5)

To keep what the timed call returns (a sampler's samples), let it store its result:
``outputs = []; seconds = median_seconds(lambda: outputs.append(sampler()))``; ``outputs[-1]`` is the
last result. ``Timer`` calls ``fn`` at least twice (once to size its blocks, once measured).
"""

from __future__ import annotations

import time
from typing import Callable

from torch.utils import benchmark

__all__ = ["median_seconds"]


def median_seconds(fn: Callable[[], object], *, min_run_time: float = 0.0, process_time: bool = False) -> float:
    """Median seconds per call of ``fn()``, measured for at least ``min_run_time`` seconds.

    process_time=True counts this process's CPU time instead of the wall clock, which other
    processes on a busy machine do not inflate (use it for CPU-only comparisons; on a GPU the
    work happens outside the process, so keep the wall clock there).
    """
    # Timer's own default clock synchronises an accelerator before reading the wall clock.
    clock = time.process_time if process_time else benchmark.utils.timer.timer
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, timer=clock).blocked_autorange(min_run_time=min_run_time).median
