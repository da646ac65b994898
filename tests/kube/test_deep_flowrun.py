"""A FlowRun nested as deep as the API server allows (10,000 levels; daskflow's bound is
100): it must fail with InvalidSpec naming the task and field, and must not stop the
operator from running the other FlowRuns of its namespace."""

from __future__ import annotations

import json

from daskflow.model.reader import MAX_DEPTH
from harness.controlplane import KubeCluster
from harness.kube import install_crds, operator_running
from harness.waiting import wait_for

LEVELS = 9_900  # just under the API server's limit of 10,000


def status_of(kube: KubeCluster, namespace: str, name: str) -> dict[str, object]:
    # only the status: the whole object is too deep for this test's own json module
    out = kube.kubectl("get", "fr", name, "-n", namespace, "-o", "jsonpath={.status}")
    status: dict[str, object] = json.loads(out.stdout) if out.stdout.strip() else {}
    return status


def create(
    kube: KubeCluster, namespace: str, name: str, task: dict[str, object], args: str
) -> None:
    doc = {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"cluster": {"workers": 1}, "tasks": [task]},
    }
    text = json.dumps(doc).replace('"ARGS"', args)
    created = kube.kubectl("create", "-n", namespace, "-f", "-", input=text)
    assert created.returncode == 0, created.stderr


def test_a_flowrun_nested_too_deep_fails_invalid_spec_and_others_still_run(
    kube: KubeCluster, namespace: str
) -> None:
    install_crds(kube)
    deep_args = "[" * LEVELS + "]" * LEVELS
    create(kube, namespace, "deep", {"name": "a", "call": "m:f", "args": "ARGS"}, deep_args)
    create(kube, namespace, "fine", {"name": "a", "command": ["true"]}, "")
    with operator_running(kube, namespace):
        deep, fine = wait_for(
            lambda: [status_of(kube, namespace, n) for n in ("deep", "fine")],
            90,
            "deep to fail and fine to succeed",
            interval=0.5,
            until=lambda both: [s.get("phase") for s in both or []] == ["Failed", "Succeeded"],
        )
    assert (deep.get("phase"), deep.get("reason")) == ("Failed", "InvalidSpec"), deep
    assert f"tasks[0] (a).args: nested deeper than {MAX_DEPTH} levels" in str(deep["message"])
    assert fine.get("phase") == "Succeeded", fine
