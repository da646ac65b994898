"""Task functions for the engine tests, imported on the Dask workers by name."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def identity(value: Any) -> Any:
    return value


def add(a: Any, b: Any) -> Any:
    return a + b


def double(x: Any) -> Any:
    return 2 * x


def typename(value: Any) -> str:
    return type(value).__name__


def make_list(n: int) -> list[int]:
    return list(range(int(n)))


def big(n: int) -> str:
    return "x" * int(n)


def length(value: Any) -> int:
    return len(value)


def index_of(values: list[Any], value: Any) -> int:
    return values.index(value)


def sizes(*values: Any) -> list[int]:
    return [len(v) for v in values]


def fail(message: str = "boom") -> None:
    raise ValueError(message)


def fail_if(value: Any, bad: list[Any]) -> Any:
    if value in bad:
        raise ValueError(f"bad item {value}")
    return value


def later_first(x: int, n: int) -> int:
    """Items with a lower index take longer, so they finish after higher ones."""
    time.sleep(0.02 * (n - x))
    return x


def record(path: str, value: Any = None) -> Any:
    """Append a line to ``path`` (one per execution) and return ``value``."""
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return value


def sleep(seconds: float) -> float:
    time.sleep(float(seconds))
    return float(seconds)


def executions(path: str | Path) -> int:
    """How many times :func:`record` ran for ``path`` (in the test process)."""
    p = Path(path)
    return len(p.read_text().splitlines()) if p.exists() else 0


class Interrupted(BaseException):
    """A user's own BaseException (not an Exception)."""


def exit_with(code: Any) -> str:
    """What a script does: ``sys.exit(code)``."""
    raise SystemExit(code)


def raise_base(kind: str) -> None:
    raise {"interrupt": KeyboardInterrupt, "own": Interrupted, "generator": GeneratorExit}[kind]()
