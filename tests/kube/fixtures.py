"""pytest fixtures for tests against a real Kubernetes API (see controlplane.py).

Loaded for the whole suite from tests/conftest.py. Every test that uses ``kube``
(directly or through ``namespace``) gets the ``kube`` marker, so
``pytest -m "not kube"`` leaves them out.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from harness.controlplane import ControlPlaneError, KubeCluster, from_environment

__all__ = ["kube", "namespace"]

_KUBE_FIXTURES = frozenset({"kube", "namespace"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _KUBE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kube)


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeCluster]:
    """The test cluster: a fresh etcd + kube-apiserver for the session, or the
    cluster ``$DASKFLOW_TEST_KUBECONFIG`` points at.

    ``kube.kubeconfig`` (admin Path), ``kube.api_client()``, ``kube.kubectl(*args)``,
    ``kube.service_account_kubeconfig(namespace, name)``.
    """
    try:
        cluster = from_environment()
        cluster.start()
    except ControlPlaneError as exc:
        pytest.fail(f"cannot start the test control plane: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def _namespace_name(node_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}" if slug else f"t-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(kube: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, uniquely named namespace for one test; deleted afterwards.

    No namespace controller runs on the test control plane, so a deleted namespace
    stays Terminating with its objects in it; it just cannot get new ones.
    """
    name = _namespace_name(request.node.name)
    with kube.api_client() as api:
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        with kube.api_client() as api:
            try:
                k8s.CoreV1Api(api).delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
