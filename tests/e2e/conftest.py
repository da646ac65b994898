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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.docker.conftest import docker_engine
from tests.e2e.host import CLUSTER_DIR, HostState
from tests.e2e.scenario import Scenario, wait_until

from harness.hack import BASE_IMAGE, cluster_sh, run_hack
from harness.helm import Helm, find_or_build_helm
from harness.realcluster import IMAGE, Install, RealCluster, install_chart, uninstall_chart

__all__ = ["docker_engine"]  # a fixture this tier shares with tests/docker

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
    _timings["build base image"] = run_hack("build-base-image.sh", logs / "base.log", 1200)
    _timings["build image"] = run_hack(
        "build-image.sh", logs / "image.log", 1200, env={"IMAGE": IMAGE, "BASE_IMAGE": BASE_IMAGE}
    )
    started = time.monotonic()
    cluster_sh("load", IMAGE, timeout=600)
    _timed("load image", started)
    return IMAGE


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
