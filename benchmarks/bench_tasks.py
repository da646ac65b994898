"""Trivial task functions for the engine benchmark.

They live in an importable module (not ``__main__``) so that both sides of the benchmark
send them by reference: the flows call them as ``bench_tasks:NAME`` and the raw-Dask side
passes the same functions to ``client.submit``/``client.map``. ``bench_engine.py`` puts
this directory on the workers' PYTHONPATH.
"""

from __future__ import annotations

import time
from typing import Any


def make_items(n: int) -> list[int]:
    """The source of the fan-out: the list the mapped task runs over."""
    return list(range(int(n)))


def inc(x: int) -> int:
    return x + 1


def total(xs: list[int]) -> int:
    return sum(xs)


# -- helpers run on the scheduler / workers, outside the timed sections ------------------
def cpu_time() -> float:
    """CPU seconds of the calling process (all threads)."""
    return time.process_time()


def scheduler_cpu_time(dask_scheduler: Any = None) -> float:
    return time.process_time()


def scheduler_task_count(dask_scheduler: Any) -> int:
    """Tasks the scheduler still knows of: 0 once the previous run is fully released."""
    return len(dask_scheduler.tasks)
