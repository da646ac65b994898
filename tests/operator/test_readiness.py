"""Which CRDs the operator needs for a configuration, and how its API errors read."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import yaml
from kubernetes.aio.client import Configuration
from kubernetes.aio.client.exceptions import ApiException

from daskflow.kube.api import DASKCLUSTERS, FLOWRUNS, JOBS, KubeApi, KubeApiError, Resource
from daskflow.kube.readiness import DaskKubernetesMissing, needed_crds

CRDS = Path(__file__).resolve().parents[2] / "crds"


def required(*, default_backend: str, peering: str | None, all_namespaces: bool) -> dict[str, bool]:
    needs = needed_crds(
        default_backend=default_backend, peering=peering, all_namespaces=all_namespaces
    )
    return {need.kind: need.required for need in needs}


def test_the_kubernetes_default_backend_requires_dask_kubernetes_and_peering() -> None:
    assert required(default_backend="kubernetes", peering="daskflow", all_namespaces=False) == {
        "FlowRun": True,
        "DaskCluster": True,
        "DaskWorkerGroup": True,
        "DaskAutoscaler": True,
        "KopfPeering": True,
    }


def test_other_default_backends_only_warn_about_dask_kubernetes() -> None:
    assert required(default_backend="local", peering=None, all_namespaces=False) == {
        "FlowRun": True,
        "DaskCluster": False,
        "DaskWorkerGroup": False,
        "DaskAutoscaler": False,
    }


def test_a_cluster_wide_operator_needs_the_cluster_scoped_peering() -> None:
    needs = required(default_backend="address", peering="p", all_namespaces=True)
    assert needs["ClusterKopfPeering"] is True
    assert "KopfPeering" not in needs


def test_one_recursive_apply_of_crds_installs_everything_the_operator_can_need() -> None:
    """The README's `kubectl apply -R -f crds/` covers every CRD any configuration needs."""
    installed = {
        doc["metadata"]["name"]
        for path in CRDS.rglob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    }
    for all_namespaces in (False, True):
        for need in needed_crds(
            default_backend="kubernetes", peering="daskflow", all_namespaces=all_namespaces
        ):
            assert str(need.resource) in installed, need


def test_a_missing_dask_kubernetes_names_the_crd_and_how_to_install_it() -> None:
    message = str(DaskKubernetesMissing(DASKCLUSTERS))
    assert "DaskCluster CRD (daskclusters.kubernetes.dask.org) is not installed" in message
    assert "kubectl apply -R -f crds/" in message
    assert "Helm chart" in message


@pytest.mark.parametrize(
    ("verb", "res", "namespace", "name", "expected"),
    [
        (
            "create",
            DASKCLUSTERS,
            "team-a",
            "etl-1a2b",
            "create daskclusters.kubernetes.dask.org team-a/etl-1a2b: 404 Not Found: "
            "the server could not find the requested resource",
        ),
        ("patch status", FLOWRUNS, "ns", "etl", "patch status flowruns.daskflow.io ns/etl"),
        ("get", JOBS, None, "x", "get jobs.batch x: 404 Not Found"),
    ],
)
def test_an_api_error_names_verb_resource_and_object(
    verb: str, res: Resource, namespace: str | None, name: str, expected: str
) -> None:
    cause = ApiException(
        status=404,
        reason="Not Found",
        body='{"kind":"Status","message":"the server could not find the requested resource"}',
    )
    err = KubeApiError(cause, verb, res, namespace, name)
    assert str(err).startswith(expected)
    assert err.status == 404


def test_an_unreachable_api_server_is_named_as_such() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def get() -> None:
        async with KubeApi(Configuration(host=f"http://127.0.0.1:{port}")) as api:
            await api.get(FLOWRUNS, "ns", "etl")

    with pytest.raises(KubeApiError) as raised:
        asyncio.run(get())
    assert str(raised.value).startswith(
        "get flowruns.daskflow.io ns/etl: cannot reach the API server"
    ), raised.value
    assert raised.value.status is None
