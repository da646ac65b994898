"""The kopf operator: one daemon per FlowRun, supervising it from start to TTL.

The daemon only fetches and carries out: what to do is decided by
:func:`daskflow.kube.supervision.decide`, the same way in both runner modes. In the default
``pod`` mode the operator never connects to a user's Dask cluster: it creates the run's
DaskCluster and runner Job (named after the FlowRun's name and uid, adopted if they already
exist and are ours), and the runner pod executes the graph and writes status. In
``in-process`` mode the daemon drives the engine itself through the very same
:func:`~daskflow.kube.runner.drive_flowrun`, which is for development, tests and trusted
single-tenant installs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import threading
from datetime import UTC, datetime
from typing import Any

import kopf

from ..model.runstate import end_run
from ..model.spec import API_GROUP, API_VERSION, PLURAL
from ..model.states import Phase
from . import supervision as sv
from .api import (
    DASKAUTOSCALERS,
    DASKCLUSTERS,
    FLOWRUNS,
    JOBS,
    KIND_RESOURCES,
    KubeApi,
    KubeApiError,
)
from .builders import LABEL_UID, child_name, is_owned_by
from .config import IN_PROCESS, POD, OperatorConfig
from .endpoints import serve_health, serve_metrics
from .metrics import FlowRunMetrics
from .pods import ImagePullWatch
from .readiness import DASK_KUBERNETES, DaskKubernetesMissing, Preflight
from .runner import RunnerSettings, drive_flowrun, task_names
from .status import RunEndedElsewhere, StatusWriter

log = logging.getLogger(__name__)

FINALIZER = "daskflow.io/finalizer"
SUPERVISE_INTERVAL = 1.0  # reading the live body: no API call
CHILD_POLL_INTERVAL = 5.0  # reading the Job and the DaskCluster: one GET each
RETRY_DELAY = 5.0  # after a failed API call
CHILD_KINDS = {"dask": (DASKAUTOSCALERS, DASKCLUSTERS), "runner": (JOBS,)}


def snapshot(body: Any) -> dict[str, Any]:
    """A plain, private copy of kopf's live body: never mutate the watched object."""
    return copy.deepcopy(dict(body))


def _terminal(body: dict[str, Any]) -> bool:
    return Phase((body.get("status") or {}).get("phase") or Phase.PENDING).terminal


class ChildConflict(Exception):
    """A child's deterministic name is taken by an object that is not this FlowRun's."""


class Supervisor:
    """Everything the handlers share: configuration, API access and metrics; and how each
    action of a decision is carried out."""

    def __init__(self, config: OperatorConfig, api: KubeApi, metrics: FlowRunMetrics) -> None:
        self.config = config
        self.api = api
        self.metrics = metrics
        self.started = datetime.now(UTC)

    async def create_or_adopt(self, obj: dict[str, Any], flow_uid: str) -> None:
        """Create a child; if it already exists and is ours, adopt it untouched."""
        res = KIND_RESOURCES[obj["kind"]]
        meta = obj["metadata"]
        try:
            await self.api.create(res, meta["namespace"], obj)
            return
        except KubeApiError as err:
            if err.status == 404 and res in DASK_KUBERNETES:  # a create's 404: no such CRD
                raise DaskKubernetesMissing(res) from err
            if err.status != 409:
                raise
        existing = await self.api.get(res, meta["namespace"], meta["name"])
        if existing is None:  # deleted meanwhile: try once more
            await self.api.create(res, meta["namespace"], obj)
        elif not is_owned_by(existing, flow_uid):
            raise ChildConflict(
                f"{obj['kind']} {meta['name']} already exists and belongs to someone else"
            )

    async def delete_children(self, body: dict[str, Any], kinds: tuple[str, ...]) -> None:
        """Delete the FlowRun's children of these kinds (see CHILD_KINDS) that are its own."""
        meta = body["metadata"]
        name = child_name(meta["name"], meta.get("uid", meta["name"]))
        for res in (res for kind in kinds for res in CHILD_KINDS[kind]):
            existing = await self.api.get(res, meta["namespace"], name)
            if existing is not None and is_owned_by(existing, meta.get("uid", "")):
                await self.api.delete(res, meta["namespace"], name)

    async def end(self, body: dict[str, Any], end: sv.End) -> dict[str, Any]:
        """End the run by force; returns the status it has now."""
        writer = StatusWriter(self.api, body, "operator")
        final = end_run(
            body.get("status") or {}, end.phase, end.reason, end.message, task_names(body)
        )
        with contextlib.suppress(RunEndedElsewhere):
            await writer.write(final)
        return writer.last

    async def write_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        with contextlib.suppress(RunEndedElsewhere):
            await StatusWriter(self.api, body, "operator").write(status)

    async def retrying(self, body: Any, err: Exception) -> None:
        """After a failed API call, until the daemon tries again."""
        snap = snapshot(body)
        message = f"the operator retries every {RETRY_DELAY:g}s: {err}"
        for action in sv.decide_after_api_error(snap, datetime.now(UTC), message):
            if isinstance(action, sv.End):
                await self.end(snap, action)
            elif isinstance(action, sv.WriteStatus):
                await self.write_status(snap, action.status)


class FlowRunDaemon:
    """One FlowRun's daemon: fetch, decide, carry out, until the decision says Done."""

    def __init__(self, sup: Supervisor, body: Any, stopped: kopf.DaemonStopped) -> None:
        self.sup, self.body, self.stopped = sup, body, stopped
        snap = snapshot(body)
        self.meta = snap["metadata"]
        self.namespace = self.meta["namespace"]
        self.name = child_name(self.meta["name"], self.meta.get("uid", self.meta["name"]))
        self.setup = sv.setup_for(snap, sup.config.runner, sup.config.defaults)
        self.job: dict[str, Any] | None = None
        self.cluster: dict[str, Any] | None = None
        self.fetch_at = 0.0  # loop time of the next fetch of the children
        self.images = ImagePullWatch()
        self.ended: dict[str, Any] | None = None  # the status it ended the run with
        self.runner: asyncio.Task[Any] | None = None
        self.writing = threading.Event()  # cleared: the in-process runner writes nothing
        self.writing.set()

    def view(self) -> dict[str, Any]:
        """The FlowRun as it is now; an end this daemon wrote counts before kopf sees it."""
        snap = snapshot(self.body)
        if self.ended is not None and not _terminal(snap):
            snap["status"] = self.ended
        return snap

    async def fetch(self, snap: dict[str, Any]) -> str | None:
        """Refresh the runner Job and the DaskCluster (every CHILD_POLL_INTERVAL, at once
        after a change); returns why a pod cannot pull its image, if one cannot."""
        loop = asyncio.get_running_loop()
        if loop.time() < self.fetch_at and not _terminal(snap):
            return None
        self.fetch_at = loop.time() + CHILD_POLL_INTERVAL
        namespace = self.namespace
        if self.setup.mode == POD:
            self.job = await self.sup.api.get(JOBS, namespace, self.name)
        if self.setup.backend in ("kubernetes", ""):  # "": unknown, the spec was refused
            self.cluster = await self.sup.api.get(DASKCLUSTERS, namespace, self.name)
        phase = Phase((snap.get("status") or {}).get("phase") or Phase.PENDING)
        if phase != Phase.PENDING or not self.setup.children:
            return None  # only a run that waits for its pods looks at them
        selector = f"{LABEL_UID}={self.meta['uid']}"
        pods = await self.sup.api.list_pods(namespace, selector)
        return self.images.problem(pods, loop.time())

    def runner_view(self) -> dict[str, Any] | None:
        if self.setup.mode == POD:
            return self.job
        if self.runner is not None and self.runner.done() and not self.runner.cancelled():
            self.runner.result()  # an in-process runner that crashed: kopf retries
        done = self.runner is None or self.runner.done()
        return sv.runner_task_view(self.runner is not None, done)

    async def run(self) -> None:
        first = True
        try:
            while not self.stopped.is_set():
                snap = self.view()
                pulls, job, now = await self.fetch(snap), self.runner_view(), datetime.now(UTC)
                actions = sv.decide(snap, job, self.cluster, now, self.setup, image_problem=pulls)
                if first:  # what a successor found, for whoever reads the log
                    what = ", ".join(type(a).__name__ for a in actions) or "nothing to do"
                    log.info("%s/%s: supervising: %s", self.namespace, self.meta["name"], what)
                    first = False
                wait = SUPERVISE_INTERVAL
                for action in actions:
                    if isinstance(action, sv.Done):
                        return
                    if isinstance(action, sv.WaitUntil):
                        wait = max((action.when - now).total_seconds(), 0.0)
                    elif not await self.carry_out(action, snap):
                        break
                await self.stopped.wait(wait)
            # Stopped: a FlowRun being deleted is cancelled by its in-process runner (which
            # sees the deletion); an operator that exits leaves the run to a successor.
            reason = self.stopped.reason
            deleted = reason is not None and reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
            if self.runner is not None and deleted:
                with contextlib.suppress(asyncio.CancelledError):
                    await self.runner
        finally:
            if self.runner is not None and not self.runner.done():
                self.writing.clear()  # the operator is exiting: leave the run to a successor
                self.runner.cancel()

    async def carry_out(self, action: sv.Action, snap: dict[str, Any]) -> bool:
        """Carry out one action; False: the run ended meanwhile, skip the rest."""
        meta, sup = self.meta, self.sup
        self.fetch_at = 0.0  # whatever it changed, look again
        if isinstance(action, sv.Adopt):
            for child in action.children:
                try:
                    await sup.create_or_adopt(child, meta["uid"])
                except (ChildConflict, DaskKubernetesMissing) as err:
                    reason = "ChildConflict" if isinstance(err, ChildConflict) else err.reason
                    self.ended = await sup.end(snap, sv.End(Phase.FAILED, reason, str(err)))
                    return False
        elif isinstance(action, sv.WriteStatus):
            await sup.write_status(snap, action.status)
        elif isinstance(action, sv.End):
            log.info(
                "%s/%s: %s: %s", meta["namespace"], meta["name"], action.reason, action.message
            )
            self.ended = await sup.end(snap, action)
            return False
        elif isinstance(action, sv.StartRunner):
            self.runner = asyncio.create_task(self.drive(action))
        elif isinstance(action, sv.DeleteChildren):
            await sup.delete_children(snap, action.kinds)
        elif isinstance(action, sv.DeleteFlowRun):
            log.info("deleting %s/%s: ttlSecondsAfterFinished", meta["namespace"], meta["name"])
            await sup.api.delete(FLOWRUNS, meta["namespace"], meta["name"])
        return True

    async def drive(self, start: sv.StartRunner) -> Any:
        settings = RunnerSettings(
            backend=start.backend,
            address=start.address,
            connect_timeout=start.connect_timeout,
            status_interval=self.sup.config.defaults.status_interval,
            component="operator",
            may_write=self.writing.is_set,
        )
        return await drive_flowrun(
            self.sup.api,
            self.meta["namespace"],
            self.meta["name"],
            settings,
            poll=lambda: snapshot(self.body),
            extra_status={"runner": {"mode": IN_PROCESS}},
        )


def build_registry() -> kopf.OperatorRegistry:
    """The operator's handlers, on a registry of their own (nothing global at import)."""
    registry = kopf.OperatorRegistry()
    resource = (API_GROUP, API_VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
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
    async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
        # The credentials daskflow's own client uses: one login, one account.
        sup: Supervisor = memo["supervisor"]
        return await sup.api.connection_info()

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
            await FlowRunDaemon(sup, body, stopped).run()
        except KubeApiError as err:
            sup.metrics.reconcile_errors_total.labels("api").inc()
            with contextlib.suppress(KubeApiError):
                await sup.retrying(body, err)
            raise kopf.TemporaryError(f"API error: {err}", delay=RETRY_DELAY) from err
        except kopf.PermanentError:
            sup.metrics.reconcile_errors_total.labels("internal").inc()
            raise

    @kopf.on.delete(*resource, registry=registry)
    async def flowrun_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        sup: Supervisor = memo["supervisor"]
        await sup.delete_children(snapshot(body), tuple(CHILD_KINDS))

    @kopf.on.event(*resource, registry=registry)
    async def flowrun_observe(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
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
    """Run until ``stop`` is set (or the process is signalled); everything it started, its
    API client and HTTP servers included, is stopped and closed when it returns."""
    async with contextlib.AsyncExitStack() as stack:
        api = await KubeApi.connect(config.kubeconfig)
        stack.push_async_callback(api.close)
        metrics = FlowRunMetrics()
        for namespace in config.namespaces:
            metrics.ensure_namespace(namespace)
        address = config.bind_address
        served = await serve_metrics(address, config.metrics_port, metrics.registry)
        stack.push_async_callback(served.cleanup)
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
            address,
            config.health_port,
            lambda: ready.is_set() and preflight.ok,
            lambda: preflight.missing,
        )
        stack.push_async_callback(health.cleanup)
        await preflight.check()
        for task in (
            asyncio.create_task(_tick_metrics(metrics)),
            asyncio.create_task(preflight.watch()),
        ):
            stack.callback(task.cancel)
        memo = kopf.Memo(supervisor=Supervisor(config, api, metrics))
        await kopf.operator(
            registry=build_registry(),
            memo=memo,
            clusterwide=config.all_namespaces,
            namespaces=config.namespaces,
            standalone=config.peering is None,
            peering_name=config.peering,
            priority=config.priority if config.priority is not None else random.randint(1, 10**6),
            ready_flag=ready,
            stop_flag=stop,
        )
