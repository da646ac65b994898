"""The kopf operator: one daemon per FlowRun, supervising it from start to TTL.

In the default ``pod`` mode the operator never connects to a user's Dask cluster: it
creates the run's DaskCluster and runner Job (named after the FlowRun's name and uid,
adopted if they already exist and are ours), enforces cancel, deadline, cluster start
timeout and TTL, and cleans up. The runner pod executes the graph and writes status.
In ``in-process`` mode the daemon drives the engine itself through the very same
:func:`~daskflow.kube.runner.drive_flowrun`, which is for development, tests and trusted
single-tenant installs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from ..model.spec import API_GROUP, API_VERSION, PLURAL
from ..model.states import Phase
from ..model.status import end_run, parse_time
from ..model.validate import ManifestError, parse_flowrun
from .api import (
    DASKAUTOSCALERS,
    DASKCLUSTERS,
    FLOWRUNS,
    JOBS,
    KIND_RESOURCES,
    KubeApi,
    load_api_client,
)
from .builders import (
    LABEL_UID,
    OperatorDefaults,
    build_dask_autoscaler_spec,
    build_dask_cluster_spec,
    build_runner_job,
    child_name,
    resolve_backend,
    scheduler_address,
    service_account_problem,
)
from .metrics import FlowRunMetrics
from .pods import ImagePullWatch
from .readiness import DASK_KUBERNETES, DaskKubernetesMissing, Preflight, serve_health
from .runner import RunnerSettings, _manifest, drive_flowrun
from .status import RunEndedElsewhere, StatusWriter

log = logging.getLogger(__name__)

FINALIZER = "daskflow.io/finalizer"
SUPERVISE_INTERVAL = 1.0  # reading the live body: no API call
CHILD_POLL_INTERVAL = 5.0  # reading the Job and the DaskCluster: one GET each
DEADLINE_GRACE = 10.0  # the runner enforces the deadline itself; this is the backstop
RUNNER_EXIT_GRACE = 10.0  # after a run ends, how long its runner may take to exit
RETRY_DELAY = 5.0  # after a failed API call
API_ERROR = "ApiError"  # the reason of a run the operator cannot start yet


@dataclass
class OperatorConfig:
    runner: str = "pod"  # or "in-process"
    namespaces: list[str] = field(default_factory=list)
    all_namespaces: bool = False
    defaults: OperatorDefaults = field(default_factory=OperatorDefaults)
    metrics_port: int = 9090
    health_port: int = 8080
    bind_address: str = "0.0.0.0"
    peering: str | None = "daskflow"
    priority: int | None = None
    kubeconfig: str | None = None


def snapshot(body: Any) -> dict[str, Any]:
    """A plain, private copy of kopf's live body: never mutate the watched object."""
    return copy.deepcopy(dict(body))


def _task_names(body: dict[str, Any]) -> list[str]:
    tasks = (body.get("spec") or {}).get("tasks") or []
    return [t["name"] for t in tasks if isinstance(t, dict) and isinstance(t.get("name"), str)]


def deadline_exceeded(snap: dict[str, Any], now: datetime) -> float | None:
    """The run's ``deadlineSeconds`` if it passed more than the grace ago, else None.

    A runner that never started (say, its image cannot be pulled) has written no startTime:
    the deadline then counts from the FlowRun's creation.
    """
    deadline = (snap.get("spec") or {}).get("deadlineSeconds")
    since = (snap.get("status") or {}).get("startTime") or snap["metadata"].get("creationTimestamp")
    if deadline and since and (now - parse_time(since)).total_seconds() > deadline + DEADLINE_GRACE:
        return float(deadline)
    return None


class ChildConflict(Exception):
    """A child's deterministic name is taken by an object that is not this FlowRun's."""


class Supervisor:
    """Everything the handlers share: configuration, API access and metrics."""

    def __init__(self, config: OperatorConfig, api: KubeApi, metrics: FlowRunMetrics) -> None:
        self.config = config
        self.api = api
        self.metrics = metrics
        self.started = datetime.now(UTC)

    # -- children --------------------------------------------------------------------------
    async def create_or_adopt(self, obj: dict[str, Any], flow_uid: str) -> dict[str, Any]:
        """Create a child; if it already exists and is ours, adopt it untouched."""
        res = KIND_RESOURCES[obj["kind"]]
        meta = obj["metadata"]
        try:
            return await self.api.create(res, meta["namespace"], obj)
        except ApiException as err:
            if err.status == 404 and res in DASK_KUBERNETES:  # a create's 404: no such CRD
                raise DaskKubernetesMissing(res) from err
            if err.status != 409:
                raise
        existing = await self.api.get(res, meta["namespace"], meta["name"])
        if existing is None:  # deleted meanwhile: try once more
            return await self.api.create(res, meta["namespace"], obj)
        refs = existing.get("metadata", {}).get("ownerReferences") or []
        if not any(r.get("uid") == flow_uid for r in refs):
            raise ChildConflict(
                f"{obj['kind']} {meta['name']} already exists and belongs to someone else"
            )
        return existing

    async def delete_children(self, body: dict[str, Any], *, runner: bool) -> None:
        meta = body["metadata"]
        name = child_name(meta["name"], meta.get("uid", meta["name"]))
        namespace = meta["namespace"]
        for res in (DASKAUTOSCALERS, DASKCLUSTERS, *((JOBS,) if runner else ())):
            try:
                existing = await self.api.get(res, namespace, name)
            except ApiException as err:
                if err.status == 404:  # the dask-kubernetes CRDs are not installed
                    continue
                raise
            if existing is not None and any(
                r.get("uid") == meta.get("uid")
                for r in existing["metadata"].get("ownerReferences") or []
            ):
                await self.api.delete(res, namespace, name)

    # -- ending a run by force ---------------------------------------------------------------
    async def end(self, body: dict[str, Any], phase: Phase, reason: str, message: str) -> None:
        writer = StatusWriter(self.api, body, "operator")
        with contextlib.suppress(RunEndedElsewhere):
            await writer.write(
                end_run(body.get("status") or {}, phase, reason, message, _task_names(body))
            )
        await self.delete_children(body, runner=True)

    async def retrying(self, body: Any, err: ApiException) -> None:
        """An API call failed and the daemon will try again: meanwhile the run still meets
        its deadline, and a run without a phase gets one that says why it waits."""
        snap = snapshot(body)
        status = snap.get("status") or {}
        if Phase(status.get("phase") or Phase.PENDING).terminal:
            return
        deadline = deadline_exceeded(snap, datetime.now(UTC))
        if deadline is not None:
            await self.end(
                snap, Phase.FAILED, "DeadlineExceeded", f"deadline of {deadline:g}s exceeded"
            )
        elif not status.get("phase") or status.get("reason") == API_ERROR:
            with contextlib.suppress(RunEndedElsewhere):
                await StatusWriter(self.api, snap, "operator").write(
                    {
                        "phase": str(Phase.PENDING),
                        "reason": API_ERROR,
                        "message": f"the operator retries every {RETRY_DELAY:g}s: {err}",
                    }
                )

    # -- the daemon ------------------------------------------------------------------------
    async def supervise(self, body: Any, stopped: kopf.DaemonStopped) -> None:
        snap = snapshot(body)
        status = snap.get("status") or {}
        if not Phase(status.get("phase") or Phase.PENDING).terminal:
            try:
                flow = parse_flowrun(_manifest(snap), "FlowRun")
            except ManifestError as err:
                await self.end(snap, Phase.FAILED, "InvalidSpec", str(err))
            else:
                try:
                    if self.config.runner == "in-process":
                        await self._run_in_process(body, stopped)
                    else:
                        await self._run_in_pod(body, flow, stopped)
                except ChildConflict as err:
                    await self.end(snapshot(body), Phase.FAILED, "ChildConflict", str(err))
                except DaskKubernetesMissing as err:
                    await self.end(snapshot(body), Phase.FAILED, err.reason, str(err))
        if stopped.is_set():
            return
        snap = snapshot(body)
        if Phase((snap.get("status") or {}).get("phase") or Phase.PENDING).terminal:
            # The run's status holds its outcome: nothing of it needs to keep running. The
            # runner that ended it is let finish (its last Event) before its Job goes.
            await self.delete_children(snap, runner=False)
            await self._runner_exited(snap, stopped)
            await self.delete_children(snap, runner=True)
            await self._expire_after_ttl(body, stopped)

    async def _run_in_process(self, body: Any, stopped: kopf.DaemonStopped) -> None:
        snap = snapshot(body)
        meta = snap["metadata"]
        flow = parse_flowrun(_manifest(snap), "FlowRun")
        backend = resolve_backend(flow, self.config.defaults)
        address = flow.spec.cluster.address
        if backend == "kubernetes":
            name = child_name(meta["name"], meta["uid"])
            await self.create_or_adopt(
                build_dask_cluster_spec(flow, self.config.defaults, name), meta["uid"]
            )
            address = scheduler_address(name, meta["namespace"])
        writing = threading.Event()
        writing.set()
        settings = RunnerSettings(
            backend=backend,
            address=address,
            status_interval=self.config.defaults.status_interval,
            component="operator",
            may_write=writing.is_set,
        )
        task = asyncio.create_task(
            drive_flowrun(
                self.api,
                meta["namespace"],
                meta["name"],
                settings,
                poll=lambda: snapshot(body),
                extra_status={"runner": {"backend": backend, "mode": "in-process"}},
            )
        )
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=SUPERVISE_INTERVAL)
                reason = stopped.reason
                if (
                    stopped.is_set()
                    and reason is not None
                    and not (reason & kopf.DaemonStoppingReason.RESOURCE_DELETED)
                ):
                    # The operator is exiting: leave the run as it is, for a successor.
                    writing.clear()
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            if not task.done():
                writing.clear()
                task.cancel()

    async def _run_in_pod(self, body: Any, flow: Any, stopped: kopf.DaemonStopped) -> None:
        snap = snapshot(body)
        meta = snap["metadata"]
        defaults = self.config.defaults
        backend = resolve_backend(flow, defaults)
        name = child_name(meta["name"], meta["uid"])
        problem = service_account_problem(flow, defaults)
        if problem is not None:
            await self.end(snap, Phase.FAILED, "ServiceAccountNotAllowed", problem)
            return
        if backend == "kubernetes":
            await self.create_or_adopt(build_dask_cluster_spec(flow, defaults, name), meta["uid"])
            autoscaler = build_dask_autoscaler_spec(flow, name)
            if autoscaler is not None:
                await self.create_or_adopt(autoscaler, meta["uid"])
        await self.create_or_adopt(build_runner_job(flow, defaults, backend), meta["uid"])
        status = snap.get("status") or {}
        if not status.get("phase") or status.get("reason") == API_ERROR:
            writer = StatusWriter(self.api, snap, "operator")
            with contextlib.suppress(RunEndedElsewhere):
                await writer.write(
                    {
                        "phase": str(Phase.PENDING),
                        "message": "waiting for the runner"
                        + (" and the Dask cluster" if backend == "kubernetes" else ""),
                        "reason": "Starting",
                        "runner": {
                            "job": name,
                            "backend": backend,
                            "mode": "pod",
                            **({"cluster": name} if backend == "kubernetes" else {}),
                        },
                    }
                )
        images = ImagePullWatch()
        next_poll = 0.0
        loop = asyncio.get_running_loop()
        while not stopped.is_set():
            snap = snapshot(body)
            status = snap.get("status") or {}
            phase = Phase(status.get("phase") or Phase.PENDING)
            if phase.terminal:
                return
            spec = snap.get("spec") or {}
            if spec.get("cancel"):
                await self.end(snap, Phase.CANCELLED, "Cancelled", "cancelled: spec.cancel is true")
                return
            now = datetime.now(UTC)
            deadline = deadline_exceeded(snap, now)
            if deadline is not None:
                await self.end(
                    snap, Phase.FAILED, "DeadlineExceeded", f"deadline of {deadline:g}s exceeded"
                )
                return
            if loop.time() < next_poll:
                await stopped.wait(SUPERVISE_INTERVAL)
                continue
            next_poll = loop.time() + CHILD_POLL_INTERVAL
            if phase == Phase.PENDING:
                # The runner starts the run once it reaches the scheduler; until then, look
                # for pods that cannot start. (dask-kubernetes marks a DaskCluster Running
                # as soon as its Service exists, so its phase says nothing here.)
                pods = await self.api.list_pods(meta["namespace"], f"{LABEL_UID}={meta['uid']}")
                problem = images.problem(pods, loop.time())
                if problem is not None:
                    await self.end(snap, Phase.FAILED, "ImagePullFailed", problem)
                    return
                timeout = flow.spec.cluster.startup_timeout_seconds
                created = parse_time(snap["metadata"]["creationTimestamp"])
                if backend == "kubernetes" and (now - created).total_seconds() > timeout:
                    await self.end(
                        snap,
                        Phase.FAILED,
                        "ClusterStartTimeout",
                        f"the Dask cluster was not ready within {timeout:g}s",
                    )
                    return
            job = await self.api.get(JOBS, meta["namespace"], name)
            if job is None:
                await self.end(snap, Phase.FAILED, "RunnerLost", "the runner Job is gone")
                return
            if any(
                c.get("type") == "Failed" and c.get("status") == "True"
                for c in (job.get("status") or {}).get("conditions") or []
            ):
                await self.end(
                    snap, Phase.FAILED, "RunnerFailed", "the runner Job failed: see its pods' logs"
                )
                return
            await stopped.wait(SUPERVISE_INTERVAL)

    async def _runner_exited(self, body: dict[str, Any], stopped: kopf.DaemonStopped) -> None:
        """Wait (boundedly) until the run's runner Job has no running pod."""
        meta = body["metadata"]
        name = child_name(meta["name"], meta.get("uid", meta["name"]))
        loop = asyncio.get_running_loop()
        until = loop.time() + RUNNER_EXIT_GRACE
        while loop.time() < until and not stopped.is_set():
            job = await self.api.get(JOBS, meta["namespace"], name)
            if job is None or not (job.get("status") or {}).get("active"):
                return
            await stopped.wait(0.5)

    async def _expire_after_ttl(self, body: Any, stopped: kopf.DaemonStopped) -> None:
        snap = snapshot(body)
        ttl = (snap.get("spec") or {}).get("ttlSecondsAfterFinished")
        done = (snap.get("status") or {}).get("completionTime")
        if ttl is None or not done:
            return
        wait = parse_time(done).timestamp() + float(ttl) - datetime.now(UTC).timestamp()
        if wait > 0:
            await stopped.wait(wait)
            if stopped.is_set():
                return
        meta = snap["metadata"]
        log.info("deleting %s/%s: ttlSecondsAfterFinished", meta["namespace"], meta["name"])
        await self.api.delete(FLOWRUNS, meta["namespace"], meta["name"])


def build_registry() -> kopf.OperatorRegistry:
    """The operator's handlers, on a registry of their own (nothing global at import)."""
    registry = kopf.OperatorRegistry()
    resource = (API_GROUP, API_VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        # Large specs must not end up in annotations (256 KiB in total, kopf#1087).
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="daskflow.io", ignored_fields=["spec.tasks", "spec.parameters", "status"]
        )
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="daskflow.io"
        )
        settings.posting.level = logging.WARNING
        # Watches can go silent without these (kopf#698, kopf#204).
        settings.watching.server_timeout = 120
        settings.watching.client_timeout = 150
        settings.watching.connect_timeout = 10
        settings.peering.lifetime = 15
        settings.scanning.disabled = True
        settings.background.cancellation_polling = 5

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount; elsewhere: $KUBECONFIG (kopf's own readers).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
            **kwargs
        ) or kopf.login_with_kubeconfig(**kwargs)
        return info

    @kopf.daemon(
        *resource,
        registry=registry,
        # On deletion the daemon gets this long to stop its run cleanly before kopf cancels it.
        cancellation_backoff=15.0,
        cancellation_timeout=30.0,
        initial_delay=0,
        backoff=RETRY_DELAY,
    )
    async def flowrun_daemon(
        body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        sup: Supervisor = memo["supervisor"]
        try:
            await sup.supervise(body, stopped)
        except ApiException as err:
            sup.metrics.reconcile_errors_total.labels("api").inc()
            with contextlib.suppress(ApiException):
                await sup.retrying(body, err)
            raise kopf.TemporaryError(f"API error: {err}", delay=RETRY_DELAY) from err
        except kopf.PermanentError:
            sup.metrics.reconcile_errors_total.labels("internal").inc()
            raise

    @kopf.on.delete(*resource, registry=registry)
    async def flowrun_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        sup: Supervisor = memo["supervisor"]
        await sup.delete_children(snapshot(body), runner=True)

    @kopf.on.event(*resource, registry=registry)
    def flowrun_observe(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        sup: Supervisor = memo["supervisor"]
        obj = event.get("object") or {}
        if event.get("type") == "DELETED":
            sup.metrics.forget(dict(obj))
        else:
            sup.metrics.observe(dict(obj), since=sup.started)

    return registry


async def _tick_metrics(metrics: FlowRunMetrics, every: float = 5.0) -> None:
    """Time moves gauges too: a silent run crosses its deadline with no event."""
    while True:
        await asyncio.sleep(every)
        metrics.tick()


async def run_operator(config: OperatorConfig, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or the process is signalled)."""
    if config.kubeconfig:
        os.environ["KUBECONFIG"] = config.kubeconfig  # kopf's login reads it from there
    api = KubeApi(load_api_client(config.kubeconfig))
    metrics = FlowRunMetrics()
    for namespace in config.namespaces:
        metrics.ensure_namespace(namespace)
    start_http_server(config.metrics_port, config.bind_address, registry=metrics.registry)
    # kopf's own flag says its startup is done; the preflight, that what it needs exists.
    ready = asyncio.Event()
    preflight = Preflight(
        api,
        default_backend=config.defaults.backend,
        namespaces=config.namespaces,
        all_namespaces=config.all_namespaces,
        peering=config.peering,
    )
    health = await serve_health(
        config.bind_address,
        config.health_port,
        lambda: ready.is_set() and preflight.ok,
        lambda: preflight.missing,
    )
    await preflight.check()
    ticker = asyncio.create_task(_tick_metrics(metrics))
    rechecks = asyncio.create_task(preflight.watch())
    memo = kopf.Memo(supervisor=Supervisor(config, api, metrics))
    standalone = config.peering is None
    try:
        await kopf.operator(
            registry=build_registry(),
            memo=memo,
            clusterwide=config.all_namespaces,
            namespaces=config.namespaces,
            standalone=standalone,
            peering_name=config.peering,
            priority=config.priority if config.priority is not None else random.randint(1, 10**6),
            ready_flag=ready,
            stop_flag=stop,
        )
    finally:
        ticker.cancel()
        rechecks.cancel()
        await health.cleanup()
        api.close()
