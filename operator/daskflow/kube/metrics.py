"""Prometheus metrics, derived from the FlowRun status transitions the operator watches.

In the default pod mode the operator never talks to a run's Dask cluster, so everything it
knows about tasks comes from status. :class:`FlowRunMetrics` remembers the last status it
saw per FlowRun and counts what moved. Labels are bounded: namespace, phase, state and
backend, never a FlowRun's name or uid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from ..model.spec import BACKENDS, ClusterSpec
from ..model.states import Phase, TaskState
from ..model.status import parse_time

DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
TASK_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
STARTUP_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
DEFAULT_WORKERS = ClusterSpec().workers  # what a spec without cluster.workers asks for
ERROR_REASONS = ("api", "cluster", "runner", "internal")
# Runs ended by the operator itself, by why: infrastructure, not the user's tasks.
ENDED_BY_REASON = {
    "ClusterStartTimeout": "cluster",
    "ClusterUnavailable": "cluster",
    "RunnerFailed": "runner",
    "RunnerLost": "runner",
}


class FlowRunMetrics:
    """``clock``: the time in seconds since the epoch, which decides what is overdue."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.flowruns_total = Counter(
            "daskflow_flowruns_total",
            "FlowRuns that finished, by phase.",
            ["namespace", "phase"],
            registry=r,
        )
        self.flowruns_running = Gauge(
            "daskflow_flowruns_running",
            "FlowRuns Pending or Running now.",
            ["namespace"],
            registry=r,
        )
        self.flowruns_overdue = Gauge(
            "daskflow_flowruns_overdue",
            "Unfinished FlowRuns past their deadline.",
            ["namespace"],
            registry=r,
        )
        self.flowrun_duration = Histogram(
            "daskflow_flowrun_duration_seconds",
            "Wall time of finished FlowRuns.",
            ["namespace", "phase"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.task_runs_total = Counter(
            "daskflow_task_runs_total",
            "Tasks that reached a terminal state.",
            ["namespace", "state"],
            registry=r,
        )
        self.task_duration = Histogram(
            "daskflow_task_duration_seconds",
            "Wall time of finished tasks.",
            ["namespace"],
            buckets=TASK_BUCKETS,
            registry=r,
        )
        self.task_retries_total = Counter(
            "daskflow_task_retries_total",
            "Retried task attempts (mapped items included).",
            ["namespace"],
            registry=r,
        )
        self.cluster_startup = Histogram(
            "daskflow_cluster_startup_seconds",
            "Time until a run's Dask cluster was ready.",
            ["backend"],
            buckets=STARTUP_BUCKETS,
            registry=r,
        )
        self.cluster_workers = Gauge(
            "daskflow_cluster_workers",
            "Requested Dask workers of unfinished FlowRuns.",
            ["namespace"],
            registry=r,
        )
        self.status_patches_total = Counter(
            "daskflow_status_patches_total", "FlowRun status updates observed.", registry=r
        )
        self.reconcile_errors_total = Counter(
            "daskflow_reconcile_errors_total",
            "Errors while reconciling FlowRuns, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in ERROR_REASONS:
            self.reconcile_errors_total.labels(reason)
        for backend in BACKENDS:
            self.cluster_startup.labels(backend)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self._seen: dict[str, tuple[str, dict[str, Any]]] = {}  # uid -> (namespace, status)
        self._live: dict[str, tuple[str, int, float | None]] = {}  # uid -> ns, workers, deadline
        self._namespaces: set[str] = set()

    def ensure_namespace(self, namespace: str) -> None:
        """Create every series of a namespace at zero, so rates and alerts see it at once."""
        if namespace in self._namespaces:
            return
        self._namespaces.add(namespace)
        for phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED):
            self.flowruns_total.labels(namespace, str(phase))
        for state in TaskState:
            if state.terminal:
                self.task_runs_total.labels(namespace, str(state))
        self.task_retries_total.labels(namespace)
        for phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED):
            self.flowrun_duration.labels(namespace, str(phase))
        self.task_duration.labels(namespace)
        self.flowruns_running.labels(namespace)
        self.flowruns_overdue.labels(namespace)
        self.cluster_workers.labels(namespace)

    def observe(self, body: dict[str, Any], *, since: datetime | None = None) -> None:
        """Count what changed in one FlowRun since its last observed status.

        ``since``: on the first sight of a FlowRun (after an operator restart), only what
        finished after this instant is counted, so history is not counted twice.
        """
        meta = body.get("metadata") or {}
        uid, namespace = meta.get("uid", ""), meta.get("namespace", "default")
        status = body.get("status") or {}
        self.ensure_namespace(namespace)
        previous = self._seen.get(uid, (namespace, None))[1] if uid in self._seen else None
        old = previous or {}
        fresh = previous is None

        def counts(stamp: str | None) -> bool:
            if not fresh or since is None:
                return True
            return stamp is not None and parse_time(stamp) >= since.replace(microsecond=0)

        if status and status != old and not fresh:
            self.status_patches_total.inc()
        runner = status.get("runner") or {}
        startup = runner.get("clusterStartupSeconds")
        first_startup = (old.get("runner") or {}).get("clusterStartupSeconds") is None
        new_here = not fresh or since is None or counts(status.get("startTime"))
        if startup is not None and first_startup and new_here:
            self.cluster_startup.labels(str(runner.get("backend", "unknown"))).observe(
                float(startup)
            )
        phase = Phase(status.get("phase") or Phase.PENDING)
        if phase.terminal and old.get("phase") != phase and counts(status.get("completionTime")):
            self.flowruns_total.labels(namespace, str(phase)).inc()
            infrastructure = ENDED_BY_REASON.get(str(status.get("reason")))
            if infrastructure:
                self.reconcile_errors_total.labels(infrastructure).inc()
            if status.get("startTime") and status.get("completionTime"):
                seconds = (
                    parse_time(status["completionTime"]) - parse_time(status["startTime"])
                ).total_seconds()
                self.flowrun_duration.labels(namespace, str(phase)).observe(max(seconds, 0))
        old_tasks = old.get("tasks") or {}
        for name, rec in (status.get("tasks") or {}).items():
            before = old_tasks.get(name) or {}
            state = TaskState(rec.get("state", "Pending"))
            retries = int(rec.get("retries", 0)) - int(before.get("retries", 0) if not fresh else 0)
            if retries > 0 and (not fresh or since is None):
                self.task_retries_total.labels(namespace).inc(retries)
            if not state.terminal or before.get("state") == state:
                continue
            if not counts(rec.get("completionTime")):
                continue
            self.task_runs_total.labels(namespace, str(state)).inc()
            if (
                state in (TaskState.SUCCEEDED, TaskState.FAILED)
                and rec.get("startTime")
                and rec.get("completionTime")
            ):
                seconds = (
                    parse_time(rec["completionTime"]) - parse_time(rec["startTime"])
                ).total_seconds()
                self.task_duration.labels(namespace).observe(max(seconds, 0))
        self._seen[uid] = (namespace, status)
        spec = body.get("spec") or {}
        if phase.terminal or meta.get("deletionTimestamp"):
            self._live.pop(uid, None)
        else:
            cluster = spec.get("cluster") or {}
            workers = int(cluster.get("workers", DEFAULT_WORKERS))
            deadline = None
            since = status.get("startTime") or meta.get("creationTimestamp")
            if spec.get("deadlineSeconds") and since:
                deadline = parse_time(since).timestamp() + float(spec["deadlineSeconds"])
            self._live[uid] = (namespace, workers, deadline)
        self._refresh_gauges()

    def forget(self, body: dict[str, Any]) -> None:
        uid = (body.get("metadata") or {}).get("uid", "")
        self._seen.pop(uid, None)
        self._live.pop(uid, None)
        self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        now = self.clock()
        running: dict[str, int] = {}
        workers: dict[str, int] = {}
        overdue: dict[str, int] = {}
        for namespace, count, deadline in self._live.values():
            running[namespace] = running.get(namespace, 0) + 1
            workers[namespace] = workers.get(namespace, 0) + count
            if deadline is not None and now > deadline:
                overdue[namespace] = overdue.get(namespace, 0) + 1
        for namespace in self._namespaces:
            self.flowruns_running.labels(namespace).set(running.get(namespace, 0))
            self.cluster_workers.labels(namespace).set(workers.get(namespace, 0))
            self.flowruns_overdue.labels(namespace).set(overdue.get(namespace, 0))

    def tick(self) -> None:
        """Re-evaluate time-based gauges (overdue runs)."""
        self._refresh_gauges()
