"""The cluster CLI on real pods: ``daskflow logs`` reads the run's runner and Dask pods, and
``--task`` shows what one Python task printed or logged on its worker pod;
``daskflow cancel`` stops the run.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess

from tests.e2e.scenario import Scenario

from harness.kube import DASKFLOW
from harness.realcluster import Install


def environment(install: Install) -> dict[str, str]:
    """A user's: the cluster's kubeconfig as ``$KUBECONFIG``."""
    env = {**os.environ, "KUBECONFIG": str(install.kube.kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


def daskflow(install: Install, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DASKFLOW, *args, "-n", install.namespace],
        capture_output=True,
        text=True,
        env=environment(install),
        timeout=120,
    )


def test_logs_show_what_a_task_printed_on_its_worker_pod(
    flows: Scenario, installed: Install
) -> None:
    token = secrets.token_hex(4)
    run = flows.given.flowrun(
        {
            "apiVersion": "daskflow.io/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "logs"},
            "spec": {
                "cluster": {"backend": "kubernetes", "workers": 1},
                "deadlineSeconds": 600,
                "tasks": [
                    {"name": "say", "call": "builtins:print", "args": [f"hello {token}"]},
                    {
                        "name": "each",
                        "map": ["a", "b"],
                        "call": "builtins:print",
                        "args": ["item", "$(item)"],
                    },
                    {"name": "warn", "call": "logging:warning", "args": ["careful %s", token]},
                    {
                        "name": "nap",
                        "dependsOn": ["say", "each", "warn"],
                        "command": ["sleep", "600"],
                    },
                ],
            },
        }
    )
    # Given a run whose Python tasks have printed and logged on its worker pod, still running
    run.when.applied().task_reached("nap", "Running")
    workers = {p["metadata"]["name"] for p in run.pods("worker")}
    # When the user asks for one task's output
    said = daskflow(installed, "logs", run.name, "--task", "say")
    # Then they get its line alone, from the worker pod that ran it
    assert said.returncode == 0, (said.stdout, said.stderr)
    found = re.fullmatch(r"\[pod/(\S+)\] \[say\] hello (\w+)\n", said.stdout)
    assert found, said.stdout
    assert found.group(1) in workers and found.group(2) == token
    # And a mapped task's lines carry each item's index; a logged warning its level
    each = daskflow(installed, "logs", run.name, "--task", "each").stdout.splitlines()
    assert sorted(line.split("] ", 1)[1] for line in each) == ["[each 0] item a", "[each 1] item b"]
    warned = daskflow(installed, "logs", run.name, "--task", "warn").stdout
    assert warned.endswith(f"] [warn] WARNING root: careful {token}\n"), warned
    # And without --task, every line of the run's pods: the scheduler's, then the worker's
    everything = daskflow(installed, "logs", run.name)
    assert everything.returncode == 0, everything.stderr
    shown = list(dict.fromkeys(re.findall(r"^\[pod/(\S+)\] ", everything.stdout, re.M)))
    pods = {p["metadata"]["name"]: run.component_of(p) for p in run.pods()}
    roles = [pods[name] for name in shown]
    assert {"scheduler", "worker"} <= set(roles) <= {"runner", "scheduler", "worker"}, shown
    assert roles == sorted(roles, key=["runner", "scheduler", "worker"].index), shown
    assert f"[say] hello {token}" in everything.stdout

    # When the user follows the task's output, then cancels the run from the CLI
    following = subprocess.Popen(
        [DASKFLOW, "logs", run.name, "-n", installed.namespace, "--task", "say", "--follow"],
        env=environment(installed),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        cancelled = daskflow(installed, "cancel", run.name)
        assert cancelled.returncode == 0, cancelled.stderr
        run.then.phase_reached("Cancelled").nothing_left()
        # Then the followed logs end when the pods do, the task's line shown once
        out, err = following.communicate(timeout=120)
    finally:
        following.kill()
    assert following.returncode == 0, (out, err)
    assert out == said.stdout and "Traceback" not in err, err
