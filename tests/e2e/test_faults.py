"""Faults with real pods: each run ends in the right terminal phase, with nothing left.

Pods are deleted with ``--grace-period=0 --force``, as a node or process crash would take
them: no clean shutdown. The seconds each reaction took are recorded in ``run.marks``
and printed, so a slow path shows in the output.
"""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.conftest import operator_pod, operator_ready
from tests.e2e.scenario import Scenario

from harness.realcluster import Install

# Bounds this tier promises (README, "Run the operator"); measured values are printed.
SCHEDULER_LOSS_BOUND = 60.0  # scheduler pod gone → the run has Failed
PODS_GONE_BOUND = 20.0  # cancel or delete → every pod of the run is gone


def flow(name: str, tasks: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {
            "cluster": {"backend": "kubernetes"},
            "deadlineSeconds": 600,
            "tasks": tasks,
            **spec,
        },
    }


def chain_with_hold(seconds: int) -> list[dict[str, Any]]:
    """``token`` (a fresh random value), ``hold`` (sleeps), ``echo`` (repeats the token)."""
    return [
        {"name": "token", "command": ["cat", "/proc/sys/kernel/random/uuid"]},
        {"name": "hold", "command": ["sleep", str(seconds)], "dependsOn": ["token"]},
        {"name": "echo", "command": ["echo", "$(tasks.token.result)"], "dependsOn": ["hold"]},
    ]


CHAIN_DONE = {"token": "Succeeded", "hold": "Succeeded", "echo": "Succeeded"}


def test_worker_pod_lost_mid_run_still_succeeds(flows: Scenario) -> None:
    tasks = [
        {"name": "start", "command": ["echo", "go"]},
        {"name": "work", "map": list(range(4)), "command": ["sleep", "8"], "dependsOn": ["start"]},
        {"name": "sum", "command": ["echo", "$(tasks.work.result)"]},
    ]
    run = flows.given.flowrun(flow("worker-loss", tasks))
    run.when.applied().task_reached("work", "Running").pod_deleted("worker").finished()
    run.then.phase_is("Succeeded").tasks_are(
        {"start": "Succeeded", "work": "Succeeded", "sum": "Succeeded"}
    )
    assert run.seen_running["worker"] >= 3, run.pod_names  # the Deployment replaced it
    run.nothing_left().argocd_health_was("Progressing", "Healthy")
    print("worker loss:", run.marks)


def test_operator_pod_lost_mid_run_leaves_the_run_undisturbed(
    flows: Scenario, installed: Install
) -> None:
    run = flows.given.flowrun(flow("operator-loss", chain_with_hold(40)))
    run.when.applied().task_reached("hold", "Running")
    old = operator_pod(installed)
    installed.kubectl.run(
        "delete", "pod", old, "-n", installed.system_namespace, "--grace-period=0", "--force"
    )
    new = operator_ready(installed)
    run.mark("new operator Ready")
    assert new != old
    # The successor took over while the run was still going: it adopted the children.
    assert run.observe()["phase"] == "Running", "the run ended before the new operator came"
    for kind in ("daskclusters", "jobs"):
        owned = run.k.list(kind, run.namespace, f"daskflow.io/flowrun-uid={run.uid}")
        assert len(owned) == 1, [o["metadata"]["name"] for o in owned]
    run.finished()
    run.then.phase_is("Succeeded").tasks_are(CHAIN_DONE)
    assert run.seen_running["runner"] == 1 and run.seen_running["scheduler"] == 1, run.pod_names
    assert "restarts" not in run.status["runner"], run.status["runner"]
    run.nothing_left().argocd_health_was("Progressing", "Healthy")
    print("operator loss:", run.marks)


def test_runner_pod_lost_mid_run_resumes_without_rerunning(flows: Scenario) -> None:
    run = flows.given.flowrun(flow("runner-loss", chain_with_hold(20)))
    run.when.applied().task_reached("hold", "Running")
    token = run.status["tasks"]["token"]
    run.when.pod_deleted("runner").finished()
    run.then.phase_is("Succeeded").tasks_are(CHAIN_DONE)
    assert run.status["runner"]["restarts"] == 1, run.status["runner"]
    assert run.seen_running["runner"] == 2, run.pod_names
    # `token` ran once: its random value, start time and attempts are those of before the
    # loss, and `echo`, which ran after it, got that same value from the cluster.
    after = run.status["tasks"]["token"]
    assert (after["result"], after["startTime"], after["attempts"]) == (
        token["result"],
        token["startTime"],
        1,
    )
    assert run.result_of("echo") == token["result"]
    run.nothing_left().argocd_health_was("Progressing", "Healthy")
    print("runner loss:", run.marks)


def test_scheduler_pod_lost_mid_run_fails_in_bounded_time(flows: Scenario) -> None:
    run = flows.given.flowrun(flow("scheduler-loss", chain_with_hold(120)))
    run.when.applied().task_reached("hold", "Running").pod_deleted("scheduler")
    lost = time.monotonic()
    run.finished(timeout=SCHEDULER_LOSS_BOUND)
    took = time.monotonic() - lost
    run.then.phase_is("Failed", reason="SchedulerLost")
    print(f"scheduler loss: Failed {took:.1f}s after the pod was deleted; {run.status['message']}")
    assert "scheduler" in run.status["message"].lower()
    run.nothing_left().argocd_health_was("Progressing", "Degraded")


def test_missing_image_fails_fast_and_cleans_up(flows: Scenario) -> None:
    run = flows.given.flowrun(
        flow(
            "no-image",
            [{"name": "never", "command": ["echo", "never"]}],
            image="daskflow:does-not-exist",
            cluster={"backend": "kubernetes", "startupTimeoutSeconds": 90},
        )
    )
    run.when.applied().finished(timeout=150)
    run.then.phase_is("Failed", reason="ImagePullFailed").tasks_are({"never": "Cancelled"})
    assert "daskflow:does-not-exist" in run.status["message"], run.status["message"]
    run.nothing_left().events_include("Failed")
    print("missing image:", run.marks, run.status["message"])


def test_cancel_mid_run_removes_every_pod_within_seconds(flows: Scenario) -> None:
    run = flows.given.flowrun(flow("cancel", chain_with_hold(300)))
    run.when.applied().task_reached("hold", "Running").cancelled()
    run.finished(timeout=30)
    run.then.phase_is("Cancelled").tasks_are(
        {"token": "Succeeded", "hold": "Cancelled", "echo": "Cancelled"}
    )
    run.nothing_left(timeout=PODS_GONE_BOUND).argocd_health_was("Progressing", "Degraded")
    print("cancel:", run.marks)
    assert run.marks["nothing left"] - run.marks["cancel"] <= PODS_GONE_BOUND, run.marks


def test_delete_mid_run_removes_every_pod_within_seconds(flows: Scenario) -> None:
    run = flows.given.flowrun(flow("delete", chain_with_hold(300)))
    run.when.applied().task_reached("hold", "Running").deleted().gone(timeout=PODS_GONE_BOUND)
    run.then.nothing_left(timeout=PODS_GONE_BOUND)
    print("delete:", run.marks)
    assert run.marks["nothing left"] - run.marks["delete"] <= PODS_GONE_BOUND, run.marks
