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


def die(code: int) -> None:
    """Kill this worker process, as a crashing extension or ``os._exit`` does."""
    os._exit(int(code))


def die_unless(path: str, code: int) -> str:
    """Kill the worker the first time only (``path`` remembers), then succeed."""
    if not Path(path).exists():
        Path(path).touch()
        os._exit(int(code))
    return "survived"


def segfault() -> None:
    """Crash this worker process with SIGSEGV, as a broken C extension does."""
    import ctypes

    ctypes.string_at(0)


def hog(mb_per_step: int, steps: int) -> int:
    """Take memory step by step (0.1 s apart) until the worker's memory limit stops it."""
    held = []
    for _ in range(int(steps)):
        held.append(bytearray(int(mb_per_step) * 2**20))
        time.sleep(0.1)
    return len(held)


def started_then_sleep(path: str, index: int, seconds: float) -> int:
    """Write this worker's pid to ``path/index`` when the item starts, then sleep."""
    Path(path, str(index)).write_text(str(os.getpid()))
    time.sleep(float(seconds))
    return int(index)


def die_on(value: int, bad: int, code: int) -> int:
    if int(value) == int(bad):
        os._exit(int(code))
    return int(value)
