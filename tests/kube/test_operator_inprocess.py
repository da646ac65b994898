"""The operator's lifecycle on a real API server, with the in-process runner and the local
backend: the operator runs as a ServiceAccount bound to exactly its RBAC rules.

Given/When/Then: each test applies FlowRuns as a user would, then reads status, Events and
metrics back from the API server and the metrics endpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from daskflow.kube.builders import child_name
from harness.controlplane import KubeCluster
from harness.kube import (
    ROOT,
    apply,
    get_flowrun,
    install_crds,
    operator_running,
    prepare_operator_account,
    request_cancel,
    wait_for_phase,
    wait_for_task_state,
)
from harness.processes import free_port
from harness.waiting import wait_for


@pytest.fixture(scope="module")
def crds(kube: KubeCluster) -> KubeCluster:
    install_crds(kube)
    return kube


def flowrun(name: str, tasks: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"cluster": {"workers": 1}, "tasks": tasks, **spec},
    }


def counting(name: str, marker: Path, **extra: Any) -> dict[str, Any]:
    """A command task that appends a line to ``marker`` each time it really runs."""
    return {"name": name, "command": ["sh", "-c", f"echo {name} >> {marker}; echo {name}"], **extra}


def runs_of(marker: Path, name: str) -> int:
    return marker.read_text().split().count(name) if marker.exists() else 0


def events(kube: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "events.events.k8s.io", "-n", namespace, "-o", "json", check=True)
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def sample(metrics_text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_example_flowrun_succeeds_with_status_events_and_columns(
    crds: KubeCluster, namespace: str
) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "etl-mapreduce.yaml").read_text())
    doc["spec"]["parameters"]["workdir"] = str(crds.work_dir / namespace)
    with operator_running(crds, namespace) as op:
        # When a user applies the example
        apply(crds, doc, namespace)
        obj = wait_for_phase(crds, namespace, "etl-mapreduce")
        metrics = op.metrics()
    # Then every task succeeded, with the contract's status fields
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert {n: t["state"] for n, t in status["tasks"].items()} == dict.fromkeys(
        ["extract", "transform", "load", "report"], "Succeeded"
    )
    assert status["tasks"]["transform"]["items"]["total"] == 12
    assert status["tasks"]["load"]["result"]["rows"] == 12 * 5000
    assert status["tasks"]["report"]["result"].startswith("loaded {")
    assert status["summary"]["progress"] == "4/4"
    assert status["conditions"][0]["type"] == "Succeeded"
    assert status["conditions"][0]["status"] == "True"
    # And kubectl shows it in the printer columns
    row = crds.kubectl("get", "fr", "etl-mapreduce", "-n", namespace, "--no-headers").stdout
    assert row.split()[1:3] == ["Succeeded", "4/4"]
    # And Events tell the story
    reasons = {e["reason"] for e in events(crds, namespace)}
    assert {"Running", "Succeeded"} <= reasons
    # And the metrics moved
    assert sample(metrics, "daskflow_flowruns_total", namespace=namespace, phase="Succeeded") == 1
    assert sample(metrics, "daskflow_task_runs_total", namespace=namespace, state="Succeeded") == 4
    assert sample(metrics, "daskflow_flowrun_duration_seconds_count", namespace=namespace) == 1
    assert sample(metrics, "daskflow_cluster_startup_seconds_count", backend="local") >= 1


def test_failures_and_retries_are_reflected(crds: KubeCluster, namespace: str) -> None:
    markers = crds.work_dir / f"{namespace}-flaky"
    tasks = [
        {
            "name": "flaky",
            "call": "daskflow.examples.resilience:flaky",
            "args": [str(markers), "flaky", 2],
            "retries": 3,
        },
        {
            "name": "broken",
            "call": "daskflow.examples.resilience:validate_quantity",
            "args": [-1],
            "retries": 1,
        },
        {"name": "after-broken", "command": ["echo", "$(tasks.broken.result)"]},
        {"name": "independent", "command": ["echo", "still runs"]},
    ]
    with operator_running(crds, namespace) as op:
        apply(crds, flowrun("failing", tasks), namespace)
        status = wait_for_phase(crds, namespace, "failing")["status"]
        metrics = op.metrics()
    assert status["phase"] == "Failed"
    assert status["reason"] == "TasksFailed"
    t = status["tasks"]
    assert (t["flaky"]["state"], t["flaky"]["attempts"]) == ("Succeeded", 3)
    assert (t["broken"]["state"], t["broken"]["attempts"]) == ("Failed", 2)
    assert "ValueError: negative quantity: -1" in t["broken"]["message"]
    assert t["after-broken"]["state"] == "UpstreamFailed"
    assert t["independent"]["state"] == "Succeeded"
    assert status["conditions"][0]["status"] == "False"
    failed_events = [e for e in events(crds, namespace) if e["reason"] == "TaskFailed"]
    assert failed_events and "broken" in failed_events[0]["note"]
    assert sample(metrics, "daskflow_task_retries_total", namespace=namespace) >= 3
    assert sample(metrics, "daskflow_flowruns_total", namespace=namespace, phase="Failed") == 1


def test_cancel_stops_running_tasks(crds: KubeCluster, namespace: str) -> None:
    tasks = [
        {"name": "long", "command": ["sleep", "120"]},
        {"name": "after", "command": ["echo", "$(tasks.long.result)"]},
    ]
    with operator_running(crds, namespace):
        apply(crds, flowrun("to-cancel", tasks), namespace)
        wait_for_task_state(crds, namespace, "to-cancel", "long", "Running", 60)
        asked = time.monotonic()
        request_cancel(crds, namespace, "to-cancel")
        status = wait_for_phase(crds, namespace, "to-cancel", timeout=30)["status"]
        took = time.monotonic() - asked
    assert status["phase"] == "Cancelled"
    assert {t["state"] for t in status["tasks"].values()} == {"Cancelled"}
    assert took < 30  # "within seconds": the wait above would have raised first


def test_deadline_fails_the_run(crds: KubeCluster, namespace: str) -> None:
    tasks = [{"name": "slow", "command": ["sleep", "120"]}]
    with operator_running(crds, namespace):
        apply(crds, flowrun("late", tasks, deadlineSeconds=3), namespace)
        status = wait_for_phase(crds, namespace, "late", timeout=60)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
    assert status["tasks"]["slow"]["state"] == "Cancelled"


def dask_object(kube: KubeCluster, plural: str, namespace: str, name: str) -> Any:
    """A dask-kubernetes object (``plural``: daskclusters, daskautoscalers), or None."""
    result = kube.kubectl(
        "get", f"{plural}.kubernetes.dask.org", name, "-n", namespace, "-o", "json"
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_adaptive_cluster_gets_its_autoscaler_and_a_start_timeout(
    crds: KubeCluster, namespace: str
) -> None:
    """In-process mode used to create a DaskCluster of adaptive.minimum (0) workers and no
    DaskAutoscaler, so the run waited for workers that never came, and it never enforced
    the cluster start timeout. No dask-kubernetes controller runs here: the cluster never
    starts, and the run must end with that reason."""
    hello = [{"name": "hi", "command": ["echo", "hi"]}]
    cluster = {"adaptive": {"maximum": 3}, "startupTimeoutSeconds": 3}
    with operator_running(crds, namespace, backend="kubernetes"):
        apply(crds, flowrun("elastic", hello, cluster=cluster), namespace)
        flowrun_uid = wait_for(
            lambda: (get_flowrun(crds, namespace, "elastic") or {}).get("metadata", {}).get("uid"),
            30,
            "the FlowRun",
        )
        name = child_name("elastic", flowrun_uid)
        scaler = wait_for(
            lambda: dask_object(crds, "daskautoscalers", namespace, name), 30, "the DaskAutoscaler"
        )
        status = wait_for_phase(crds, namespace, "elastic", timeout=60)["status"]
        for plural in ("daskautoscalers", "daskclusters"):
            wait_for(
                lambda p=plural: dask_object(crds, p, namespace, name) is None,  # type: ignore[misc]
                30,
                f"the run's {plural} to be deleted",
            )
    assert scaler["spec"] == {"cluster": name, "minimum": 0, "maximum": 3}
    assert scaler["metadata"]["ownerReferences"][0]["name"] == "elastic"
    assert status["runner"]["mode"] == "in-process"
    assert (status["phase"], status["reason"]) == ("Failed", "ClusterStartTimeout")
    assert status["tasks"]["hi"]["state"] == "Cancelled"


def test_an_unreachable_scheduler_fails_the_run_cluster_unavailable(
    crds: KubeCluster, namespace: str
) -> None:
    """The address backend's scheduler never answers: once the start timeout has passed,
    the runner ends the run (the operator times only a DaskCluster it created)."""
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    cluster = {"backend": "address", "address": address, "startupTimeoutSeconds": 2}
    hello = [{"name": "hi", "command": ["echo", "hi"]}]
    with operator_running(crds, namespace):
        apply(crds, flowrun("nobody-home", hello, cluster=cluster), namespace)
        status = wait_for_phase(crds, namespace, "nobody-home", timeout=90)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ClusterUnavailable")
    assert status["message"].startswith("cannot use the Dask cluster: ")
    assert address.removeprefix("tcp://") in status["message"]
    assert status["tasks"]["hi"]["state"] == "Cancelled"


def test_ttl_deletes_finished_flowruns(crds: KubeCluster, namespace: str) -> None:
    with operator_running(crds, namespace):
        apply(
            crds,
            flowrun(
                "short-lived",
                [{"name": "hi", "command": ["echo", "hi"]}],
                ttlSecondsAfterFinished=2,
            ),
            namespace,
        )
        wait_for(
            lambda: get_flowrun(crds, namespace, "short-lived") is None,
            90,
            "the FlowRun to be deleted by its TTL",
        )


def test_deleting_a_running_flowrun_cleans_up(crds: KubeCluster, namespace: str) -> None:
    with operator_running(crds, namespace):
        apply(crds, flowrun("doomed", [{"name": "long", "command": ["sleep", "120"]}]), namespace)
        obj = wait_for(lambda: get_flowrun(crds, namespace, "doomed"), 30, "the FlowRun")
        wait_for(
            lambda: (
                "daskflow.io/finalizer"
                in ((get_flowrun(crds, namespace, "doomed") or {}).get("metadata") or {}).get(
                    "finalizers", []
                )
            ),
            60,
            "the finalizer",
        )
        assert obj
        crds.kubectl("delete", "fr", "doomed", "-n", namespace, "--wait=false", check=True)
        wait_for(
            lambda: get_flowrun(crds, namespace, "doomed") is None,
            60,
            "the finalizer to be released",
        )


def test_operator_killed_mid_run_successor_finishes_without_rerunning(
    crds: KubeCluster, namespace: str
) -> None:
    marker = crds.work_dir / f"{namespace}.runs"
    gate = crds.work_dir / f"{namespace}.gate"
    tasks = [
        counting("first", marker),
        {**counting("second", marker), "dependsOn": ["first"]},
        # waits until the test opens the gate, so the kill lands mid-run
        {
            "name": "wait",
            "dependsOn": ["second"],
            "command": ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.2; done; echo open"],
        },
        {**counting("last", marker), "dependsOn": ["wait"]},
    ]
    kubeconfig = prepare_operator_account(crds, namespace)
    with operator_running(crds, namespace, kubeconfig=kubeconfig) as op:
        apply(crds, flowrun("survivor", tasks), namespace)
        wait_for_task_state(crds, namespace, "survivor", "wait", "Running", 90)
        # When the operator is SIGKILLed mid-run
        op.kill()
    gate.touch()
    before = get_flowrun(crds, namespace, "survivor")["status"]  # type: ignore[index]
    assert before["phase"] == "Running"
    # And a successor starts
    with operator_running(crds, namespace, kubeconfig=kubeconfig):
        status = wait_for_phase(crds, namespace, "survivor", timeout=120)["status"]
    # Then the run ends Succeeded, and the tasks finished before the kill ran once
    assert status["phase"] == "Succeeded", status
    assert runs_of(marker, "first") == 1
    assert runs_of(marker, "second") == 1
    assert runs_of(marker, "last") == 1
    assert status["runner"]["restarts"] == 1


def test_finished_flowrun_is_never_run_again(crds: KubeCluster, namespace: str) -> None:
    marker = crds.work_dir / f"{namespace}.runs"
    kubeconfig = prepare_operator_account(crds, namespace)
    with operator_running(crds, namespace, kubeconfig=kubeconfig):
        apply(crds, flowrun("once", [counting("only", marker)]), namespace)
        first = wait_for_phase(crds, namespace, "once")
    with operator_running(crds, namespace, kubeconfig=kubeconfig) as op:
        # The successor's first decision about the run: nothing is left to do
        wait_for(
            lambda: f"{namespace}/once: supervising: Done" in op.log_path.read_text(),
            60,
            "the successor to decide about the finished run",
        )
        again = get_flowrun(crds, namespace, "once")
    assert runs_of(marker, "only") == 1
    assert again is not None
    assert again["status"]["phase"] == first["status"]["phase"] == "Succeeded"
    assert again["status"]["completionTime"] == first["status"]["completionTime"]


def test_invalid_graph_fails_with_a_clear_message(crds: KubeCluster, namespace: str) -> None:
    """What the schema cannot see (a cycle) fails the run with the validator's message."""
    tasks = [
        {"name": "a", "command": ["echo", "$(tasks.b.result)"]},
        {"name": "b", "command": ["echo", "$(tasks.a.result)"]},
    ]
    with operator_running(crds, namespace):
        apply(crds, flowrun("cyclic", tasks), namespace)
        status = wait_for_phase(crds, namespace, "cyclic")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec")
    assert "cycle" in status["message"] and "tasks[0] (a)" in status["message"]


def test_two_replicas_run_each_flowrun_once(crds: KubeCluster, namespace: str) -> None:
    """kopf peering: the replica with the lower priority stays paused."""
    marker = crds.work_dir / f"{namespace}.runs"
    kubeconfig = prepare_operator_account(crds, namespace)
    with (
        operator_running(crds, namespace, kubeconfig=kubeconfig, extra=("--priority", "10")),
        operator_running(crds, namespace, kubeconfig=kubeconfig, extra=("--priority", "20")),
    ):
        time.sleep(2)  # let the peers see each other
        apply(crds, flowrun("peered", [counting("only", marker)]), namespace)
        status = wait_for_phase(crds, namespace, "peered")["status"]
    assert status["phase"] == "Succeeded"
    assert runs_of(marker, "only") == 1
