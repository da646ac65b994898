"""Cancelling the futures of a run in one message, in time linear in their number.

``Client.cancel(futures)`` is quadratic in ``distributed`` (checked on 2026.8):
``Scheduler.stimulus_cancel`` appends the client once per key, then calls
``client_releases_keys(all keys)`` once per entry, and logs and transitions each key on
its own. Cancelling a 20,000-item map kept the scheduler busy for about a minute, and at
200,000 items for hours; with a LocalCluster the scheduler shares the event loop of
``daskflow run``, which then hung. Cancelling in chunks is linear but still costs a
transition pass and a log record per key.

What a run that stops needs is what the scheduler does when a client closes: the client
no longer wants the keys, so every task nobody else wants is released (stopped on its
worker) and forgotten, in one pass. :func:`cancel_futures` sends that as one
``client-releases-keys`` message on the client's ordered stream, after the graph it
cancels (an RPC could overtake a large ``map`` the scheduler has not taken in yet), and
marks the futures cancelled on the client, as ``Client.cancel`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distributed import Client, Future


def cancel_futures(client: Client, futures: Sequence[Future[Any]], reason: str) -> None:
    """Cancel ``futures`` and everything of this client that depends on them."""
    dask: Any = client  # distributed is untyped
    keys = list(dict.fromkeys(f.key for f in futures))
    if not keys:
        return
    dask._send_to_scheduler({"op": "client-releases-keys", "keys": keys, "client": dask.id})
    for key in keys:
        state = dask.futures.pop(key, None)
        if state is not None:
            state.cancel(reason=reason, msg=reason)
