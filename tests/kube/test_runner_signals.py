"""``daskflow runner`` and SIGTERM, as its pod gets it when deleted or drained.

In its container the runner is PID 1, and the kernel drops signals that PID 1 has no
handler for: without one, the runner would ignore SIGTERM and drive the run on, next to
the Job's replacement pod, until the kubelet's SIGKILL 30 s later. Here it runs as PID 1
of a PID namespace of its own (``unshare``, root), as in a container.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest

from harness.controlplane import KubeCluster
from harness.kube import (
    apply,
    get_flowrun,
    operator_running,
    wait_for_phase,
    wait_for_task_state,
)
from tests.kube.test_operator_inprocess import counting, flowrun, runs_of
from tests.kube.test_operator_pods import children, crds, dask_cluster, runner_process

__all__ = ["crds", "dask_cluster"]  # fixtures of test_operator_pods

AS_PID_1 = ("unshare", "--pid", "--fork", "--kill-child")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_sigterm_stops_the_runner_at_once_and_leaves_the_run_to_the_next(
    crds: KubeCluster, namespace: str, dask_cluster: str, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    tasks = [
        counting("first", marker),
        {"name": "hold", "command": ["sleep", "30"], "dependsOn": ["first"]},
        {"name": "last", "command": ["echo", "$(tasks.first.result)"], "dependsOn": ["hold"]},
    ]
    with operator_running(crds, namespace, runner="pod", backend="kubernetes"):
        apply(
            crds,
            flowrun("drained", tasks, cluster={"backend": "address", "address": dask_cluster}),
            namespace,
        )
        children(crds, namespace, "drained")
        first = runner_process(crds, namespace, "drained", prefix=AS_PID_1)
        wait_for_task_state(crds, namespace, "drained", "hold", "Running", 90)
        # When the runner's pod is deleted: SIGTERM to PID 1 of its PID namespace
        (runner,) = psutil.Process(first.pid).children()
        runner.terminate()
        assert first.wait(15) == 143
        # Then it wrote nothing more: the run is as it was, for the next runner
        status = (get_flowrun(crds, namespace, "drained") or {})["status"]
        assert status["phase"] == "Running", status
        assert status["tasks"]["hold"]["state"] == "Running", status["tasks"]
        second = runner_process(crds, namespace, "drained")
        assert second.wait(120) == 0
        final = wait_for_phase(crds, namespace, "drained")["status"]
    assert final["phase"] == "Succeeded", final
    assert runs_of(marker, "first") == 1
    assert final["runner"]["restarts"] == 1
