"""Supervising one FlowRun, as a decision without I/O and without a clock of its own.

The kopf daemon (:mod:`daskflow.kube.operator`) fetches what a decision needs (the FlowRun,
its runner Job, its DaskCluster), passes the time, and carries out the actions returned, in
order. Every rule of a run's life outside its tasks is here, the same for both runner modes:
which children to create or adopt, when to end a run by force (cancel, deadline, a cluster
that does not start, a runner lost or failed, an image that cannot be pulled, a child's name
taken by a stranger), what to clean up after it, and when its TTL deletes it. Each rule is
a row of a table test, with the time passed in.

In ``in-process`` mode the runner is a task of the operator itself: the daemon passes it as
``job`` (:func:`runner_task_view`), so the same rules see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..model.states import Phase
from ..model.status import parse_time
from ..model.validate import ManifestError, parse_flowrun
from .builders import (
    build_dask_autoscaler_spec,
    build_dask_cluster_spec,
    build_runner_job,
    child_name,
    is_owned_by,
    scheduler_address,
    service_account_problem,
)
from .config import IN_PROCESS, POD, OperatorDefaults

DEADLINE_GRACE = 10.0  # the runner enforces the deadline itself; this is the backstop
RUNNER_EXIT_GRACE = 10.0  # after a run ends, how long its runner may take to exit
API_ERROR = "ApiError"  # the reason of a run the operator cannot start yet
STARTING = "Starting"


# -- actions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Adopt:
    """Create these children, in order; one that exists already and is ours is adopted."""

    children: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class WriteStatus:
    """Write this to the run's status (a merge with what is there)."""

    status: dict[str, Any]


@dataclass(frozen=True)
class StartRunner:
    """In-process mode: drive the run in the operator, on this backend and scheduler."""

    backend: str
    address: str | None
    connect_timeout: float  # how long it waits for the scheduler


@dataclass(frozen=True)
class End:
    """End the run by force: unfinished tasks become Cancelled, the run takes ``phase``."""

    phase: Phase
    reason: str
    message: str


@dataclass(frozen=True)
class DeleteChildren:
    """Delete the run's children of these kinds that are ours ("dask": cluster and
    autoscaler; "runner": the Job)."""

    kinds: tuple[str, ...]


@dataclass(frozen=True)
class DeleteFlowRun:
    """The run's ``ttlSecondsAfterFinished`` has passed."""


@dataclass(frozen=True)
class WaitUntil:
    """Nothing to do before this instant (a TTL still running)."""

    when: datetime


@dataclass(frozen=True)
class Done:
    """Nothing is left to do for this FlowRun: the daemon may stop."""


Action = Adopt | WriteStatus | StartRunner | End | DeleteChildren | DeleteFlowRun | WaitUntil | Done


# -- what the operator runs for a FlowRun ---------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """What the operator runs for one FlowRun, read from its spec once, with the operator's
    defaults. ``refused``: why the operator cannot run this spec at all."""

    mode: str
    backend: str = ""
    uid: str = ""
    children: tuple[dict[str, Any], ...] = ()
    runner: dict[str, Any] | None = None  # status.runner, as the operator records it
    address: str | None = None  # the scheduler an in-process runner connects to
    startup_timeout: float = 0.0
    refused: End | None = None


def setup_for(flowrun: dict[str, Any], mode: str, defaults: OperatorDefaults) -> Setup:
    """Parse the FlowRun's spec (once per daemon) into what the operator runs for it."""
    try:
        flow = parse_flowrun(
            {k: flowrun[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in flowrun},
            "FlowRun",
        )
    except ManifestError as err:
        return Setup(mode, refused=End(Phase.FAILED, "InvalidSpec", str(err)))
    meta = flowrun["metadata"]
    uid = meta["uid"]
    name = child_name(meta["name"], uid)
    backend = flow.spec.cluster.resolved_backend(defaults.backend)
    problem = service_account_problem(flow, defaults) if mode == POD else None
    if problem is not None:
        return Setup(mode, refused=End(Phase.FAILED, "ServiceAccountNotAllowed", problem))
    children: list[dict[str, Any]] = []
    runner: dict[str, Any] = {"backend": backend, "mode": mode}
    address = flow.spec.cluster.address
    if backend == "kubernetes":
        children.append(build_dask_cluster_spec(flow, defaults, name))
        autoscaler = build_dask_autoscaler_spec(flow, name)
        if autoscaler is not None:
            children.append(autoscaler)
        runner["cluster"] = name
        address = scheduler_address(name, meta["namespace"])
    if mode == POD:
        children.append(build_runner_job(flow, defaults, backend))
        runner["job"] = name
    return Setup(
        mode,
        backend,
        uid,
        tuple(children),
        runner,
        address if backend != "local" else None,
        flow.spec.cluster.startup_timeout_seconds,
    )


def runner_task_view(started: bool, done: bool) -> dict[str, Any] | None:
    """An in-process runner task, shaped as the part of a Job that decisions read."""
    if not started:
        return None
    return {"status": {"succeeded": 1} if done else {"active": 1}}


# -- the decision ----------------------------------------------------------------------------
def deadline_exceeded(flowrun: dict[str, Any], now: datetime) -> float | None:
    """The run's ``deadlineSeconds`` if it passed more than the grace ago, else None.

    A runner that never started (say, its image cannot be pulled) has written no startTime:
    the deadline then counts from the FlowRun's creation.
    """
    deadline = (flowrun.get("spec") or {}).get("deadlineSeconds")
    meta = flowrun.get("metadata") or {}
    since = (flowrun.get("status") or {}).get("startTime") or meta.get("creationTimestamp")
    if deadline and since and (now - parse_time(since)).total_seconds() > deadline + DEADLINE_GRACE:
        return float(deadline)
    return None


def _failed(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Failed" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _deadline_end(deadline: float) -> End:
    return End(Phase.FAILED, "DeadlineExceeded", f"deadline of {deadline:g}s exceeded")


def _unstarted(status: dict[str, Any]) -> bool:
    """The operator has not (successfully) started this run yet."""
    return not status.get("phase") or status.get("reason") == API_ERROR


def decide(
    flowrun: dict[str, Any],
    job: dict[str, Any] | None,
    cluster: dict[str, Any] | None,
    now: datetime,
    setup: Setup,
    *,
    image_problem: str | None = None,
) -> list[Action]:
    """What to do now for this FlowRun, given its runner (``job``), its DaskCluster, the
    time, and (while Pending) why one of its pods cannot pull its image."""
    status = flowrun.get("status") or {}
    phase = Phase(status.get("phase") or Phase.PENDING)
    if phase.terminal:
        return _after_end(flowrun, job, cluster, now, setup)
    if setup.refused is not None:
        return [setup.refused]
    uid = setup.uid
    for child in (job if setup.mode == POD else None, cluster):
        if child is not None and not is_owned_by(child, uid):
            meta = child.get("metadata") or {}
            kind = child.get("kind") or ("Job" if child is job else "DaskCluster")
            message = f"{kind} {meta.get('name')} already exists and belongs to someone else"
            return [End(Phase.FAILED, "ChildConflict", message)]
    if (flowrun.get("spec") or {}).get("cancel"):
        return [End(Phase.CANCELLED, "Cancelled", "cancelled: spec.cancel is true")]
    deadline = deadline_exceeded(flowrun, now)
    if deadline is not None:
        return [_deadline_end(deadline)]
    if phase == Phase.PENDING:
        if image_problem is not None:
            return [End(Phase.FAILED, "ImagePullFailed", image_problem)]
        created = parse_time(flowrun["metadata"]["creationTimestamp"])
        if setup.backend == "kubernetes" and now - created > timedelta(
            seconds=setup.startup_timeout
        ):
            message = f"the Dask cluster was not ready within {setup.startup_timeout:g}s"
            return [End(Phase.FAILED, "ClusterStartTimeout", message)]
    actions: list[Action] = []
    if _unstarted(status):
        actions.append(Adopt(setup.children))
        waiting = "the runner" + (" and the Dask cluster" if setup.backend == "kubernetes" else "")
        starting = {"phase": str(Phase.PENDING), "reason": STARTING, "runner": setup.runner}
        actions.append(WriteStatus({**starting, "message": f"waiting for {waiting}"}))
    elif setup.mode == POD:
        if job is None:
            return [End(Phase.FAILED, "RunnerLost", "the runner Job is gone")]
        if _failed(job):
            return [End(Phase.FAILED, "RunnerFailed", "the runner Job failed: see its pods' logs")]
    if setup.mode == IN_PROCESS and job is None:
        # A DaskCluster that does not start is this decision's ClusterStartTimeout: the
        # runner waits longer, so that the run ends with that reason, not ClusterUnavailable.
        grace = DEADLINE_GRACE if setup.backend == "kubernetes" else 0.0
        actions.append(StartRunner(setup.backend, setup.address, setup.startup_timeout + grace))
    return actions


def _after_end(
    flowrun: dict[str, Any],
    job: dict[str, Any] | None,
    cluster: dict[str, Any] | None,
    now: datetime,
    setup: Setup,
) -> list[Action]:
    """A finished run: nothing of it needs to keep running. Its runner is let finish (its
    last Event) before its Job goes; then the TTL, if any, deletes the FlowRun."""
    status = flowrun.get("status") or {}
    uid = flowrun["metadata"].get("uid", "")
    actions: list[Action] = []
    if cluster is not None and is_owned_by(cluster, uid):
        actions.append(DeleteChildren(("dask",)))
    done = status.get("completionTime")
    ended = parse_time(done) if done else now
    if setup.mode == POD and job is not None and is_owned_by(job, uid):
        if (job.get("status") or {}).get("active") and now < ended + timedelta(
            seconds=RUNNER_EXIT_GRACE
        ):
            return actions  # the runner is still exiting
        actions.append(DeleteChildren(("runner",)))
    if setup.mode == IN_PROCESS and job is not None and (job.get("status") or {}).get("active"):
        return actions  # the in-process runner sees the end itself and stops
    ttl = (flowrun.get("spec") or {}).get("ttlSecondsAfterFinished")
    if ttl is None or not done:
        return [*actions, Done()]
    expiry = ended + timedelta(seconds=float(ttl))
    return [*actions, *((DeleteFlowRun(), Done()) if now >= expiry else (WaitUntil(expiry),))]


def decide_after_api_error(flowrun: dict[str, Any], now: datetime, error: str) -> list[Action]:
    """An API call failed and the daemon will try again: meanwhile the run still meets its
    deadline, and a run without a phase gets one that says why it waits."""
    status = flowrun.get("status") or {}
    if Phase(status.get("phase") or Phase.PENDING).terminal:
        return []
    deadline = deadline_exceeded(flowrun, now)
    if deadline is not None:
        return [_deadline_end(deadline)]
    if _unstarted(status):
        return [WriteStatus({"phase": str(Phase.PENDING), "reason": API_ERROR, "message": error})]
    return []
