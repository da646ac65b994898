"""Cancelling many futures in one pass on the scheduler.

``Client.cancel(futures)`` is quadratic in the number of keys in ``distributed`` (checked on
2026.8): ``Scheduler.stimulus_cancel`` appends the client once per key and then calls
``client_releases_keys(all keys)`` once per entry. Cancelling a 20,000-item map kept the
scheduler busy for about a minute, and at 200,000 items for hours; with a LocalCluster the
scheduler shares the event loop of ``daskflow run``, which then hung. This module does the
same thing in one pass: the client stops wanting the keys (what the scheduler does when a
client closes) and its futures are told that they were cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from distributed import Client, Future


def release_on_scheduler(
    keys: list[Any], client: str, reason: str, dask_scheduler: Any = None
) -> int:
    """Runs on the scheduler: ``client`` no longer wants ``keys``; returns how many.

    Tasks that nobody else wants are released (stopped on the workers) and forgotten."""
    if client not in dask_scheduler.clients:
        return 0
    dask_scheduler.client_releases_keys(
        keys=keys, client=client, stimulus_id=f"daskflow-cancel-{time.time()}"
    )
    dask_scheduler.report(
        {"op": "cancelled-keys", "keys": keys, "reason": reason, "msg": reason}, client=client
    )
    return len(keys)


async def cancel_futures(client: Client, futures: Sequence[Future[Any]], reason: str) -> None:
    """Cancel ``futures`` with one scheduler call, in time linear in their number."""
    if not futures:
        return
    dask: Any = client  # distributed is untyped
    keys = list({f.key: None for f in futures})
    await dask.run_on_scheduler(release_on_scheduler, keys, dask.id, reason)
