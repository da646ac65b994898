"""Pod mode, the default: the operator creates a runner Job and a DaskCluster per FlowRun
and never connects to the run's Dask cluster itself.

No kubelet runs on the test control plane, so these tests check the objects the operator
creates, and run ``daskflow runner`` as a local process in place of the runner pod, with
the credentials of a ``daskflow-runner`` ServiceAccount bound only to the runner's rules.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.controlplane import KubeCluster
from harness.kube import (
    DASKFLOW,
    apply,
    bind_rules,
    get_flowrun,
    install_crds,
    operator_running,
    prepare_operator_account,
    request_cancel,
    wait_for_phase,
    wait_for_task_state,
)
from harness.processes import Supervised
from harness.waiting import wait_for
from tests.kube.test_operator_inprocess import counting, flowrun, runs_of

IMAGE = "registry.example/flows:1.0"


@pytest.fixture(scope="module")
def crds(kube: KubeCluster) -> KubeCluster:
    install_crds(kube)
    return kube


def get(kube: KubeCluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    result = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json")
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def children(
    kube: KubeCluster, namespace: str, name: str
) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """The runner Job (waited for) and the DaskCluster (if any) of a FlowRun."""
    status = wait_for(
        lambda: ((get_flowrun(kube, namespace, name) or {}).get("status") or {}).get("runner"),
        60,
        "the runner to be recorded in status",
    )
    job = wait_for(lambda: get(kube, "jobs.batch", namespace, status["job"]), 30, "the Job")
    cluster = (
        get(kube, "daskclusters.kubernetes.dask.org", namespace, status["cluster"])
        if status.get("cluster")
        else None
    )
    return status["job"], job, cluster


def runner_process(
    kube: KubeCluster,
    namespace: str,
    name: str,
    *extra: str,
    account: str = "daskflow-runner",
    prefix: tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
) -> Supervised:
    """``daskflow runner`` as the account (``prefix``: a command to run it under;
    ``environ``: more environment variables)."""
    kubeconfig = kube.service_account_kubeconfig(namespace, account)
    bind_rules(kube, namespace, account, "runner-rules")
    env = {**os.environ, **(environ or {}), "KUBECONFIG": str(kubeconfig)}
    return Supervised(
        [
            *prefix,
            DASKFLOW,
            "runner",
            "--namespace",
            namespace,
            "--name",
            name,
            "--status-interval",
            "0.5",
            *extra,
        ],
        kube.work_dir / f"runner-{namespace}.log",
        name="daskflow runner",
        env=env,
    )


def assert_restricted(pod_spec: dict[str, Any]) -> None:
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod_spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]


def test_creates_runner_job_and_daskcluster_for_the_run(crds: KubeCluster, namespace: str) -> None:
    with operator_running(crds, namespace, runner="pod", backend="kubernetes"):
        apply(
            crds,
            flowrun(
                "pods",
                [{"name": "hi", "command": ["echo", "hi"]}],
                image=IMAGE,
                cluster={"workers": 3},
            ),
            namespace,
        )
        job_name, job, cluster = children(crds, namespace, "pods")
        fr = get_flowrun(crds, namespace, "pods")
    assert fr is not None and cluster is not None
    uid = fr["metadata"]["uid"]
    # Deterministic names from the FlowRun's name and uid, within the DaskCluster limit
    assert job_name == cluster["metadata"]["name"] and job_name.startswith("pods-")
    assert len(job_name) <= 53
    for obj in (job, cluster):
        owner = obj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("FlowRun", uid, True)
        assert obj["metadata"]["labels"]["daskflow.io/flowrun"] == "pods"
        assert obj["metadata"]["labels"]["daskflow.io/flowrun-uid"] == uid
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "daskflow-runner"
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["command"] == [
        "daskflow",
        "runner",
        "--namespace",
        namespace,
        "--name",
        "pods",
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DASKFLOW_BACKEND"] == "kubernetes"
    assert env["DASKFLOW_SCHEDULER_ADDRESS"] == f"tcp://{job_name}-scheduler.{namespace}.svc:8786"
    assert_restricted(pod)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert cluster["spec"]["worker"]["replicas"] == 3
    assert_restricted(cluster["spec"]["worker"]["spec"])
    assert_restricted(cluster["spec"]["scheduler"]["spec"])
    assert cluster["spec"]["worker"]["spec"]["containers"][0]["image"] == IMAGE
    status = fr["status"]
    assert (status["phase"], status["runner"]["backend"]) == ("Pending", "kubernetes")


def test_service_account_comes_from_the_spec(crds: KubeCluster, namespace: str) -> None:
    hello = [{"name": "hi", "command": ["echo", "hi"]}]
    allow = ("--allow-service-account", "etl-team")
    with operator_running(crds, namespace, runner="pod", backend="local", extra=allow):
        apply(crds, flowrun("own-sa", hello, serviceAccountName="etl-team"), namespace)
        _, job, cluster = children(crds, namespace, "own-sa")
        # An account the operator was not told to allow is refused: naming it in a FlowRun
        # must not let the author run code as that account.
        apply(crds, flowrun("stolen-sa", hello, serviceAccountName="cluster-admin-ish"), namespace)
        refused = wait_for_phase(crds, namespace, "stolen-sa")["status"]
        stolen_job = get(
            crds, "jobs.batch", namespace, refused.get("runner", {}).get("job", "none")
        )
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "etl-team"
    assert cluster is None  # the local backend runs Dask inside the runner pod
    assert (refused["phase"], refused["reason"]) == ("Failed", "ServiceAccountNotAllowed")
    assert "cluster-admin-ish" in refused["message"]
    assert stolen_job is None


def test_operator_restart_leaves_children_untouched(crds: KubeCluster, namespace: str) -> None:
    kubeconfig = prepare_operator_account(crds, namespace)
    with operator_running(
        crds, namespace, runner="pod", backend="kubernetes", kubeconfig=kubeconfig
    ):
        apply(crds, flowrun("steady", [{"name": "hi", "command": ["echo", "hi"]}]), namespace)
        _, job, cluster = children(crds, namespace, "steady")
        before = get_flowrun(crds, namespace, "steady")
    with operator_running(
        crds, namespace, runner="pod", backend="kubernetes", kubeconfig=kubeconfig
    ) as op:
        # The successor's first decision, with both children fetched: adopt them as they are
        wait_for(
            lambda: f"{namespace}/steady: supervising: nothing to do" in op.log_path.read_text(),
            60,
            "the successor to decide about the running run",
        )
        _, job2, cluster2 = children(crds, namespace, "steady")
        after = get_flowrun(crds, namespace, "steady")
    assert cluster is not None and cluster2 is not None and before and after
    for old, new in ((job, job2), (cluster, cluster2)):
        assert new["metadata"]["uid"] == old["metadata"]["uid"]
        assert new["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"]
    assert after["status"] == before["status"]


def test_cancel_removes_job_and_cluster(crds: KubeCluster, namespace: str) -> None:
    with operator_running(crds, namespace, runner="pod", backend="kubernetes"):
        apply(crds, flowrun("stop-me", [{"name": "hi", "command": ["sleep", "100"]}]), namespace)
        job_name, _, _ = children(crds, namespace, "stop-me")
        request_cancel(crds, namespace, "stop-me")
        status = wait_for_phase(crds, namespace, "stop-me", timeout=30)["status"]
        wait_for(lambda: get(crds, "jobs.batch", namespace, job_name) is None, 30, "Job gone")
        wait_for(
            lambda: get(crds, "daskclusters.kubernetes.dask.org", namespace, job_name) is None,
            30,
            "DaskCluster gone",
        )
    assert (status["phase"], status["reason"]) == ("Cancelled", "Cancelled")
    assert status["tasks"]["hi"]["state"] == "Cancelled"


def test_deletion_removes_job_and_cluster(crds: KubeCluster, namespace: str) -> None:
    with operator_running(crds, namespace, runner="pod", backend="kubernetes"):
        apply(crds, flowrun("delete-me", [{"name": "hi", "command": ["sleep", "100"]}]), namespace)
        job_name, _, _ = children(crds, namespace, "delete-me")
        crds.kubectl("delete", "fr", "delete-me", "-n", namespace, "--wait=false", check=True)
        wait_for(lambda: get_flowrun(crds, namespace, "delete-me") is None, 60, "FlowRun gone")
    assert get(crds, "jobs.batch", namespace, job_name) is None
    assert get(crds, "daskclusters.kubernetes.dask.org", namespace, job_name) is None


def test_cluster_that_never_starts_fails_the_run(crds: KubeCluster, namespace: str) -> None:
    with operator_running(crds, namespace, runner="pod", backend="kubernetes"):
        apply(
            crds,
            flowrun(
                "no-cluster",
                [{"name": "hi", "command": ["echo", "hi"]}],
                cluster={"startupTimeoutSeconds": 2},
            ),
            namespace,
        )
        status = wait_for_phase(crds, namespace, "no-cluster", timeout=60)["status"]
        name = status["runner"]["cluster"]
        wait_for(
            lambda: get(crds, "daskclusters.kubernetes.dask.org", namespace, name) is None,
            30,
            "the DaskCluster to be deleted",
        )
    assert (status["phase"], status["reason"]) == ("Failed", "ClusterStartTimeout")


def test_runner_with_only_its_own_rules_drives_the_run(crds: KubeCluster, namespace: str) -> None:
    # Given the operator in pod mode has created the Job (no kubelet will start its pod)
    with operator_running(crds, namespace, runner="pod", backend="local"):
        apply(
            crds,
            flowrun(
                "by-runner",
                [
                    {
                        "name": "numbers",
                        "call": "daskflow.examples.resilience:identity",
                        "args": [[1, 2, 3]],
                    },
                    {
                        "name": "double",
                        "map": "$(tasks.numbers.result)",
                        "call": "daskflow.examples.resilience:validate_quantity",
                        "args": ["$(item)"],
                    },
                    {"name": "say", "command": ["echo", "$(tasks.double.result)"]},
                ],
            ),
            namespace,
        )
        job_name, _, _ = children(crds, namespace, "by-runner")
        # When the runner runs as the daskflow-runner ServiceAccount, as its pod would
        runner = runner_process(crds, namespace, "by-runner")
        assert runner.wait(120) == 0
        status = wait_for_phase(crds, namespace, "by-runner")["status"]
        # And once the run has ended, its runner Job goes too
        wait_for(lambda: get(crds, "jobs.batch", namespace, job_name) is None, 30, "Job gone")
    # Then it drove the run to the end with nothing but the runner's rules
    assert status["phase"] == "Succeeded"
    assert status["tasks"]["say"]["result"] == "[2,4,6]"
    assert status["runner"]["mode"] == "pod"


def test_runner_flags_win_over_the_environment(crds: KubeCluster, namespace: str) -> None:
    """The operator gives each runner pod DASKFLOW_* variables; a flag given wins over
    each (the status interval's variable used to win, and here it does not even parse)."""
    with operator_running(crds, namespace, runner="pod", backend="local"):
        apply(crds, flowrun("flagged", [{"name": "hi", "command": ["echo", "hi"]}]), namespace)
        children(crds, namespace, "flagged")
        environ = {
            "DASKFLOW_BACKEND": "address",
            "DASKFLOW_SCHEDULER_ADDRESS": "tcp://127.0.0.1:9",
            "DASKFLOW_STATUS_INTERVAL": "soon",
        }
        # runner_process gives --status-interval 0.5 too
        runner = runner_process(crds, namespace, "flagged", "--backend", "local", environ=environ)
        assert runner.wait(120) == 0
        status = wait_for_phase(crds, namespace, "flagged")["status"]
    assert (status["phase"], status["runner"]["backend"]) == ("Succeeded", "local")


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A Dask scheduler and worker as plain processes: the 'remote' cluster of a run."""
    address_file = tmp_path / "scheduler.json"
    bindir = Path(sys.executable).parent
    scheduler_argv = [
        *(str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0"),
        *("--no-dashboard", "--scheduler-file", str(address_file)),
    ]
    with Supervised(scheduler_argv, name="dask scheduler"):
        wait_for(address_file.exists, 60, "the scheduler")
        address = json.loads(address_file.read_text())["address"]
        worker_argv = [str(bindir / "dask"), "worker", address, "--nthreads", "2", "--no-dashboard"]
        with Supervised(worker_argv, name="dask worker"):
            yield address


def test_lost_runner_is_replaced_without_rerunning_finished_tasks(
    crds: KubeCluster, namespace: str, dask_cluster: str
) -> None:
    marker = crds.work_dir / f"{namespace}.runs"
    gate = crds.work_dir / f"{namespace}.gate"
    big = "x" * 3000  # too big for status: only the published Dask dataset keeps it
    tasks = [
        {
            **counting("first", marker),
            "command": ["sh", "-c", f"echo first >> {marker}; echo {big}"],
        },
        {
            "name": "wait",
            "dependsOn": ["first"],
            "command": ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.2; done; echo open"],
        },
        {
            "name": "size",
            "dependsOn": ["wait"],
            "command": ["sh", "-c", "echo -n '$(tasks.first.result)' | wc -c"],
        },
    ]
    with operator_running(crds, namespace, runner="pod", backend="kubernetes"):
        apply(
            crds,
            flowrun("reattach", tasks, cluster={"backend": "address", "address": dask_cluster}),
            namespace,
        )
        children(crds, namespace, "reattach")
        first = runner_process(crds, namespace, "reattach")
        wait_for_task_state(crds, namespace, "reattach", "wait", "Running", 90)
        # When the runner pod is lost (SIGKILL: nothing is cleaned up)
        first.kill()
        gate.touch()
        # And the Job's next pod starts a new runner
        second = runner_process(crds, namespace, "reattach")
        assert second.wait(120) == 0
        status = wait_for_phase(crds, namespace, "reattach")["status"]
    # Then the run finished, the finished task did not run again, and its value survived
    assert status["phase"] == "Succeeded", status
    assert runs_of(marker, "first") == 1
    assert status["tasks"]["size"]["result"].strip() == "3000"
    assert status["runner"]["restarts"] == 1


def test_a_runner_that_never_starts_still_meets_its_deadline(
    crds: KubeCluster, namespace: str
) -> None:
    """No kubelet runs the runner Job, so no runner ever writes a startTime: the deadline
    counts from the FlowRun's creation, and the run cannot stay Pending forever."""
    with operator_running(crds, namespace, runner="pod", backend="local"):
        apply(
            crds,
            flowrun("never-runs", [{"name": "hi", "command": ["echo", "hi"]}], deadlineSeconds=1),
            namespace,
        )
        status = wait_for_phase(crds, namespace, "never-runs", timeout=60)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
    assert status["tasks"]["hi"]["state"] == "Cancelled"


def test_a_strangers_object_under_the_childs_name_fails_the_run(
    crds: KubeCluster, namespace: str
) -> None:
    from daskflow.kube.builders import child_name

    # Given a FlowRun, and a Job that is not its own under the name its runner Job would get
    apply(crds, flowrun("squatted", [{"name": "hi", "command": ["echo", "hi"]}]), namespace)
    fr = get_flowrun(crds, namespace, "squatted")
    assert fr is not None
    name = child_name("squatted", fr["metadata"]["uid"])
    apply(
        crds,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox"}],
                    }
                }
            },
        },
        namespace,
    )
    # When the operator picks the FlowRun up
    with operator_running(crds, namespace, runner="pod", backend="local"):
        status = wait_for_phase(crds, namespace, "squatted", timeout=60)["status"]
    # Then the run fails with a clear reason, and the stranger's Job is left alone
    assert (status["phase"], status["reason"]) == ("Failed", "ChildConflict")
    assert "belongs to someone else" in status["message"]
    assert get(crds, "jobs.batch", namespace, name) is not None
