"""The repository's ``hack/`` scripts as the tests and benchmarks run them: image builds,
dockerd (stopped again if it was started here) and the single-node cluster of
``hack/cluster.sh``, each failing with its output."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "daskflow-base:py3.11"
"""The tag hack/build-base-image.sh gives the debootstrap base image."""


def run_hack(name: str, log: Path, timeout: float, env: dict[str, str] | None = None) -> float:
    """Run hack/<name> with its output in ``log``; its seconds, or fail with its tail."""
    started = time.monotonic()
    with log.open("w") as out:
        try:
            proc = subprocess.run(
                ["bash", str(ROOT / "hack" / name)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env={**os.environ, **(env or {})},
                check=False,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -1
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"hack/{name} failed ({rc}); tail of {log}:\n{tail}", pytrace=False)
    return time.monotonic() - started


def cluster_sh(*args: str, timeout: float = 1800) -> str:
    """Run ``hack/cluster.sh``; its stdout, or fail with its output."""
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "cluster.sh"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"hack/cluster.sh {' '.join(args)} exited {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return proc.stdout


def _docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def docker_engine_running(log: Path) -> Iterator[float]:
    """A Docker engine that answers (hack/start-dockerd.sh starts it, and installs it if need
    be); yields the seconds that took. A dockerd started here is stopped at the end; one that
    was already running is left alone."""
    already = _docker_answers()
    seconds = run_hack("start-dockerd.sh", log, 900)
    try:
        yield seconds
    finally:
        pidfile = Path("/var/run/docker.pid")
        if not already and pidfile.exists():
            pid = int(pidfile.read_text().strip() or 0)
            if pid > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
