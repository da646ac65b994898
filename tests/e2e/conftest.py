"""The end-to-end tier: the project's chart, image and operator on a real single-node cluster.

Session setup, in order (each step's time is printed at the end of the run):
  1. ``hack/cluster.sh up``: a real cluster on this machine; its admin kubeconfig is the
     last line of its output;
  2. dockerd (``tests/docker/conftest.py``'s ``docker_engine``), the base image and the
     project's image ``daskflow:e2e`` (``hack/build-image.sh``), then
     ``hack/cluster.sh load daskflow:e2e`` into the node's containerd;
  3. the namespaces, labelled to enforce the Pod Security Standards ``restricted`` level,
     and ``helm install`` of charts/daskflow from that image (``pullPolicy: Never``), in its
     default runner-pod mode, with its dask-kubernetes controller.
At the end: every FlowRun is deleted, the release uninstalled, the namespaces removed, and
``hack/cluster.sh down`` (``DASKFLOW_E2E_KEEP=1`` keeps the cluster for a quicker rerun), after
which the host must be as it was before ``up`` (``tests/e2e/host.py``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.docker.conftest import BASE_IMAGE, _script, docker_engine
from tests.e2e.host import CLUSTER_DIR, HostState
from tests.e2e.scenario import Kubectl, Scenario, wait_until

from harness.controlplane import KubeCluster, find_kubectl
from harness.helm import CHART, ROOT, Helm, find_or_build_helm

__all__ = ["docker_engine"]  # a fixture this tier shares with tests/docker

IMAGE = "daskflow:e2e"
RELEASE = "daskflow"
SYSTEM_NS = "daskflow-system"  # the release: operator, dask-kubernetes controller
FLOWS_NS = "daskflow-e2e"  # the namespace the operator watches; FlowRuns run here
NAMESPACES = (SYSTEM_NS, FLOWS_NS)
PSS_LABELS = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}
E2E_DIR = Path(__file__).resolve().parent

_timings: dict[str, float] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            # The first test also pays for the session's setup (builds, cluster start);
            # every wait inside a test has its own, much shorter bound.
            item.add_marker(pytest.mark.timeout(2400))


def _timed(step: str, started: float) -> None:
    _timings[step] = time.monotonic() - started


class RealCluster(KubeCluster):
    """The cluster of ``hack/cluster.sh``, through the same helpers as the test control plane."""

    def __init__(self, kubeconfig: Path, work_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.work_dir = work_dir
        self.kubectl_path = find_kubectl()


def cluster_sh(*args: str, timeout: float = 1800) -> str:
    """Run ``hack/cluster.sh``; its stdout, or the session fails with its output."""
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "cluster.sh"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"hack/cluster.sh {' '.join(args)} exited {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return proc.stdout


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    """The session's cluster; after ``down``, the host must be as it was before ``up``.

    A cluster already up when the session starts (``DASKFLOW_E2E_KEEP=1`` last time) is
    used as it is; the host is then compared with nothing.
    """
    before = None if CLUSTER_DIR.exists() else HostState.capture()
    started = time.monotonic()
    out = cluster_sh("up").strip().splitlines()
    _timed("cluster up", started)
    kubeconfig = Path(out[-1].strip()) if out else Path()
    if not kubeconfig.is_file():
        pytest.fail(f"hack/cluster.sh up printed no kubeconfig path last: {out[-5:]}")
    try:
        yield RealCluster(kubeconfig, tmp_path_factory.mktemp("e2e"))
    finally:
        if os.environ.get("DASKFLOW_E2E_KEEP") != "1":
            started = time.monotonic()
            cluster_sh("down", timeout=600)
            _timed("cluster down", started)
            left = HostState.capture().leftovers(before) if before else []
            if left:
                pytest.fail("hack/cluster.sh down left behind:\n" + "\n".join(left), pytrace=False)


@pytest.fixture(scope="session")
def e2e_image(
    cluster: RealCluster, docker_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The project's image, built from this checkout and loaded into the node."""
    logs = tmp_path_factory.mktemp("e2e-image")
    _timings["build base image"] = _script("build-base-image.sh", logs / "base.log", 1200)
    _timings["build image"] = _script(
        "build-image.sh", logs / "image.log", 1200, env={"IMAGE": IMAGE, "BASE_IMAGE": BASE_IMAGE}
    )
    started = time.monotonic()
    cluster_sh("load", IMAGE, timeout=600)
    _timed("load image", started)
    return IMAGE


@dataclass
class Install:
    """The installed chart: where things run, and a kubectl for the cluster."""

    kube: RealCluster
    kubectl: Kubectl
    image: str
    system_namespace: str = SYSTEM_NS
    namespace: str = FLOWS_NS
    release: str = RELEASE


def install_chart(cluster: RealCluster, image: str, helm: Helm) -> Install:
    """Namespaces (Pod Security ``restricted``) and charts/daskflow from ``image``."""
    kubectl = Kubectl(cluster)
    for ns in NAMESPACES:
        doc = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": PSS_LABELS},
        }
        kubectl.run("apply", "-f", "-", input=yaml.safe_dump(doc))
    repository, tag = image.split(":")
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "watchNamespaces": [FLOWS_NS],
        "operator": {"flowImagePullPolicy": "Never"},
    }
    helm.run(
        "upgrade", "--install", RELEASE, str(CHART), "-n", SYSTEM_NS,
        "-f", str(helm.values_file(values)), "--wait", "--timeout=5m",
        kubeconfig=cluster.kubeconfig, timeout=420,
    )  # fmt: skip
    return Install(cluster, kubectl, image)


def uninstall_chart(install: Install, helm: Helm) -> None:
    """Every FlowRun (while the operator still runs their finalizers), the release, the
    namespaces."""
    install.kube.kubectl("delete", "flowruns", "--all", "-n", FLOWS_NS, "--timeout=120s")
    helm.run("uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout=3m",
             kubeconfig=install.kube.kubeconfig, check=False, timeout=240)  # fmt: skip
    install.kube.kubectl("delete", "namespace", *NAMESPACES, "--timeout=120s", timeout=180)


@pytest.fixture(scope="session")
def installed(
    cluster: RealCluster, e2e_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Install]:
    """charts/daskflow installed from the e2e image, operator and controller Ready."""
    helm = Helm(find_or_build_helm(), tmp_path_factory.mktemp("helm-home"))
    started = time.monotonic()
    install = install_chart(cluster, e2e_image, helm)
    _timed("helm install", started)
    try:
        yield install
    finally:
        uninstall_chart(install, helm)


@pytest.fixture
def flows(installed: Install) -> Iterator[Scenario]:
    """A fresh scenario in the watched namespace; its FlowRun is deleted after the test."""
    scenario = Scenario(installed.kubectl, installed.namespace)
    yield scenario
    if scenario.manifest:
        installed.kube.kubectl(
            "delete", "flowrun", scenario.name, "-n", installed.namespace, "--ignore-not-found"
        )


def operator_pod(install: Install) -> str:
    pods = install.kubectl.list(
        "pods", install.system_namespace, "app.kubernetes.io/component=operator"
    )
    running = [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, running
    return running[0]


def operator_ready(install: Install, timeout: float = 180) -> str:
    """The name of the one Ready operator pod, waiting for it."""

    def ready() -> str | None:
        pods = install.kubectl.list(
            "pods", install.system_namespace, "app.kubernetes.io/component=operator"
        )
        for pod in pods:
            conditions = (pod.get("status") or {}).get("conditions") or []
            if not pod["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True" for c in conditions
            ):
                return str(pod["metadata"]["name"])
        return None

    name: str = wait_until(ready, timeout, "a Ready operator pod")
    return name


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _timings:
        parts = ", ".join(f"{k} {v:.0f}s" for k, v in _timings.items())
        terminalreporter.write_line(f"e2e setup: {parts}")
