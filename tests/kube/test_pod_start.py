"""Pod mode while a run starts: pods that cannot pull their image, a cluster that never
becomes usable, a scheduler that comes up after the runner.

These are what the end-to-end tier (tests/e2e) met on real pods, checked here at the
object level: no kubelet runs, so pod statuses are written the way a kubelet writes them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from harness.controlplane import KubeCluster
from harness.kube import apply, operator_running, wait_for_phase
from harness.processes import Supervised, free_port
from harness.waiting import wait_for
from tests.kube.test_operator_inprocess import flowrun
from tests.kube.test_operator_pods import children, crds, get, runner_process

__all__ = ["crds"]  # the module's fixture


def uid_of(kube: KubeCluster, namespace: str, name: str) -> str:
    out = kube.kubectl("get", "flowrun", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}")
    return out.stdout.strip()


def test_a_pod_that_cannot_pull_its_image_fails_the_run(crds: KubeCluster, namespace: str) -> None:
    with operator_running(crds, namespace, runner="pod", backend="kubernetes"):
        apply(crds, flowrun("no-image", [{"name": "hi", "command": ["echo", "hi"]}]), namespace)
        _, job, _ = children(crds, namespace, "no-image")
        # Given the runner Job's pod, which the kubelet cannot get the image of
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "no-image-runner",
                "labels": job["spec"]["template"]["metadata"]["labels"],
            },
            "spec": {"containers": [{"name": "runner", "image": "flows:missing"}]},
        }
        apply(crds, pod, namespace)
        waiting = {
            "reason": "ErrImageNeverPull",
            "message": 'Container image "flows:missing" is not present with pull policy of Never',
        }
        status = {
            "containerStatuses": [
                {
                    "name": "runner",
                    "image": "flows:missing",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": waiting},
                }
            ]
        }
        crds.kubectl(
            "patch", "pod", "no-image-runner", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}), check=True,
        )  # fmt: skip
        # Then the run fails at once, with the kubelet's reason, and its children go
        result = wait_for_phase(crds, namespace, "no-image", timeout=60)["status"]
        wait_for(
            lambda: get(crds, "jobs.batch", namespace, result["runner"]["job"]) is None,
            30,
            "the runner Job to be deleted",
        )
    assert (result["phase"], result["reason"]) == ("Failed", "ImagePullFailed")
    assert "flows:missing" in result["message"] and "ErrImageNeverPull" in result["message"]


def test_a_daskcluster_marked_running_does_not_stop_the_start_timeout(
    crds: KubeCluster, namespace: str
) -> None:
    """dask-kubernetes marks a DaskCluster Running as soon as its Service exists, before
    any scheduler runs: the start timeout holds until the runner has started the run."""
    with operator_running(crds, namespace, runner="pod", backend="kubernetes"):
        apply(
            crds,
            flowrun(
                "service-only",
                [{"name": "hi", "command": ["echo", "hi"]}],
                cluster={"startupTimeoutSeconds": 8},
            ),
            namespace,
        )
        _, _, cluster = children(crds, namespace, "service-only")
        assert cluster is not None
        crds.kubectl(
            "patch", "daskcluster", cluster["metadata"]["name"], "-n", namespace,
            "--type=merge", "-p", '{"status": {"phase": "Running"}}', check=True,
        )  # fmt: skip
        status = wait_for_phase(crds, namespace, "service-only", timeout=60)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ClusterStartTimeout")


def test_the_runner_waits_for_a_scheduler_that_starts_late(
    crds: KubeCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner pod often starts before its scheduler pod: it keeps trying to connect for
    the run's startupTimeoutSeconds, not just Dask's connect timeout (3 s here)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    flow = flowrun(
        "late-scheduler",
        [{"name": "hi", "command": ["echo", "hi"]}],
        cluster={"backend": "address", "address": address, "startupTimeoutSeconds": 120},
    )
    bindir = Path(sys.executable).parent
    with operator_running(crds, namespace, runner="pod", backend="kubernetes"):
        apply(crds, flow, namespace)
        children(crds, namespace, "late-scheduler")
        monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "3s")
        runner = runner_process(crds, namespace, "late-scheduler")
        time.sleep(8)  # the scheduler starts well after Dask's connect timeout
        cluster = [
            Supervised([str(bindir / "dask"), *args], name=f"dask {args[0]}")
            for args in (
                ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                ["worker", address, "--nthreads", "1", "--no-dashboard"],
            )
        ]
        try:
            assert runner.wait(120) == 0
            status = wait_for_phase(crds, namespace, "late-scheduler")["status"]
        finally:
            for proc in cluster:
                proc.stop()
    assert status["phase"] == "Succeeded", status
