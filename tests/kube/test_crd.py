"""The FlowRun CRD: generated from the models, and enforced by a real API server."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from daskflow.model.crd import flowrun_crd
from daskflow.model.spec import FlowRunSpec, TaskSpec
from harness.controlplane import KubeCluster
from harness.kube import CRDS, apply, get_flowrun, install_crds


@pytest.fixture(scope="module")
def crds(kube: KubeCluster) -> KubeCluster:
    install_crds(kube)
    return kube


def _flowrun(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tasks": [
            {"name": "extract", "call": "daskflow.examples.etl:make_dataset"},
            {"name": "report", "command": ["echo", "$(tasks.extract.result)"]},
        ]
    }
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {**base, **spec},
    }


def _rejected(kube: KubeCluster, doc: dict[str, Any], namespace: str) -> str:
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    assert result.returncode != 0, f"accepted: {yaml.safe_dump(doc)}"
    return result.stderr


def test_crd_file_is_generated_from_the_models() -> None:
    on_disk = yaml.safe_load((CRDS / "daskflow.io_flowruns.yaml").read_text())
    assert on_disk == flowrun_crd(), "crds/ drifted: run hack/sync-crds.sh"


def test_every_model_field_is_in_the_schema() -> None:
    schema = flowrun_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    assert set(spec["properties"]) == {f.alias or n for n, f in FlowRunSpec.model_fields.items()}
    task = spec["properties"]["tasks"]["items"]
    assert set(task["properties"]) == {f.alias or n for n, f in TaskSpec.model_fields.items()}


def test_valid_flowrun_is_accepted_with_printer_columns(crds: KubeCluster, namespace: str) -> None:
    apply(crds, _flowrun("ok"), namespace)
    out = crds.kubectl("get", "fr", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "TASKS", "DURATION", "AGE"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["spec"]["tasks"].append(copy.deepcopy(d["spec"]["tasks"][0])),
            "Duplicate value",
        ),
        (
            lambda d: d["spec"]["tasks"][0].update(command=["true"]),
            "set exactly one of call or command",
        ),
        (lambda d: d["spec"]["tasks"][1].pop("command"), "set exactly one of call or command"),
        (lambda d: d["spec"]["tasks"][0].update(name="Not_A_Label"), "spec.tasks[0].name"),
        (lambda d: d["spec"]["tasks"][0].update(retries=-1), "spec.tasks[0].retries"),
        (lambda d: d["spec"]["tasks"][0].update(call="no colon"), "spec.tasks[0].call"),
        (lambda d: d["spec"].update(tasks=[]), "spec.tasks"),
        (
            lambda d: (
                d["spec"]["cluster"].update(backend="mesos")
                if "cluster" in d["spec"]
                else d["spec"].update(cluster={"backend": "mesos"})
            ),
            "spec.cluster.backend",
        ),
    ],
    ids=[
        "duplicate-names",
        "call-and-command",
        "neither",
        "bad-name",
        "negative-retries",
        "bad-call",
        "no-tasks",
        "bad-backend",
    ],
)
def test_bad_manifests_are_rejected_readably(
    crds: KubeCluster, namespace: str, mutate: Any, expected: str
) -> None:
    doc = _flowrun("bad")
    mutate(doc)
    assert expected in _rejected(crds, doc, namespace)


def test_tasks_are_immutable_but_cancel_is_not(crds: KubeCluster, namespace: str) -> None:
    apply(crds, _flowrun("immutable"), namespace)
    changed = _flowrun("immutable")
    changed["spec"]["tasks"][1]["command"] = ["echo", "changed"]
    assert "spec.tasks is immutable" in _rejected(crds, changed, namespace)
    result = crds.kubectl(
        "patch",
        "fr",
        "immutable",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"cancel": True}}),
    )
    assert result.returncode == 0, result.stderr
    assert get_flowrun(crds, namespace, "immutable")["spec"]["cancel"] is True  # type: ignore[index]


def test_terminal_phase_and_task_states_never_move(crds: KubeCluster, namespace: str) -> None:
    apply(crds, _flowrun("frozen"), namespace)

    def patch_status(status: dict[str, Any]) -> Any:
        return crds.kubectl(
            "patch",
            "fr",
            "frozen",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )

    ok = patch_status({"phase": "Running", "tasks": {"extract": {"state": "Succeeded"}}})
    assert ok.returncode == 0, ok.stderr
    moved = patch_status({"tasks": {"extract": {"state": "Running"}}})
    assert moved.returncode != 0 and "a finished task's state never changes" in moved.stderr
    assert patch_status({"phase": "Failed"}).returncode == 0
    again = patch_status({"phase": "Running"})
    assert again.returncode != 0 and "a finished FlowRun's phase never changes" in again.stderr


def test_status_fields_survive_schema_pruning(crds: KubeCluster, namespace: str) -> None:
    """Every field the status book writes is declared, so the API server keeps it."""
    from daskflow.model.events import (
        AttemptFailed,
        ItemsEnded,
        MapStarted,
        RunStarted,
        TaskEnded,
        TaskReported,
        TaskStarted,
        WorkerLost,
    )
    from daskflow.model.runstate import RunState
    from daskflow.model.states import TaskState

    t = "2026-12-03T10:00:00Z"
    state = RunState.new(["extract", "report"], mapped=["extract"])
    for event in (
        RunStarted(t),
        MapStarted("extract", 3, t),
        ItemsEnded("extract", succeeded=1, failed=1, failed_items=(2,)),
        AttemptFailed("extract", 1, "OSError", t),
        AttemptFailed("extract", 1, "OSError", t),
        WorkerLost("extract", 0, 1, "its worker died", t),
        TaskEnded("extract", TaskState.FAILED, t, "boom", attempts=1, reason="WorkerDied"),
        TaskStarted("report", 1, t),
        TaskEnded("report", TaskState.SUCCEEDED, t),
        TaskReported("report", 1, t, t, '{"rows":[1,2]}'),
    ):
        state.apply(event)
    status = state.to_dict()
    apply(crds, _flowrun("pruning"), namespace)
    result = crds.kubectl(
        "patch",
        "fr",
        "pruning",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    assert result.returncode == 0, result.stderr
    stored = get_flowrun(crds, namespace, "pruning")["status"]  # type: ignore[index]
    assert stored == status
