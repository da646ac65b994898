"""Tasks that fail on purpose, to show retries, timeouts and failure handling."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def flaky(marker_dir: str, name: str, failures: int) -> str:
    """Fail the first ``failures`` calls for ``name``, then succeed.

    Attempts are counted in files, so they survive a retry on another worker process.
    """
    directory = Path(marker_dir)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f"{name}.attempts"
    seen = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(seen + 1))
    if seen < int(failures):
        raise ConnectionError(f"{name}: upstream service unavailable (attempt {seen + 1})")
    return f"{name} ok after {seen + 1} attempts"


def validate_quantity(value: int) -> int:
    if int(value) < 0:
        raise ValueError(f"negative quantity: {value}")
    return int(value) * 2


def sleep(seconds: float) -> float:
    time.sleep(float(seconds))
    return float(seconds)


def pid() -> int:
    return os.getpid()


def identity(value: object) -> object:
    return value


def fresh_dir(base: str) -> str:
    """A new, empty directory under ``base`` for one run's attempt markers."""
    Path(base).mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="run-", dir=base)
