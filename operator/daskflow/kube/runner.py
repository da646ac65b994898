"""``daskflow runner``: drives one FlowRun on its Dask cluster and writes its status.

This is the Dask client of a run. In the default mode it runs in a pod of the FlowRun's
own namespace, under the FlowRun's own ServiceAccount, because a Dask client trusts its
scheduler and the FlowRun's author controls the scheduler. The operator's in-process
mode calls the same :func:`drive_flowrun`, so both modes share one status code path.

A runner that starts on a FlowRun that is already Running resumes it: on a remote cluster
every finished task's value is kept as a published Dask dataset, so a new runner (the
Job's next pod) picks the values up instead of running those tasks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from distributed import Client

from ..engine.flow import FlowEngine
from ..engine.local import dask_client
from ..model.runstate import end_run
from ..model.spec import FlowRun
from ..model.states import Phase, TaskState
from ..model.validate import ManifestError, parse_flowrun
from .api import FLOWRUNS, KubeApi
from .builders import scheduler_address
from .config import OperatorDefaults
from .status import RunEndedElsewhere, StatusWriter

log = logging.getLogger(__name__)

WATCH_INTERVAL = 2.0


@dataclass
class RunnerSettings:
    backend: str | None = None  # None: as recorded by the operator, else from the spec
    address: str | None = None  # scheduler address for the kubernetes/address backends
    status_interval: float = OperatorDefaults.status_interval
    component: str = "runner"
    may_write: Callable[[], bool] = lambda: True
    connect_timeout: float | None = None  # None: the spec's cluster.startupTimeoutSeconds


def _manifest(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}


def task_names(body: dict[str, Any]) -> list[str]:
    """The names of a FlowRun's tasks, read from its spec even when the spec is invalid:
    a run ended by force shows each of them Cancelled."""
    tasks = (body.get("spec") or {}).get("tasks") or []
    return [t["name"] for t in tasks if isinstance(t, dict) and isinstance(t.get("name"), str)]


def dataset_prefix(uid: str) -> str:
    return f"daskflow-{uid}-"


def resolve_target(
    flow: FlowRun, recorded: dict[str, Any], settings: RunnerSettings
) -> tuple[str, str | None]:
    """Which backend and scheduler address this run uses: the runner's settings, else what
    the operator recorded in ``status.runner``, else the spec (with ``local`` as the
    default: a runner started by hand has no operator to ask)."""
    cluster = flow.spec.cluster
    backend = settings.backend or recorded.get("backend") or cluster.resolved_backend("local")
    address = settings.address
    if address is None and backend == "address":
        address = cluster.address
    if address is None and backend == "kubernetes" and recorded.get("cluster"):
        address = scheduler_address(recorded["cluster"], flow.namespace)
    return backend, address


@contextlib.asynccontextmanager
async def _cluster(
    flow: FlowRun, backend: str, address: str | None, connect_timeout: float
) -> AsyncIterator[tuple[Client, float]]:
    spec = flow.spec.cluster
    started = time.monotonic()
    if backend == "local":
        ctx = dask_client(
            workers=max(spec.workers, 1),
            threads_per_worker=spec.threads_per_worker,
            env=dict(spec.env),
        )
    else:
        if not address:
            raise ValueError(f"backend {backend!r} needs a scheduler address")
        # The scheduler pod may start after this one: wait for it as long as the run may
        # take to start its cluster, not just Dask's connect timeout (30 s).
        ctx = dask_client(address=address, connect_timeout=connect_timeout)
    async with ctx as client:
        yield client, time.monotonic() - started


async def _restore_values(client: Client, prefix: str, status: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, rec in (status.get("tasks") or {}).items():
        if rec.get("state") != TaskState.SUCCEEDED:
            continue
        with contextlib.suppress(Exception):
            values[name] = await client.get_dataset(prefix + name)
    return values


async def _watch_for_stop(
    api: KubeApi,
    namespace: str,
    name: str,
    engine: FlowEngine,
    poll: Callable[[], dict[str, Any] | None] | None,
) -> None:
    """Cancel the engine when the FlowRun asks for it, is ended elsewhere, or disappears."""
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        body = poll() if poll else await api.get(FLOWRUNS, namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            engine.cancel("cancelled: the FlowRun was deleted")
            return
        if (body.get("spec") or {}).get("cancel"):
            engine.cancel("cancelled: spec.cancel is true")
            return
        if Phase((body.get("status") or {}).get("phase") or "Pending").terminal:
            engine.cancel("the run was ended by the operator")
            return


async def drive_flowrun(
    api: KubeApi,
    namespace: str,
    name: str,
    settings: RunnerSettings,
    *,
    poll: Callable[[], dict[str, Any] | None] | None = None,
    extra_status: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Run (or resume) one FlowRun to a terminal phase; returns the final status.

    A FlowRun that has already ended is left alone: it is never run again.
    """
    body = await api.get(FLOWRUNS, namespace, name)
    if body is None:
        log.info("FlowRun %s/%s is gone", namespace, name)
        return None
    status = body.get("status") or {}
    if Phase(status.get("phase") or Phase.PENDING).terminal:
        log.info("FlowRun %s/%s already ended %s", namespace, name, status["phase"])
        return status
    recorded = status.get("runner") or {}
    runner_info = {**recorded, **((extra_status or {}).get("runner") or {})}
    if status.get("phase") == Phase.RUNNING:  # an earlier runner was lost: this one resumes
        runner_info["restarts"] = int(runner_info.get("restarts", 0)) + 1
    writer = StatusWriter(
        api, body, settings.component, {"runner": runner_info}, may_write=settings.may_write
    )
    try:
        flow = parse_flowrun(_manifest(body), f"FlowRun {namespace}/{name}")
    except ManifestError as err:
        final = end_run(status, Phase.FAILED, "InvalidSpec", str(err), task_names(body))
        with contextlib.suppress(RunEndedElsewhere):
            await writer.write(final)
        return final
    backend, address = resolve_target(flow, recorded, settings)
    runner_info["backend"] = backend
    uid = body["metadata"].get("uid", name)
    remote = backend != "local"
    timeout = settings.connect_timeout or flow.spec.cluster.startup_timeout_seconds
    try:
        async with _cluster(flow, backend, address, timeout) as (client, startup):
            runner_info["clusterStartupSeconds"] = round(startup, 3)
            values = await _restore_values(client, dataset_prefix(uid), status) if remote else {}
            engine = FlowEngine(
                flow,
                client,
                on_status=writer.write,
                status_interval=settings.status_interval,
                previous_status=status,
                values=values,
                publish_prefix=dataset_prefix(uid) if remote else None,
            )
            watcher = asyncio.create_task(_watch_for_stop(api, namespace, name, engine, poll))
            try:
                return await engine.run()
            finally:
                watcher.cancel()
    except RunEndedElsewhere as err:
        log.info("%s", err)
        return writer.last
    except (OSError, TimeoutError, ValueError) as err:
        final = end_run(
            writer.last or status,
            Phase.FAILED,
            "ClusterUnavailable",
            f"cannot use the Dask cluster: {err}",
            task_names(body),
        )
        with contextlib.suppress(RunEndedElsewhere):
            await writer.write(final)
        return final
