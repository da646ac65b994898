"""The real single-node cluster of ``hack/cluster.sh`` with the project's chart installed
from its image: shared by the end-to-end tier (tests/e2e) and its benchmark."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane import KubeCluster, find_kubectl
from harness.helm import CHART, Helm

IMAGE = "daskflow:e2e"
RELEASE = "daskflow"
SYSTEM_NS = "daskflow-system"  # the release: operator, dask-kubernetes controller
FLOWS_NS = "daskflow-e2e"  # the namespace the operator watches; FlowRuns run here
NAMESPACES = (SYSTEM_NS, FLOWS_NS)
PSS_LABELS = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}


class RealCluster(KubeCluster):
    """The cluster of ``hack/cluster.sh``, through the same helpers as the test control plane."""

    def __init__(self, kubeconfig: Path, work_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.work_dir = work_dir
        self.kubectl_path = find_kubectl()


class Kubectl:
    """kubectl against a cluster, JSON in and out; failures raise with stderr."""

    def __init__(self, kube: KubeCluster) -> None:
        self.kube = kube

    def run(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        proc = self.kube.kubectl(*args, input=input, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        where = ["-n", namespace] if namespace else []
        proc = self.kube.kubectl("get", kind, name, *where, "-o", "json")
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name}: {proc.stderr.strip()}")
        obj: dict[str, Any] = json.loads(proc.stdout)
        return obj

    def list(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.run(*args))["items"]
        return items


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
