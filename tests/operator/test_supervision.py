"""The supervision decision as a table: each row is a FlowRun, its runner and its DaskCluster
at a given time, and what the operator does about it. No I/O and no clock: the time is
passed in, so a row about an hour-long deadline or a day-long TTL runs in microseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daskflow.kube.config import OperatorDefaults
from daskflow.kube.supervision import (
    DEADLINE_GRACE,
    IN_PROCESS,
    POD,
    RUNNER_EXIT_GRACE,
    Action,
    Adopt,
    DeleteChildren,
    DeleteFlowRun,
    Done,
    End,
    StartRunner,
    WaitUntil,
    WriteStatus,
    decide,
    decide_after_api_error,
    runner_task_view,
    setup_for,
)
from daskflow.model.states import Phase

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UID = "0f4e2a8c-1111-2222-3333-444455556666"
STARTED = {"phase": "Pending", "reason": "Starting", "runner": {"mode": "pod"}}
RUNNING = {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}
K8S, LOCAL = OperatorDefaults(backend="kubernetes"), OperatorDefaults(backend="local")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def flowrun(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": "etl", "namespace": "ns", "uid": UID, "creationTimestamp": stamp(0)},
        "spec": {"tasks": [{"name": "a", "command": ["true"]}], **spec},
        "status": status or {},
    }


def ours(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "etl-1", "ownerReferences": [{"uid": UID}]}, "status": status}


def strangers(kind: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "etl-1", "ownerReferences": [{"uid": "someone"}]}}


FAILED_JOB = ours(conditions=[{"type": "Failed", "status": "True"}])
ACTIVE = ours(active=1)
WORKING, FINISHED = runner_task_view(True, False), runner_task_view(True, True)  # in-process
ENDED = {"phase": "Succeeded", "completionTime": stamp(100), "startTime": stamp(1)}


def run(
    body: dict[str, Any],
    *,
    job: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    now: float = 1,
    mode: str = POD,
    defaults: OperatorDefaults = K8S,
    image_problem: str | None = None,
) -> list[Action]:
    setup = setup_for(body, mode, defaults)
    return decide(body, job, cluster, at(now), setup, image_problem=image_problem)


# -- every way the operator ends a run ---------------------------------------------------
ENDINGS = [
    # (id, decision, phase, reason, words of the message)
    (
        "invalid spec",
        lambda: run(flowrun(tasks=[{"name": "a", "command": ["echo", "$(tasks.a.result)"]}])),
        Phase.FAILED,
        "InvalidSpec",
        "depends on itself",
    ),
    (
        "invalid spec, in-process",
        lambda: run(flowrun(tasks=[{"name": "a"}]), mode=IN_PROCESS),
        Phase.FAILED,
        "InvalidSpec",
        "tasks[0]",
    ),
    (
        "service account not allowed",
        lambda: run(flowrun(serviceAccountName="admin")),
        Phase.FAILED,
        "ServiceAccountNotAllowed",
        "'admin' is not allowed",
    ),
    (
        "a stranger's Job under the runner's name",
        lambda: run(flowrun(), job=strangers("Job")),
        Phase.FAILED,
        "ChildConflict",
        "Job etl-1 already exists and belongs to someone else",
    ),
    (
        "a stranger's DaskCluster, in-process",
        lambda: run(flowrun(), cluster=strangers("DaskCluster"), mode=IN_PROCESS),
        Phase.FAILED,
        "ChildConflict",
        "DaskCluster etl-1 already exists",
    ),
    (
        "cancel, pod",
        lambda: run(flowrun(RUNNING, cancel=True), job=ACTIVE, cluster=ours()),
        Phase.CANCELLED,
        "Cancelled",
        "spec.cancel is true",
    ),
    (
        "cancel, in-process",
        lambda: run(flowrun(RUNNING, cancel=True), job=WORKING, mode=IN_PROCESS),
        Phase.CANCELLED,
        "Cancelled",
        "spec.cancel is true",
    ),
    (
        "deadline, counted from the start",
        lambda: run(
            flowrun({**RUNNING, "startTime": stamp(100)}, deadlineSeconds=60),
            job=ACTIVE,
            now=161 + DEADLINE_GRACE,
        ),
        Phase.FAILED,
        "DeadlineExceeded",
        "deadline of 60s exceeded",
    ),
    (
        "deadline of a runner that never started, counted from the creation",
        lambda: run(flowrun(STARTED, deadlineSeconds=60), job=ours(), now=61 + DEADLINE_GRACE),
        Phase.FAILED,
        "DeadlineExceeded",
        "60s",
    ),
    (
        "deadline, in-process",
        lambda: run(
            flowrun(RUNNING, deadlineSeconds=5),
            job=WORKING,
            mode=IN_PROCESS,
            defaults=LOCAL,
            now=6 + DEADLINE_GRACE,
        ),
        Phase.FAILED,
        "DeadlineExceeded",
        "5s",
    ),
    (
        "an image that cannot be pulled",
        lambda: run(flowrun(STARTED), job=ours(), image_problem="pod x cannot start: image"),
        Phase.FAILED,
        "ImagePullFailed",
        "pod x cannot start",
    ),
    (
        "cluster start timeout, pod",
        lambda: run(
            flowrun(STARTED, cluster={"startupTimeoutSeconds": 30}),
            job=ACTIVE,
            cluster=ours(),
            now=31,
        ),
        Phase.FAILED,
        "ClusterStartTimeout",
        "not ready within 30s",
    ),
    (
        "cluster start timeout, in-process",
        lambda: run(
            flowrun(STARTED, cluster={"adaptive": {"maximum": 3}}),
            job=WORKING,
            cluster=ours(),
            mode=IN_PROCESS,
            now=301,
        ),
        Phase.FAILED,
        "ClusterStartTimeout",
        "not ready within 300s",
    ),
    (
        "runner lost",
        lambda: run(flowrun(RUNNING), job=None, cluster=ours()),
        Phase.FAILED,
        "RunnerLost",
        "the runner Job is gone",
    ),
    (
        "runner lost while starting",
        lambda: run(flowrun(STARTED), job=None, cluster=ours()),
        Phase.FAILED,
        "RunnerLost",
        "gone",
    ),
    (
        "runner failed",
        lambda: run(flowrun(RUNNING), job=FAILED_JOB, cluster=ours()),
        Phase.FAILED,
        "RunnerFailed",
        "see its pods' logs",
    ),
]


@pytest.mark.parametrize(
    ("decision", "phase", "reason", "words"),
    [pytest.param(*row[1:], id=row[0]) for row in ENDINGS],  # type: ignore[arg-type]
)
def test_every_ending(decision: Any, phase: Phase, reason: str, words: str) -> None:
    actions = decision()
    assert len(actions) == 1, actions
    end = actions[0]
    assert isinstance(end, End)
    assert (end.phase, end.reason) == (phase, reason)
    assert words in end.message


# -- the same moments, one step before: nothing ends --------------------------------------
QUIET = [
    (
        "deadline within its grace",
        lambda: run(flowrun(RUNNING, deadlineSeconds=60), job=ACTIVE, now=60 + DEADLINE_GRACE),
    ),
    ("no deadline, days later", lambda: run(flowrun(RUNNING), job=ACTIVE, now=9 * 86400)),
    (
        "cluster start within its timeout",
        lambda: run(flowrun(STARTED), job=ACTIVE, cluster=ours(), now=300),
    ),
    (
        "a running run's cluster is not timed",
        lambda: run(flowrun(RUNNING), job=ACTIVE, cluster=ours(), now=9 * 86400),
    ),
    (
        "no cluster to time on the local backend",
        lambda: run(flowrun(STARTED), job=ACTIVE, defaults=LOCAL, now=9 * 86400),
    ),
    (
        "image problems count only while Pending",
        lambda: run(flowrun(RUNNING), job=ACTIVE, image_problem="x"),
    ),
    ("a healthy runner", lambda: run(flowrun(RUNNING), job=ACTIVE, cluster=ours())),
    (
        "a finished runner Job of a running run",
        lambda: run(flowrun(RUNNING), job=ours(succeeded=1)),
    ),
    ("an in-process runner at work", lambda: run(flowrun(RUNNING), job=WORKING, mode=IN_PROCESS)),
    (
        "an in-process runner done, its end not seen yet",
        lambda: run(flowrun(RUNNING), job=FINISHED, mode=IN_PROCESS),
    ),
]


@pytest.mark.parametrize("decision", [pytest.param(d, id=i) for i, d in QUIET])
def test_nothing_to_do(decision: Any) -> None:
    assert decision() == []


# -- starting a run -------------------------------------------------------------------------
def kinds(actions: list[Action]) -> list[str]:
    return [c["kind"] for a in actions if isinstance(a, Adopt) for c in a.children]


@pytest.mark.parametrize("mode", [POD, IN_PROCESS])
def test_an_adaptive_cluster_gets_its_autoscaler_in_both_modes(mode: str) -> None:
    """In-process mode used to create a DaskCluster of adaptive.minimum (0) workers and no
    autoscaler: the run waited forever for a worker."""
    actions = run(flowrun(cluster={"adaptive": {"maximum": 3}}), mode=mode)
    expected = ["DaskCluster", "DaskAutoscaler"] + (["Job"] if mode == POD else [])
    assert kinds(actions) == expected
    adopt = actions[0]
    assert isinstance(adopt, Adopt)
    scaler = adopt.children[1]
    cluster = adopt.children[0]["metadata"]["name"]
    assert scaler["spec"] == {"cluster": cluster, "minimum": 0, "maximum": 3}


def test_pod_mode_creates_its_children_then_says_it_waits() -> None:
    actions = run(flowrun())
    assert [type(a) for a in actions] == [Adopt, WriteStatus]
    assert kinds(actions) == ["DaskCluster", "Job"]
    status = actions[1]
    assert isinstance(status, WriteStatus)
    assert status.status["phase"] == "Pending" and status.status["reason"] == "Starting"
    assert status.status["message"] == "waiting for the runner and the Dask cluster"
    runner = status.status["runner"]
    assert runner["mode"] == "pod" and runner["backend"] == "kubernetes"
    assert runner["job"] == runner["cluster"]


def test_in_process_mode_creates_the_cluster_then_drives_the_run_itself() -> None:
    actions = run(flowrun(cluster={"startupTimeoutSeconds": 20}), mode=IN_PROCESS)
    assert [type(a) for a in actions] == [Adopt, WriteStatus, StartRunner]
    start = actions[2]
    assert isinstance(start, StartRunner)
    assert start.backend == "kubernetes"
    assert start.address is not None and start.address.endswith("-scheduler.ns.svc:8786")
    # The operator's ClusterStartTimeout comes first, not the runner's connect timeout
    assert start.connect_timeout > 20


def test_in_process_mode_on_the_local_backend_has_no_children() -> None:
    actions = run(flowrun(), mode=IN_PROCESS, defaults=LOCAL)
    assert kinds(actions) == []
    start = actions[-1]
    assert isinstance(start, StartRunner) and (start.backend, start.address) == ("local", None)


def test_a_successor_resumes_an_in_process_run_and_adopts_pod_children_untouched() -> None:
    resumed = run(flowrun(RUNNING), mode=IN_PROCESS, defaults=LOCAL)
    assert [type(a) for a in resumed] == [StartRunner]
    assert run(flowrun(STARTED), job=ACTIVE, cluster=ours()) == []


def test_a_spec_address_means_the_address_backend() -> None:
    actions = run(flowrun(cluster={"address": "tcp://sched:8786"}), mode=IN_PROCESS)
    start = actions[-1]
    assert isinstance(start, StartRunner)
    assert (start.backend, start.address) == ("address", "tcp://sched:8786")


# -- after the end --------------------------------------------------------------------------
def test_a_finished_run_loses_its_cluster_at_once_and_its_runner_once_it_exited() -> None:
    body = flowrun(ENDED)
    assert run(body, job=ACTIVE, cluster=ours(), now=101) == [DeleteChildren(("dask",))]
    assert run(body, job=ACTIVE, now=100 + RUNNER_EXIT_GRACE + 1) == [
        DeleteChildren(("runner",)),
        Done(),
    ]
    assert run(body, job=ours(succeeded=1), now=101) == [DeleteChildren(("runner",)), Done()]
    assert run(body, now=101) == [Done()]


def test_a_strangers_objects_are_never_deleted() -> None:
    body = flowrun(ENDED)
    assert run(body, job=strangers("Job"), cluster=strangers("DaskCluster"), now=101) == [Done()]


def test_an_in_process_runner_is_let_stop_by_itself() -> None:
    body = flowrun(ENDED)
    assert run(body, job=WORKING, mode=IN_PROCESS, defaults=LOCAL, now=9999) == []
    assert run(body, job=FINISHED, mode=IN_PROCESS, defaults=LOCAL, now=9999) == [Done()]


def test_ttl_waits_then_deletes_the_flowrun() -> None:
    body = flowrun(ENDED, ttlSecondsAfterFinished=3600)
    assert run(body, now=101) == [WaitUntil(at(100 + 3600))]
    assert run(body, now=100 + 3599) == [WaitUntil(at(100 + 3600))]
    assert run(body, now=100 + 3600) == [DeleteFlowRun(), Done()]
    assert run(flowrun(ENDED, ttlSecondsAfterFinished=0), now=100) == [DeleteFlowRun(), Done()]


def test_a_refused_spec_still_cleans_up_after_its_end() -> None:
    body = flowrun({**ENDED, "phase": "Failed"}, serviceAccountName="admin")
    assert run(body, job=ours(), cluster=ours(), now=101) == [
        DeleteChildren(("dask",)),
        DeleteChildren(("runner",)),
        Done(),
    ]


# -- while the API fails ----------------------------------------------------------------------
def test_api_errors_still_meet_the_deadline_and_say_why_a_run_waits() -> None:
    late = decide_after_api_error(flowrun(deadlineSeconds=5), at(6 + DEADLINE_GRACE), "boom")
    assert [(a.phase, a.reason) for a in late if isinstance(a, End)] == [
        (Phase.FAILED, "DeadlineExceeded")
    ]
    waiting = decide_after_api_error(flowrun(), at(1), "the operator retries: boom")
    assert waiting == [
        WriteStatus(
            {"phase": "Pending", "reason": "ApiError", "message": "the operator retries: boom"}
        )
    ]
    assert decide_after_api_error(flowrun(RUNNING), at(1), "boom") == []
    assert decide_after_api_error(flowrun(ENDED, deadlineSeconds=1), at(999), "boom") == []
