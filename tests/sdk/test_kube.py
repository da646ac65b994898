"""The exported manifest is a FlowRun the real API server takes, and stores as written."""

from __future__ import annotations

from typing import Any

import pytest

from harness.controlplane import KubeCluster
from harness.kube import apply, get_flowrun, install_crds

from .test_trace import etl


@pytest.fixture(scope="module")
def crds(kube: KubeCluster) -> KubeCluster:
    install_crds(kube)
    return kube


def contains(stored: Any, written: Any) -> bool:
    """``written`` is in ``stored``: the API server may add defaults, never change a value."""
    if isinstance(written, dict):
        return isinstance(stored, dict) and all(
            k in stored and contains(stored[k], v) for k, v in written.items()
        )
    if isinstance(written, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(written)
            and all(contains(s, w) for s, w in zip(stored, written, strict=True))
        )
    return bool(stored == written)


def test_the_api_server_takes_the_exported_flowrun(crds: KubeCluster, namespace: str) -> None:
    doc = etl.manifest(date="2027-01-01")
    apply(crds, etl.to_yaml(date="2027-01-01"), namespace)
    stored = get_flowrun(crds, namespace, doc["metadata"]["name"])
    assert stored is not None
    assert contains(stored["spec"], doc["spec"]), stored["spec"]
