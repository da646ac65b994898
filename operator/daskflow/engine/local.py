"""Running a flow on a cluster this process provides: a fresh LocalCluster or an address.

This is the embedded default behind ``daskflow run``, and the ``local`` and ``address``
backends of the runner. Local workers are set up by :mod:`.workerprocess` (the user's
import paths, task output on stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import distributed
from distributed import Client

from ..model.quantity import quantity_bytes
from ..model.spec import Resources
from . import workerprocess

# distributed has no type hints for these constructors.
_Client: Any = distributed.Client
_LocalCluster: Any = distributed.LocalCluster

CLOSE_TIMEOUT = 30.0  # seconds a LocalCluster gets to close before it is left to the caller


def user_import_paths(manifest: str | Path) -> list[Path]:
    """Where a user's task modules are imported from: the current directory and the
    manifest's directory, each followed by its ``src/`` subdirectory if there is one
    (the "src layout", ``src/myproj/__init__.py``)."""
    paths: list[Path] = []
    for base in (Path.cwd(), Path(manifest).resolve().parent):
        paths += [base] + ([base / "src"] if (base / "src").is_dir() else [])
    return list(dict.fromkeys(paths))


def worker_pythonpath(extra: Sequence[str | Path] = ()) -> str:
    """PYTHONPATH for spawned workers: the caller's paths first, then ours."""
    paths = [str(Path(p).resolve()) for p in extra]
    paths += [p for p in sys.path if p and Path(p).is_dir()]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(dict.fromkeys(paths))


def quiet_closed_comms(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An event loop exception handler that drops what Dask's background messages raise
    when the other side closed first (a nanny's event for a scheduler that has just shut
    down, say): expected while a cluster closes, and no reason for a traceback on stderr.
    Everything else goes to asyncio's default handler."""
    if isinstance(context.get("exception"), distributed.comm.core.CommClosedError):
        return
    loop.default_exception_handler(context)


def local_resources(resources: Resources | None) -> tuple[int | None, list[str]]:
    """The memory limit in bytes of each local worker (``limits.memory``; a worker is what a
    pod is on Kubernetes), and the resource settings a local cluster cannot apply."""
    if resources is None:
        return None, []
    memory = resources.limits.get("memory")
    ignored = [f"requests.{k}" for k in resources.requests]
    ignored += [f"limits.{k}" for k in resources.limits if k != "memory"]
    return (quantity_bytes(memory) if memory else None), ignored


@contextlib.asynccontextmanager
async def dask_client(
    *,
    address: str | None = None,
    workers: int = 2,
    threads_per_worker: int = 1,
    import_paths: Sequence[str | Path] = (),
    env: dict[str, str] | None = None,
    memory_limit: int | None = None,
    task_output: Path | None = None,
    connect_timeout: float | None = None,
) -> AsyncIterator[Client]:
    """An asynchronous client on ``address``, or on a LocalCluster closed on exit.

    The LocalCluster starts inside this context, so cancelling the task that enters it
    stops a start that takes long (many workers); workers still starting then are left
    to the caller (``daskflow.interrupt.stop_worker_processes``). ``import_paths`` are
    absolute directories that local workers import from first; ``task_output`` is the
    file they write their output to (their stderr if None). ``connect_timeout`` is how long
    to keep trying to reach ``address`` (default: Dask's ``distributed.comm.timeouts.connect``),
    for a scheduler that is still starting.
    """
    if address:
        timeout = {} if connect_timeout is None else {"timeout": connect_timeout}
        async with _Client(address, asynchronous=True, **timeout) as client:
            yield client
        return
    loop = asyncio.get_running_loop()
    if loop.get_exception_handler() is None:
        loop.set_exception_handler(quiet_closed_comms)
    cluster = _LocalCluster(
        n_workers=max(workers, 1),
        threads_per_worker=threads_per_worker,
        processes=True,
        asynchronous=True,
        dashboard_address=":0",  # no dashboard; its HTTP routes on a free port
        worker_dashboard_address=None,
        silence_logs=logging.CRITICAL,  # task failures show in the status, not as logs
        memory_limit=memory_limit or "auto",
        preload=[workerprocess.__name__],
        env={
            **(env or {}),
            "PYTHONPATH": worker_pythonpath(import_paths),  # for commands that run python
            workerprocess.IMPORT_PATHS_ENV: os.pathsep.join(map(str, import_paths)),
            **({workerprocess.TASK_OUTPUT_ENV: str(task_output)} if task_output else {}),
        },
    )
    try:
        await cluster
        async with _Client(cluster, asynchronous=True) as client:
            yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(cluster.close(), CLOSE_TIMEOUT)
