"""kind-config.yaml, checked against kind's documented v1alpha4 Cluster schema.

kind cannot run on this project's machines (no nested containers for its nodes), so the
file is kept correct by this structural check. SCHEMA mirrors the Go types in
sigs.k8s.io/kind/pkg/apis/config/v1alpha4 (types.go): kind decodes the file strictly
(unknown fields are errors), and so does this test, duplicate keys included.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.argocd.lua import REPO

KIND_CONFIG = REPO / "kind-config.yaml"
KIND_DOC = REPO / "docs" / "kind.md"
TESTENV_SCRIPT = REPO / "hack" / "build-testenv.sh"

# A type is: str, int, bool, a frozenset of allowed strings, a dict (an object with those
# fields, all optional), ("list", type) or ("map", type) (string keys).
Type = Any
PATCH_JSON6902: dict[str, Type] = {"group": str, "version": str, "kind": str, "patch": str}
MOUNT: dict[str, Type] = {
    "containerPath": str,
    "hostPath": str,
    "readOnly": bool,
    "selinuxRelabel": bool,
    "propagation": frozenset({"None", "HostToContainer", "Bidirectional"}),
}
PORT_MAPPING: dict[str, Type] = {
    "containerPort": int,
    "hostPort": int,
    "listenAddress": str,
    "protocol": frozenset({"TCP", "UDP", "SCTP"}),
}
NODE: dict[str, Type] = {
    "role": frozenset({"control-plane", "worker"}),
    "image": str,
    "labels": ("map", str),
    "extraMounts": ("list", MOUNT),
    "extraPortMappings": ("list", PORT_MAPPING),
    "gpus": str,
    "kubeadmConfigPatches": ("list", str),
    "kubeadmConfigPatchesJSON6902": ("list", PATCH_JSON6902),
}
NETWORKING: dict[str, Type] = {
    "ipFamily": frozenset({"ipv4", "ipv6", "dual"}),
    "apiServerPort": int,
    "apiServerAddress": str,
    "podSubnet": str,
    "serviceSubnet": str,
    "disableDefaultCNI": bool,
    "kubeProxyMode": frozenset({"iptables", "ipvs", "nftables", "none"}),
    "dnsSearch": ("list", str),
}
CLUSTER: dict[str, Type] = {
    "kind": frozenset({"Cluster"}),
    "apiVersion": frozenset({"kind.x-k8s.io/v1alpha4"}),
    "name": str,
    "nodes": ("list", NODE),
    "networking": NETWORKING,
    "featureGates": ("map", bool),
    "runtimeConfig": ("map", str),
    "kubeadmConfigPatches": ("list", str),
    "kubeadmConfigPatchesJSON6902": ("list", PATCH_JSON6902),
    "containerdConfigPatches": ("list", str),
    "containerdConfigPatchesJSON6902": ("list", str),
}


def problems(value: Any, kind: Type, where: str = "") -> list[str]:
    """What in ``value`` does not fit ``kind``, as "path: problem" lines."""
    at = where or "(root)"
    if kind is bool or kind is str:
        return [] if type(value) is kind else [f"{at}: expected {kind.__name__}"]
    if kind is int:
        return [] if type(value) is int else [f"{at}: expected an integer"]
    if isinstance(kind, frozenset):
        return [] if value in kind else [f"{at}: {value!r} is not one of {sorted(kind)}"]
    if isinstance(kind, tuple):
        shape, item = kind
        if shape == "list":
            if not isinstance(value, list):
                return [f"{at}: expected a list"]
            return [p for i, v in enumerate(value) for p in problems(v, item, f"{where}[{i}]")]
        if not isinstance(value, dict):
            return [f"{at}: expected a mapping"]
        return [p for k, v in value.items() for p in problems(v, item, f"{where}.{k}")]
    if not isinstance(value, dict):
        return [f"{at}: expected a mapping"]
    out = []
    for key, item in value.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in kind:
            out.append(f"{path}: unknown field")
        else:
            out.extend(problems(item, kind[key], path))
    return out


class _StrictLoader(yaml.SafeLoader):
    pass


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(k, deep=True) for k, _ in node.value]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {dupes}")
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_strict(text: str) -> Any:
    docs = list(yaml.load_all(text, Loader=_StrictLoader))  # a SafeLoader subclass
    assert len(docs) == 1, "kind reads one document"
    return docs[0]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = load_strict(KIND_CONFIG.read_text())
    return loaded


def test_it_fits_the_v1alpha4_schema(config: dict[str, Any]) -> None:
    assert problems(config, CLUSTER) == []
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"


def test_one_control_plane_and_one_or_two_workers(config: dict[str, Any]) -> None:
    roles = [node.get("role", "control-plane") for node in config["nodes"]]  # kind's default
    assert roles[0] == "control-plane"
    assert roles.count("control-plane") == 1
    assert 1 <= roles.count("worker") <= 2


def test_it_maps_no_ports_and_mounts_nothing(config: dict[str, Any]) -> None:
    for node in config["nodes"]:
        assert "extraPortMappings" not in node
        assert "extraMounts" not in node


def test_every_node_runs_one_pinned_kubernetes_1_36_image(config: dict[str, Any]) -> None:
    images = {node.get("image") for node in config["nodes"]}
    assert len(images) == 1, "all nodes on one image"
    (image,) = images
    match = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}", image or "")
    assert match, f"{image!r}: pin kindest/node by tag and digest, as kind's releases say"
    testenv = re.search(r"^KUBE_VERSION=v(\d+)\.(\d+)\.", TESTENV_SCRIPT.read_text(), re.M)
    assert testenv, "KUBE_VERSION in hack/build-testenv.sh"
    # The same Kubernetes minor as the control plane the tests run against.
    assert match.group(1, 2) == testenv.group(1, 2) == ("1", "36")


def test_the_cluster_name_matches_the_kind_guide(config: dict[str, Any]) -> None:
    guide = KIND_DOC.read_text()
    name = config["name"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name)
    assert "kind create cluster --config kind-config.yaml" in guide
    assert f"kind load docker-image daskflow:dev --name {name}" in guide
    assert f"kind-{name}" in guide  # the kubeconfig context kind creates


# -- the checker itself --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n", "apiVersion"),
        ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnode: []\n", "node: unknown"),
        (
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: master\n",
            "nodes[0].role",
        ),
        (
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: worker\n"
            "  extraPortMappings:\n  - containerPort: '80'\n",
            "nodes[0].extraPortMappings[0].containerPort",
        ),
        (
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  ipFamily: v4\n",
            "networking.ipFamily",
        ),
    ],
)
def test_the_checker_catches_mistakes(text: str, problem: str) -> None:
    found = problems(load_strict(text), CLUSTER)
    assert any(problem in p for p in found), found


def test_the_loader_rejects_duplicate_keys() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate"):
        load_strict("kind: Cluster\nkind: Cluster\n")


def test_a_full_example_from_kinds_docs_passes() -> None:
    text = Path(__file__).with_name("kind-full-example.yaml").read_text()
    assert problems(load_strict(text), CLUSTER) == []
