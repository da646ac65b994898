"""The Argo CD health check for FlowRuns (charts/daskflow/files/argocd/health.lua).

The script runs in Debian's lua5.4 and lua5.1 (Argo CD's gopher-lua is a Lua 5.1), inside
tests/argocd/harness.lua: `obj` is the FlowRun as a Lua table, and the environment holds
only what Argo CD gives a health script, without the string, math, io and os libraries
(os.time/os.date in "argocd" mode, no os at all in "noos" mode).

The statuses come from the operator's own code wherever it has a function for them
(RunState, end_run, succeeded_condition), so a change to the status contract shows here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from daskflow.kube.status import succeeded_condition
from daskflow.model.events import AttemptFailed, RunEnded, RunStarted, TaskEnded, TaskStarted
from daskflow.model.runstate import RunState, end_run
from daskflow.model.states import Phase, TaskState
from tests.argocd.lua import (
    HEALTH_LUA,
    INTERPRETERS,
    REPO,
    Health,
    LuaError,
    run_health,
    run_lua,
    to_lua,
)

ARGOCD_CM = HEALTH_LUA.parent / "argocd-cm.yaml"
HEALTH_KEY = "resource.customizations.health.daskflow.io_FlowRun"
TASKS = ["extract", "transform", "load", "report"]


# -- FlowRuns and their statuses ---------------------------------------------------------
def flowrun(status: dict[str, Any] | None = None, *, cancel: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {
            "name": "etl-2026-07-01",
            "namespace": "flows",
            "uid": "0b5e7f62-2a4e-4d0c-9a51-7d7f0f1c2b3a",
            "generation": 1,
            "finalizers": ["daskflow.io/finalizer"],
            "annotations": {"argocd.argoproj.io/tracking-id": "flowruns:daskflow.io/FlowRun:x"},
        },
        "spec": {
            "parameters": {"files": 12, "rows": 5000},
            "cluster": {"workers": 2, "threadsPerWorker": 1},
            "deadlineSeconds": 600,
            "tasks": [{"name": n, "call": f"daskflow.examples.etl:{n}"} for n in TASKS],
        },
    }
    if cancel:
        obj["spec"]["cancel"] = True
    if status is not None:
        obj["status"] = status
    return obj


def written(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` as StatusWriter writes it: with the runner block and the condition."""
    out = {**status, "runner": {"job": "etl-2026-07-01-0b5e7f62", "backend": "local"}}
    out["conditions"] = [succeeded_condition(out, {})]
    return out


def operator_pending() -> dict[str, Any]:
    # What the operator writes first in pod mode (kube/operator.py, _run_in_pod).
    return written(
        {
            "phase": "Pending",
            "message": "waiting for the runner and the Dask cluster",
            "reason": "Starting",
        }
    )


T = "2026-12-03T10:00:00Z"


def state_running(retrying: bool = False) -> RunState:
    state = RunState.new(TASKS)
    state.apply(RunStarted(T))
    state.apply(TaskStarted("extract", 1, T))
    state.apply(TaskEnded("extract", TaskState.SUCCEEDED, T))
    state.apply(TaskStarted("transform", 1, T))
    if retrying:
        state.apply(AttemptFailed("transform", 1, "OSError: disk busy", T))
    return state


def running(retrying: bool = False) -> dict[str, Any]:
    return written(state_running(retrying).to_dict())


def succeeded(skip_report: bool = False) -> dict[str, Any]:
    state = RunState.new(TASKS)
    state.apply(RunStarted(T))
    for name in TASKS:
        if skip_report and name == "report":
            state.apply(TaskEnded(name, TaskState.SKIPPED, T))
        else:
            state.apply(TaskEnded(name, TaskState.SUCCEEDED, T, attempts=1))
    state.apply(RunEnded(T))
    return written(state.to_dict())


def tasks_failed() -> dict[str, Any]:
    state = state_running()
    message = 'Traceback (most recent call last):\n  File "etl.py", line 31\n'
    message += "ValueError: bad row 17 in part-0003.csv"
    state.apply(TaskEnded("transform", TaskState.FAILED, T, message, attempts=3))
    state.apply(TaskEnded("load", TaskState.UPSTREAM_FAILED, T))
    state.apply(TaskEnded("report", TaskState.UPSTREAM_FAILED, T))
    state.apply(RunEnded(T))
    return written(state.to_dict())


def ended(
    base: dict[str, Any], phase: Phase, reason: str, message: str, names: list[str] = TASKS
) -> dict[str, Any]:
    """A run ended by force, as the operator does it (Operator.end -> end_run, with the
    names of the tasks; a runner that cannot read the spec knows none)."""
    return written(end_run(base, phase, reason, message, names))


CANCEL_MESSAGE = "cancelled: spec.cancel is true"

# name -> (FlowRun, expected health status, expected message; None: only checked non-empty)
CASES: dict[str, tuple[Callable[[], dict[str, Any]], str, str | None]] = {
    "missing status": (
        lambda: flowrun(),
        "Progressing",
        "Waiting for the daskflow operator to pick up the FlowRun",
    ),
    "empty status": (
        lambda: flowrun({}),
        "Progressing",
        "Waiting for the daskflow operator to pick up the FlowRun",
    ),
    "status without a phase": (
        lambda: flowrun({"kopf": {"progress": {}}, "observedGeneration": 1}),
        "Progressing",
        "Waiting for the daskflow operator to pick up the FlowRun",
    ),
    "empty phase": (
        lambda: flowrun({"phase": ""}),
        "Progressing",
        "Waiting for the daskflow operator to pick up the FlowRun",
    ),
    "pending": (
        lambda: flowrun(operator_pending()),
        "Progressing",
        "Pending: Starting: waiting for the runner and the Dask cluster",
    ),
    "pending in the runner": (
        lambda: flowrun(written(RunState.new(TASKS).to_dict())),
        "Progressing",
        "Pending (0/4 tasks succeeded)",
    ),
    "running": (
        lambda: flowrun(running()),
        "Progressing",
        "Running (1/4 tasks succeeded, 1 running)",
    ),
    "running with a retry": (
        lambda: flowrun(running(retrying=True)),
        "Progressing",
        "Running (1/4 tasks succeeded, 1 retrying)",
    ),
    "succeeded": (
        lambda: flowrun(succeeded()),
        "Healthy",
        "Succeeded (4/4 tasks succeeded): 4 of 4 tasks succeeded",
    ),
    "succeeded with a skipped task": (
        lambda: flowrun(succeeded(skip_report=True)),
        "Healthy",
        "Succeeded (3/4 tasks succeeded): 3 of 4 tasks succeeded (1 skipped)",
    ),
    "failed tasks": (
        lambda: flowrun(tasks_failed()),
        "Degraded",
        "Failed (1/4 tasks succeeded, 1 failed): TasksFailed: 1 of 4 tasks failed: transform",
    ),
    "deadline exceeded": (
        lambda: flowrun(
            ended(running(), Phase.FAILED, "DeadlineExceeded", "deadline of 600s exceeded")
        ),
        "Degraded",
        "Failed (1/4 tasks succeeded): DeadlineExceeded: deadline of 600s exceeded",
    ),
    "cluster never started": (
        lambda: flowrun(
            ended(
                operator_pending(),
                Phase.FAILED,
                "ClusterStartTimeout",
                "the Dask cluster was not ready within 300s",
            )
        ),
        "Degraded",
        "Failed (0/4 tasks succeeded): ClusterStartTimeout: "
        "the Dask cluster was not ready within 300s",
    ),
    "invalid spec": (
        lambda: flowrun(
            ended({}, Phase.FAILED, "InvalidSpec", "spec.tasks[1]: unknown field", names=[])
        ),
        "Degraded",
        "Failed: InvalidSpec: spec.tasks[1]: unknown field",
    ),
    "cancel requested, not picked up yet": (
        lambda: flowrun(cancel=True),
        "Progressing",
        "Cancel requested; waiting for the daskflow operator to pick up the FlowRun",
    ),
    "cancel requested while running": (
        lambda: flowrun(running(), cancel=True),
        "Progressing",
        "Cancel requested (spec.cancel is true); Running (1/4 tasks succeeded, 1 running)",
    ),
    "cancelled": (
        lambda: flowrun(
            ended(running(), Phase.CANCELLED, "Cancelled", CANCEL_MESSAGE), cancel=True
        ),
        "Degraded",
        "Cancelled (1/4 tasks succeeded): cancelled: spec.cancel is true",
    ),
    "cancel requested after success": (
        lambda: flowrun(succeeded(), cancel=True),
        "Healthy",
        "Succeeded (4/4 tasks succeeded): 4 of 4 tasks succeeded",
    ),
    "condition only, succeeded": (
        lambda: flowrun(
            {"conditions": [{"type": "Succeeded", "status": "True", "message": "all done"}]}
        ),
        "Healthy",
        "all done",
    ),
    "condition only, failed": (
        lambda: flowrun(
            {"conditions": [{"type": "Succeeded", "status": "False", "message": "it broke"}]}
        ),
        "Degraded",
        "it broke",
    ),
    "condition only, unknown": (
        lambda: flowrun({"conditions": [{"type": "Ready", "status": "True"}]}),
        "Progressing",
        "Waiting for the daskflow operator to pick up the FlowRun",
    ),
    "a phase from the future": (
        lambda: flowrun({"phase": "Paused"}),
        "Unknown",
        "Unrecognised FlowRun phase: Paused",
    ),
}


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.tools(name)) for name in INTERPRETERS])
def lua(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.mark.parametrize("mode", ["argocd", "noos"])
@pytest.mark.parametrize("case", list(CASES))
def test_health_of_each_status(lua: str, case: str, mode: str) -> None:
    make, status, message = CASES[case]
    health = run_health(lua, make(), mode=mode)
    assert health.status == status
    if message is None:
        assert health.message
    else:
        assert health.message == message


def test_a_long_failure_message_reaches_argo_whole(lua: str) -> None:
    text = "ValueError: " + 'é"\\\t\r\n' * 300 + "end"  # within MESSAGE_LIMIT, odd bytes
    obj = flowrun(written({"phase": "Failed", "reason": "TasksFailed", "message": text}))
    assert run_health(lua, obj) == Health("Degraded", "Failed: TasksFailed: " + text)


def test_a_500_task_run(lua: str) -> None:
    names = [f"t{i}" for i in range(500)]
    state = RunState.new(names)
    state.apply(RunStarted(T))
    for i, name in enumerate(names):
        if i % 5 == 0:
            state.apply(TaskEnded(name, TaskState.SUCCEEDED, T))
        elif i % 5 == 1:
            state.apply(TaskStarted(name, 1, T))
        elif i % 5 == 2:
            state.apply(TaskEnded(name, TaskState.FAILED, T, "boom " * 100))
    health = run_health(lua, flowrun(written(state.to_dict())))
    assert health == Health(
        "Progressing", "Running (100/500 tasks succeeded, 100 running, 100 failed)"
    )


MALFORMED: list[Any] = [
    "Running",
    ["Running"],
    42,
    {"phase": 3},
    {"phase": {"name": "Running"}},
    {"phase": "Running", "summary": "3/4", "tasks": ["a", "b"], "conditions": "none"},
    {"phase": "Running", "summary": {"progress": 7, "failed": "x"}, "tasks": {"a": "Running"}},
    {"phase": "Failed", "reason": ["x"], "message": {"a": 1}},
    {"conditions": [None, "x", {"type": "Succeeded"}]},
    {"phase": "Succeeded", "summary": {"total": 4, "succeeded": 4.0}},
]


@pytest.mark.parametrize("status", MALFORMED, ids=lambda s: to_lua(s)[:40])
def test_malformed_statuses_never_raise(lua: str, status: Any) -> None:
    obj = flowrun()
    obj["status"] = status
    health = run_health(lua, obj)  # raises LuaError if the script errors
    assert health.message


def test_malformed_spec_never_raises(lua: str) -> None:
    for spec in (None, "x", [], {"cancel": "yes"}):
        obj = flowrun(running())
        obj["spec"] = spec
        assert run_health(lua, obj).status == "Progressing"


def test_summary_without_progress_is_computed(lua: str) -> None:
    obj = flowrun({"phase": "Succeeded", "summary": {"total": 4, "succeeded": 4.0}})
    assert run_health(lua, obj) == Health("Healthy", "Succeeded (4/4 tasks succeeded)")


# -- the harness really is Argo CD's restricted environment ------------------------------
SANDBOX_ESCAPES = {
    "string library": 'return {status = string.format("%s", "Healthy")}',
    "string methods": 'local s = "healthy"; return {status = s:upper()}',
    "math library": "return {status = math.floor(1) and 'Healthy'}",
    "io library": 'io.open("/etc/hostname"); return {status = "Healthy"}',
    "os beyond time and date": 'return {status = os.getenv("HOME") and "Healthy"}',
    "require": 'local io = require("io"); return {status = "Healthy"}',
    "dofile": 'dofile("/dev/null"); return {status = "Healthy"}',
    "load": 'return load("return {status = [[Healthy]]}")()',
    "debug": 'debug.traceback(); return {status = "Healthy"}',
}


@pytest.mark.parametrize("name", list(SANDBOX_ESCAPES))
def test_the_harness_blocks_what_argo_cd_does_not_offer(
    lua: str, name: str, tmp_path: Path
) -> None:
    script = tmp_path / "escape.lua"
    script.write_text(SANDBOX_ESCAPES[name] + "\n")
    proc = run_lua(lua, script, flowrun())
    assert proc.returncode == 3, proc.stdout + proc.stderr


def test_the_harness_offers_what_argo_cd_does(lua: str, tmp_path: Path) -> None:
    script = tmp_path / "ok.lua"
    script.write_text(
        "local t = {}\n"
        "table.insert(t, tostring(os.time() > 0))\n"
        "for _, c in ipairs(obj.spec.tasks) do t[#t + 1] = c.name end\n"
        'hs = {status = "Healthy", message = table.concat(t, " ")}\n'
        "return hs\n"
    )
    assert run_health(lua, flowrun(), script=script) == Health(
        "Healthy", "true extract transform load report"
    )
    proc = run_lua(lua, script, flowrun(), mode="noos")
    assert proc.returncode == 3
    assert "os" in proc.stderr


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('return {status = "Fine"}', "invalid status"),
        ('return "Healthy"', "not a table"),
        ('return {status = "Healthy", message = 3}', "number message"),
        ('return {status = "Healthy", reason = "x"}', "unknown field"),
    ],
)
def test_the_harness_rejects_invalid_health(
    lua: str, tmp_path: Path, body: str, problem: str
) -> None:
    script = tmp_path / "bad.lua"
    script.write_text(body + "\n")
    with pytest.raises(LuaError, match=problem):
        run_health(lua, flowrun(), script=script)


def test_json_to_lua_literals() -> None:
    assert to_lua(None) == "nil"
    assert to_lua([1, 2.5, 3.0, True]) == "{1, 2.5, 3, true}"
    assert to_lua({"a-b": {"c": []}}) == '{["a-b"] = {["c"] = {}}}'
    assert to_lua('q"\\\né') == '"q\\034\\092\\010\\195\\169"'
    with pytest.raises(ValueError, match="JSON number"):
        to_lua(float("nan"))


# -- the argocd-cm snippet ---------------------------------------------------------------
def test_the_argocd_cm_snippet_embeds_health_lua_exactly() -> None:
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    assert cm["apiVersion"] == "v1"
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["metadata"]["namespace"] == "argocd"
    assert cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    assert list(cm["data"]) == [HEALTH_KEY]
    # No useOpenLibs key: the script needs no standard library beyond base and table.
    assert cm["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def test_the_argocd_cm_snippet_is_generated_by_the_sync_script() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "hack" / "sync-argocd-cm.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_argocd_cm_snippet_merges_into_an_existing_argocd_cm(
    kube: Any, namespace: str, tmp_path: Path
) -> None:
    """The documented `kubectl patch --type merge --patch-file` keeps Argo CD's own keys.

    Done in a test namespace (the snippet's namespace rewritten), never in a real argocd.
    """
    existing = {
        "url": "https://argocd.example.com",
        "resource.customizations.health.cert-manager.io_Certificate": "hs = {}\nreturn hs\n",
    }
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": namespace},
        "data": existing,
    }
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(cm), check=True)
    patch = yaml.safe_load(ARGOCD_CM.read_text())
    patch["metadata"]["namespace"] = namespace
    patch_file = tmp_path / "argocd-cm.yaml"
    patch_file.write_text(yaml.safe_dump(patch))
    proc = kube.kubectl(
        "-n", namespace, "patch", "configmap", "argocd-cm", "--type", "merge",
        "--patch-file", str(patch_file),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = yaml.safe_load(
        kube.kubectl(
            "-n", namespace, "get", "configmap", "argocd-cm", "-o", "yaml", check=True
        ).stdout
    )
    assert got["data"] == {**existing, HEALTH_KEY: HEALTH_LUA.read_text()}
