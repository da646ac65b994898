"""Running a flow on a cluster this process provides: a fresh LocalCluster or an address.

This is the embedded default behind ``daskflow run``, and the ``local`` and ``address``
backends of the runner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import distributed
from distributed import Client

# distributed has no type hints for these constructors.
_Client: Any = distributed.Client
_LocalCluster: Any = distributed.LocalCluster


def worker_pythonpath(extra: Sequence[str | Path] = ()) -> str:
    """PYTHONPATH for spawned workers: the caller's paths first, then ours."""
    paths = [str(Path(p).resolve()) for p in extra]
    paths += [p for p in sys.path if p and Path(p).is_dir()]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(dict.fromkeys(paths))


@contextlib.asynccontextmanager
async def dask_client(
    *,
    address: str | None = None,
    workers: int = 2,
    threads_per_worker: int = 1,
    import_paths: Sequence[str | Path] = (),
    env: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    """An asynchronous client on ``address``, or on a LocalCluster closed on exit."""
    if address:
        async with _Client(address, asynchronous=True) as client:
            yield client
        return
    async with (
        _LocalCluster(
            n_workers=max(workers, 1),
            threads_per_worker=threads_per_worker,
            processes=True,
            asynchronous=True,
            dashboard_address=":0",  # no dashboard; its HTTP routes on a free port
            worker_dashboard_address=None,
            silence_logs=logging.CRITICAL,  # task failures show in the status, not as logs
            env={**(env or {}), "PYTHONPATH": worker_pythonpath(import_paths)},
        ) as cluster,
        _Client(cluster, asynchronous=True) as client,
    ):
        yield client
