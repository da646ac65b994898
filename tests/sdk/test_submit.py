"""``flow.submit()`` and ``daskflow submit module:flow``: a flow written in Python, run on
the real test API server by the in-process operator."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from daskflow import Cluster, flow, shell, task
from daskflow.examples import text
from daskflow.remote import RemoteError
from harness.controlplane import KubeCluster
from harness.kube import DASKFLOW, get_flowrun, install_crds, operator_running

pytestmark = pytest.mark.kube

stats = task(name="stats")(text.word_stats)  # importable wherever daskflow is


@flow(cluster=Cluster(workers=1))
def greeting(who: str = "world") -> None:
    said = shell(["sh", "-c", f"echo hello {who}"], name="hello")
    stats(said)


@pytest.fixture(scope="module")
def team(kube: KubeCluster) -> Iterator[str]:
    """A namespace with an operator (in-process runner, local backend) for the module."""
    install_crds(kube)
    name = f"t-sdk-{secrets.token_hex(3)}"
    with kube.api_client() as api:
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    with operator_running(kube, name):
        yield name


def test_submit_waits_for_the_end_and_returns_the_final_status(
    kube: KubeCluster, team: str
) -> None:
    run = greeting.submit(namespace=team, kubeconfig=str(kube.kubeconfig), who="sdk")
    assert run.name.startswith("greeting-")
    assert run.namespace == team
    assert run.phase == "Succeeded", run.status
    assert run.status["tasks"]["hello"]["result"] == "hello sdk"
    assert run.status["tasks"]["stats"]["result"] == {"lines": 1, "words": 2, "longest": "hello"}
    stored = get_flowrun(kube, team, run.name)
    assert stored is not None
    assert stored["spec"]["parameters"] == {"who": "sdk"}


def test_submit_without_wait_returns_the_run_as_created(kube: KubeCluster, team: str) -> None:
    first = greeting.submit(namespace=team, kubeconfig=str(kube.kubeconfig), wait=False)
    second = greeting.submit(namespace=team, kubeconfig=str(kube.kubeconfig), wait=False)
    assert first.name != second.name  # submitting twice makes two runs
    assert get_flowrun(kube, team, first.name) is not None


def test_submit_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(RemoteError) as err:
        greeting.submit(kubeconfig=str(tmp_path / "nowhere"))
    assert len(str(err.value).splitlines()) == 1


def test_daskflow_submit_takes_module_flow(kube: KubeCluster, team: str) -> None:
    proc = subprocess.run(
        [DASKFLOW, "submit", f"{__name__}:greeting", "-n", team, "--set", "who=cli", "--watch",
         "--generate-name", "cli-", "-o", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)},
        cwd=Path(__file__).resolve().parents[2],
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"result": "hello cli"' in proc.stdout
    bad = subprocess.run(
        [DASKFLOW, "submit", f"{__name__}:nothing", "-n", team],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)},
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert bad.returncode == 2
    assert "has no flow 'nothing' (its flows: greeting)" in bad.stderr
    assert "Traceback" not in bad.stderr
