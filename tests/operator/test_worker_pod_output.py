"""What a task prints or logs reaches its worker's log labelled with the task's name, on the
worker pods of the ``kubernetes`` backend as on local workers: ``daskflow logs --task``
relies on it.

The worker pods' command, exactly as the DaskCluster spec gives it (the pod's name and the
dashboard port aside), runs here as a process next to a scheduler; a flow runs on them with
``daskflow run --address`` and the worker's log is read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from daskflow.kube.builders import OperatorDefaults, build_dask_cluster_spec
from daskflow.model.validate import parse_flowrun
from harness.processes import Supervised
from harness.waiting import wait_for

BIN = Path(sys.executable).parent


def worker_pod_command(address: str) -> list[str]:
    """The worker container's command of a DaskCluster, runnable on this machine."""
    flow = parse_flowrun(
        {
            "apiVersion": "daskflow.io/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "logs", "namespace": "ns", "uid": "u-1"},
            "spec": {"tasks": [{"name": "a", "command": ["true"]}]},
        }
    )
    spec = build_dask_cluster_spec(flow, OperatorDefaults())
    argv: list[str] = spec["spec"]["worker"]["spec"]["containers"][0]["command"]
    local = {"dask": str(BIN / "dask"), "$(DASK_WORKER_NAME)": "pod-worker", "8788": ":0"}
    return [local.get(arg, arg) for arg in argv] + [address]


def test_task_print_and_logging_reach_the_worker_log_labelled(tmp_path: Path) -> None:
    address_file = tmp_path / "scheduler.json"
    scheduler = [
        *(str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0"),
        *("--no-dashboard", "--scheduler-file", str(address_file)),
    ]
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "daskflow.io/v1alpha1",
                "kind": "FlowRun",
                "metadata": {"name": "logs"},
                "spec": {
                    "tasks": [
                        {"name": "say", "call": "builtins:print", "args": ["hello from say"]},
                        {
                            "name": "each",
                            "map": ["a", "b"],
                            "call": "builtins:print",
                            "args": ["item", "$(item)"],
                        },
                        {"name": "note", "call": "logging:info", "args": ["noted %s", 42]},
                    ]
                },
            }
        )
    )
    worker_log = tmp_path / "worker.log"
    with Supervised(scheduler, name="dask scheduler"):
        wait_for(address_file.exists, 60, "the scheduler's address file")
        address = json.loads(address_file.read_text())["address"]
        with Supervised(worker_pod_command(address), worker_log, name="worker pod command"):
            # When a flow runs on that worker
            env = {k: v for k, v in os.environ.items() if k != "DASKFLOW_TASK_OUTPUT"}
            run = subprocess.run(
                [str(BIN / "daskflow"), "run", str(flow), "--address", address, "-o", "json"],
                capture_output=True,
                text=True,
                timeout=240,
                env=env,
            )
            assert run.returncode == 0, (run.stdout, run.stderr)
            # Then each line the tasks printed or logged is in its log, with the task's name
            expected = [
                "[say] hello from say",
                "[each 0] item a",
                "[each 1] item b",
                "[note] INFO root: noted 42",
            ]
            wait_for(
                lambda: all(line in worker_log.read_text().splitlines() for line in expected),
                30,
                f"{expected} in the worker's log",
            )
