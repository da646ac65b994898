"""The cluster CLI as a user runs it: the installed ``daskflow`` command in a subprocess,
against the real test API server, with the in-process operator running the flows.

Given/When/Then: a user with a kubeconfig submits, follows, lists, cancels and deletes
FlowRuns; every failure they can meet (no kubeconfig, no CRD, RBAC, a missing run, an
unreachable server) is one line on stderr with exit code 2 (1 for the server), never a
traceback.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from daskflow.kube.builders import OperatorDefaults, build_dask_cluster_spec, build_runner_job
from daskflow.model.validate import parse_flowrun
from harness.controlplane import ENV_KUBECONFIG, ControlPlane, ControlPlaneError, KubeCluster
from harness.kube import (
    DASKFLOW,
    apply,
    bind_rules,
    get_flowrun,
    install_crds,
    operator_running,
    wait_for_task_state,
)
from harness.processes import free_port
from harness.waiting import wait_for

pytestmark = pytest.mark.kube

TIMEOUT = 180  # generous: a busy machine runs the flow's LocalCluster slowly


def daskflow(
    *args: str, kubeconfig: Path | str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed command, with ``kubeconfig`` as ``$KUBECONFIG`` (as a user has it)."""
    environ = {**os.environ, "KUBECONFIG": str(kubeconfig), **(env or {})}
    environ.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [DASKFLOW, *args], capture_output=True, text=True, env=environ, timeout=TIMEOUT
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The failure's message: exit ``code``, one line on stderr, nothing on stdout."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == "", proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr.strip()


def write_flow(path: Path, tasks: list[dict[str, Any]], **meta: Any) -> Path:
    doc = {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": path.stem, **meta},
        "spec": {"parameters": {"who": "world"}, "cluster": {"workers": 1}, "tasks": tasks},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


HELLO = [
    {"name": "hello", "command": ["sh", "-c", "echo hello $(params.who)"]},
    {"name": "shout", "command": ["sh", "-c", "echo $(tasks.hello.result) | tr a-z A-Z"]},
]
SLOW = [{"name": "nap", "command": ["sleep", "120"]}]


@pytest.fixture(scope="module")
def cluster(kube: KubeCluster) -> KubeCluster:
    install_crds(kube)
    return kube


@pytest.fixture(scope="module")
def team(cluster: KubeCluster) -> Iterator[str]:
    """A namespace with an operator (in-process runner, local backend) for the module."""
    name = f"t-cli-{secrets.token_hex(3)}"
    with cluster.api_client() as api:
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    with operator_running(cluster, name):
        yield name


def context_kubeconfig(cluster: KubeCluster, path: Path, namespace: str) -> Path:
    """The admin kubeconfig with two contexts: the current one in ``default``, and
    ``team`` in ``namespace``."""
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    first = doc["contexts"][0]
    doc["contexts"].append(
        {"name": "team", "context": {**first["context"], "namespace": namespace}}
    )
    first["context"]["namespace"] = "default"
    path.write_text(yaml.safe_dump(doc))
    return path


# -- submit, watch, get -------------------------------------------------------------------


def test_submit_watch_get_and_list(cluster: KubeCluster, team: str, tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "hello.yaml", HELLO)
    # When a user submits a flow with --watch
    proc = daskflow(
        "submit", str(flow), "-n", team, "--set", "who=cli", "--watch", "-o", "json",
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    # Then it ends Succeeded with exit code 0, the final status alone on stdout
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    status = json.loads(proc.stdout)
    assert status["phase"] == "Succeeded"
    assert status["tasks"]["shout"]["result"] == "HELLO CLI"
    # And stderr told what was created, then the progress, as daskflow run shows it
    assert f"flowrun.daskflow.io/hello created in namespace {team}" in proc.stderr
    assert "shout: Succeeded" in proc.stderr
    assert "run: Succeeded" in proc.stderr
    # And the status is what the API server holds
    assert get_flowrun(cluster, team, "hello")["status"] == status  # type: ignore[index]

    # When they get the run: the table of daskflow run
    table = daskflow("get", "hello", "-n", team, kubeconfig=cluster.kubeconfig)
    assert table.returncode == 0, table.stderr
    assert "hello: Succeeded" in table.stdout
    assert re.search(r"shout\s*│\s*Succeeded\s*│\s*1", table.stdout), table.stdout
    # And -o yaml / json: the status
    as_yaml = daskflow("get", "hello", "-n", team, "-o", "yaml", kubeconfig=cluster.kubeconfig)
    assert yaml.safe_load(as_yaml.stdout) == status

    # When they list the namespace's runs (the context's namespace: no -n)
    kubeconfig = context_kubeconfig(cluster, tmp_path / "kubeconfig", team)
    listed = daskflow("get", "--context", "team", kubeconfig=kubeconfig)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "TASKS", "DURATION", "AGE"]
    name, phase, tasks, duration, age = row.split()
    assert (name, phase, tasks) == ("hello", "Succeeded", "2/2")
    assert re.fullmatch(r"(\d+m)?\d+s", duration) and re.fullmatch(r"(\d+m)?\d+s", age)
    # And the current context's namespace (default) has none of them
    other = daskflow("get", "--kubeconfig", str(kubeconfig), kubeconfig="/nonexistent")
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "No FlowRuns in namespace default."
    rows = json.loads(daskflow("get", "-n", team, "-o", "json", kubeconfig=kubeconfig).stdout)
    assert [(r["name"], r["phase"], r["tasks"]) for r in rows] == [("hello", "Succeeded", "2/2")]

    # When they submit it again under its name: refused, with the way out
    again = daskflow("submit", str(flow), "-n", team, kubeconfig=cluster.kubeconfig)
    message = one_line_error(again)
    assert "already exists" in message and "--generate-name" in message
    # And with --generate-name the server names it
    named = daskflow(
        "submit", str(flow), "-n", team, "--generate-name", "hello-", kubeconfig=cluster.kubeconfig
    )
    assert named.returncode == 0, named.stderr
    made = re.fullmatch(
        r"flowrun\.daskflow\.io/(hello-\w+) created in namespace \S+\n", named.stdout
    )
    assert made, named.stdout
    assert get_flowrun(cluster, team, made.group(1)) is not None


def test_stop_watching_then_cancel_then_delete(
    cluster: KubeCluster, team: str, tmp_path: Path
) -> None:
    flow = write_flow(tmp_path / "sleepy.yaml", SLOW)
    environ = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    listing = tmp_path / "listing.txt"
    with listing.open("w") as out:  # a user watching the namespace's list meanwhile
        lister = subprocess.Popen(
            [DASKFLOW, "get", "-n", team, "--watch"], env=environ, stdout=out, stderr=out
        )
    watching = subprocess.Popen(
        [DASKFLOW, "submit", str(flow), "-n", team, "--watch"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_task_state(cluster, team, "sleepy", "nap", "Running", timeout=TIMEOUT)
        # When the user stops watching with Ctrl-C
        watching.send_signal(signal.SIGINT)
        out, err = watching.communicate(timeout=60)
    finally:
        watching.kill()
    # Then the command says the run goes on, and how to stop it; exit code 130
    assert watching.returncode == 130, (out, err)
    assert "stopped watching sleepy; it goes on in the cluster" in err, err
    assert "Traceback" not in err and out == ""
    assert get_flowrun(cluster, team, "sleepy")["status"]["phase"] == "Running"  # type: ignore[index]

    # When a user cancels the run
    cancelled = daskflow("cancel", "sleepy", "-n", team, kubeconfig=cluster.kubeconfig)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == "flowrun.daskflow.io/sleepy cancel requested\n"
    assert get_flowrun(cluster, team, "sleepy")["spec"]["cancel"] is True  # type: ignore[index]
    # Then following it shows it end Cancelled, exit code 1 as daskflow run
    watched = daskflow("get", "sleepy", "-n", team, "--watch", kubeconfig=cluster.kubeconfig)
    assert watched.returncode == 1, (watched.stdout, watched.stderr)
    assert "sleepy: Cancelled" in watched.stdout
    assert re.search(r"nap\s*│\s*Cancelled", watched.stdout), watched.stdout

    # And the list watched all along has had a line for each of its phases
    try:
        for phase in ("Running", "Cancelled"):
            wait_for(
                lambda phase=phase: re.search(
                    rf"^sleepy +{phase} +0/1 ", listing.read_text(), re.M
                ),
                60,
                f"a line for sleepy {phase} in the watched list",
            )
        lister.send_signal(signal.SIGINT)
        assert lister.wait(30) == 0, listing.read_text()
    finally:
        lister.kill()
    assert "Traceback" not in listing.read_text()

    # When they delete it, it is gone (the operator's finalizer let it go)
    deleted = daskflow("delete", "sleepy", "-n", team, kubeconfig=cluster.kubeconfig)
    assert (deleted.returncode, deleted.stdout) == (0, "flowrun.daskflow.io/sleepy deleted\n")
    wait_for(lambda: get_flowrun(cluster, team, "sleepy") is None, 60, "sleepy to be gone")
    # And every command about it now says it does not exist
    for command in ("get", "cancel", "delete"):
        proc = daskflow(command, "sleepy", "-n", team, kubeconfig=cluster.kubeconfig)
        assert one_line_error(proc) == (
            f'daskflow {command}: FlowRun "sleepy" not found in namespace "{team}"'
        )


# -- errors -------------------------------------------------------------------------------


def test_no_kubeconfig(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "hello.yaml", HELLO)
    env = {"HOME": str(tmp_path)}  # no ~/.kube/config either
    missing = tmp_path / "nowhere"
    for args in (("get",), ("submit", str(flow)), ("cancel", "x")):
        message = one_line_error(daskflow(*args, kubeconfig=missing, env=env))
        assert "no kubeconfig found" in message and "--kubeconfig" in message
    message = one_line_error(daskflow("get", "--kubeconfig", str(missing), kubeconfig=missing))
    assert message == f"daskflow get: --kubeconfig {missing}: no such file"


def test_unknown_context_and_unreachable_server(cluster: KubeCluster, tmp_path: Path) -> None:
    message = one_line_error(daskflow("get", "--context", "nope", kubeconfig=cluster.kubeconfig))
    assert "no context 'nope'" in message and "daskflow-test" in message
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(doc))
    message = one_line_error(daskflow("get", kubeconfig=dead), code=1)
    assert "cannot reach the API server at https://127.0.0.1:" in message


def test_invalid_manifest_is_refused_before_the_cluster(tmp_path: Path) -> None:
    bad = write_flow(tmp_path / "bad.yaml", [{"name": "a", "call": "m:f", "dependsOn": ["b"]}])
    proc = daskflow("submit", str(bad), kubeconfig=tmp_path / "unused")
    assert proc.returncode == 2, proc.stderr
    assert 'tasks[0] (a).dependsOn: unknown task "b"' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rbac_forbidden_names_the_verb_and_resource(
    cluster: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    # Given a user who may only get FlowRuns (the runner's rules)
    bind_rules(cluster, namespace, "viewer", "runner-rules")
    viewer = cluster.service_account_kubeconfig(namespace, "viewer")
    flow = write_flow(tmp_path / "hello.yaml", HELLO)
    who = f'User "system:serviceaccount:{namespace}:viewer"'
    cases = {
        ("submit", str(flow)): "create flowruns.daskflow.io",
        ("get",): "list flowruns.daskflow.io",
        ("cancel", "hello"): 'patch flowruns.daskflow.io "hello"',
        ("delete", "hello"): 'delete flowruns.daskflow.io "hello"',
    }
    for args, what in cases.items():
        message = one_line_error(daskflow(*args, "-n", namespace, kubeconfig=viewer))
        assert message == (
            f'daskflow {args[0]}: forbidden: {who} cannot {what} in namespace "{namespace}"'
        )
    # And what they may do works: a missing run is told as such
    message = one_line_error(daskflow("get", "hello", "-n", namespace, kubeconfig=viewer))
    assert message == f'daskflow get: FlowRun "hello" not found in namespace "{namespace}"'


@pytest.fixture(scope="module")
def bare() -> Iterator[KubeCluster]:
    """An API server of its own, without the FlowRun CRD (CRDs are cluster-wide)."""
    if os.environ.get(ENV_KUBECONFIG):
        pytest.skip("needs a control plane of its own: CRDs are cluster-wide")
    plane = ControlPlane()
    try:
        plane.start()
    except ControlPlaneError as exc:
        pytest.fail(f"cannot start the test control plane: {exc}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


def test_no_crd_asks_whether_the_chart_is_installed(bare: KubeCluster, tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "hello.yaml", HELLO)
    for args in (("get",), ("get", "hello"), ("submit", str(flow)), ("cancel", "hello")):
        message = one_line_error(daskflow(*args, kubeconfig=bare.kubeconfig))
        assert "does not serve flowruns.daskflow.io: is the daskflow chart installed?" in message


def test_submitting_to_a_namespace_that_does_not_exist(
    cluster: KubeCluster, tmp_path: Path
) -> None:
    flow = write_flow(tmp_path / "hello.yaml", HELLO)
    proc = daskflow("submit", str(flow), "-n", "no-such-ns", kubeconfig=cluster.kubeconfig)
    assert one_line_error(proc) == (
        'daskflow submit: cannot create flowruns.daskflow.io: namespace "no-such-ns" not found'
    )


def test_python_api_submits_and_waits(cluster: KubeCluster, team: str) -> None:
    from daskflow.remote import submit

    manifest = {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"namespace": team},
        "spec": {"parameters": {"who": "api"}, "cluster": {"workers": 1}, "tasks": HELLO},
    }
    seen: list[str] = []
    # When a program submits a manifest (its namespace in metadata) and waits
    run = submit(
        manifest,
        generate_name="api-",
        kubeconfig=str(cluster.kubeconfig),
        wait=True,
        on_status=lambda status: seen.append(status.get("phase", "")),
    )
    # Then it gets the finished run, named by the server, in the manifest's namespace
    assert (run.namespace, run.phase, run.finished) == (team, "Succeeded", True)
    assert run.name.startswith("api-") and run.status["tasks"]["shout"]["result"] == "HELLO API"
    assert seen[-1] == "Succeeded"
    assert run.status == get_flowrun(cluster, team, run.name)["status"]  # type: ignore[index]
    # And the manifest it was given is unchanged
    assert manifest["metadata"] == {"namespace": team}


# -- logs (object level: no kubelet runs here, so pods never start; tests/e2e reads real logs)


def test_logs_finds_the_runs_pods_by_label(
    cluster: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    for name in ("hello", "podless"):
        flow = write_flow(tmp_path / f"{name}.yaml", HELLO)
        made = daskflow("submit", str(flow), "-n", namespace, kubeconfig=cluster.kubeconfig)
        assert made.returncode == 0, made.stderr
    # Given pods labelled as the run's runner Job and DaskCluster label theirs, and a pod of
    # another run
    run = parse_flowrun(get_flowrun(cluster, namespace, "hello"))
    runner = build_runner_job(run, OperatorDefaults(), "kubernetes")
    dask = build_dask_cluster_spec(run, OperatorDefaults())["metadata"]["labels"]
    pods = {
        "hello-worker-b": {**dask, "dask.org/component": "worker"},
        "hello-runner": runner["spec"]["template"]["metadata"]["labels"],
        "hello-worker-a": {**dask, "dask.org/component": "worker"},
        "hello-scheduler": {**dask, "dask.org/component": "scheduler"},
        "other-worker": {**dask, "daskflow.io/flowrun-uid": "another-uid"},
    }
    for pod, labels in pods.items():
        apply(
            cluster,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "labels": labels},
                "spec": {"containers": [{"name": "main", "image": "daskflow:dev"}]},
            },
            namespace,
        )
    # When the user asks for its logs
    proc = daskflow("logs", "hello", "-n", namespace, kubeconfig=cluster.kubeconfig)
    # Then each of its pods, runner first, is told to have no log yet (none started)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    told = [line.split(" ")[2] for line in proc.stderr.splitlines()]
    order = ("hello-runner", "hello-scheduler", "hello-worker-a", "hello-worker-b")
    assert told == [f"pod/{p}" for p in order], proc.stderr
    assert all(line.endswith(" is Pending: no log yet") for line in proc.stderr.splitlines())
    # And --follow, which reads the pods side by side, tells the same of each
    followed = daskflow("logs", "hello", "-n", namespace, "-f", kubeconfig=cluster.kubeconfig)
    assert followed.returncode == 1, followed.stderr
    assert sorted(followed.stderr.splitlines()) == sorted(proc.stderr.splitlines())
    # And a run without pods says where they went
    message = one_line_error(
        daskflow("logs", "podless", "-n", namespace, kubeconfig=cluster.kubeconfig), 1
    )
    assert message.startswith(
        f'daskflow logs: FlowRun "podless" has no pods in namespace "{namespace}"'
    )
    # And a user who may not list pods is told so
    bind_rules(cluster, namespace, "viewer", "runner-rules")
    viewer = cluster.service_account_kubeconfig(namespace, "viewer")
    message = one_line_error(daskflow("logs", "hello", "-n", namespace, kubeconfig=viewer))
    assert message == (
        f'daskflow logs: forbidden: User "system:serviceaccount:{namespace}:viewer" cannot '
        f'list pods in namespace "{namespace}"'
    )
