"""The Helm chart (charts/daskflow): lint, render, apply to the real control plane, install.

* ``helm lint --strict`` and ``helm template`` for several value combinations; each rendering
  is applied with ``kubectl apply --dry-run=server`` into namespaces that enforce Pod Security
  ``restricted``, and the pods of its Deployments are dry-run created there too (Pod Security
  admission enforces on Pods only).
* A real ``helm install`` (namespaced, and cluster-wide), then ``kubectl auth can-i`` as the
  chart's ServiceAccounts: everything the operator, the runner and the dask-kubernetes
  controller need, and nothing else.
* The operator and the dask-kubernetes controller run as local processes authenticated as
  the installed ServiceAccounts, with the installed Deployments' arguments, and drive a
  FlowRun through its runner Job and DaskCluster to the controller's Deployments.
* The chart's CRDs are byte-for-byte the repository's.

helm comes from ``hack/build-helm.sh`` (cached); if it is missing the tests build it, and skip
only when that is impossible (they fail instead when ``$CI`` is set).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.controlplane import KubeCluster
from harness.helm import CHART, ROOT, Helm, find_or_build_helm
from harness.kube import OperatorProcess, get_flowrun, install_crds
from harness.processes import Supervised, free_port
from harness.waiting import wait_for

RBAC = CHART / "files" / "rbac"
CONTROLLER_SETTINGS = "/etc/daskflow/dask-kubernetes/daskflow_settings.py"

# The ServiceMonitor/PrometheusRule kinds, as much CRD as a dry run needs.
MONITORING_CRDS = [
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    for kind, plural in (
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    )
]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(find_or_build_helm(), tmp_path_factory.mktemp("helm-home"))


# --------------------------------------------------------------------------- helpers


def rules(name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load((RBAC / f"{name}.yaml").read_text())
    return loaded


def find(
    docs: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None
) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def one(
    docs: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None
) -> dict[str, Any]:
    found = find(docs, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''} {namespace or ''}, got {found}"
    return found[0]


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", "daskflow")


def container_args(deployment: dict[str, Any]) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def combos(release_ns: str, a: str, b: str) -> dict[str, dict[str, Any]]:
    """The value combinations the chart is linted, rendered and dry-run applied with."""
    return {
        "default": {},
        "namespaced": {"watchNamespaces": [a, b], "runner": {"namespaces": [release_ns]}},
        "cluster-wide": {"rbac": {"clusterWide": True}, "runner": {"namespaces": [a, b]}},
        "replicas-2": {
            "replicas": 2,
            "watchNamespaces": [a],
            "podDisruptionBudget": {"enabled": True},
        },
        "dask-kubernetes-off": {
            "daskKubernetes": {"enabled": False},
            "operator": {"defaultBackend": "local"},
        },
        "monitoring": {
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "daskflow"}},
        },
        "in-process-standalone": {
            "operator": {
                "runner": "in-process",
                "defaultBackend": "local",
                "peering": {"enabled": False},
                "logLevel": "debug",
                "extraEnv": [{"name": "DASK_DISTRIBUTED__WORKER__DAEMON", "value": "False"}],
            },
            "rbac": {"aggregateToDefaultRoles": False},
        },
        "customised": {
            "image": {
                "repository": "registry.example.com/daskflow",
                "digest": "sha256:" + "ab" * 32,
                "pullPolicy": "Always",
            },
            "imagePullSecrets": [{"name": "regcred"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {
                    "key": "dedicated",
                    "operator": "Equal",
                    "value": "daskflow",
                    "effect": "NoSchedule",
                }
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/arch",
                                        "operator": "In",
                                        "values": ["amd64"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
            "resources": {
                "requests": {"cpu": "200m", "memory": "300Mi"},
                "limits": {"cpu": 1, "memory": "2Gi"},
            },
            "ports": {"metrics": 9191, "health": 8181},
            "serviceAccount": {
                "name": "flow-operator",
                "annotations": {"example.com/role": "daskflow"},
            },
            "daskKubernetes": {
                "image": {"repository": "ghcr.io/dask/dask-kubernetes-operator", "tag": "2026.3.0"},
                "workerAllocation": {"batchSize": 5, "delay": 2},
                "events": {"enabled": False, "level": "WARNING"},
            },
        },
    }


COMBO_NAMES = list(combos("r", "a", "b"))


def kubectl_ok(kube: KubeCluster, *args: str, input: str | None = None) -> str:
    proc = kube.kubectl(*args, input=input)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout + proc.stderr


def make_namespace(kube: KubeCluster, prefix: str, *, restricted: bool = True) -> str:
    name = f"{prefix[:40]}-{secrets.token_hex(3)}"
    labels = (
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/warn": "restricted",
        }
        if restricted
        else {}
    )
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    kubectl_ok(kube, "create", "-f", "-", input=yaml.safe_dump(doc))
    return name


def pod_of(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The pod a Deployment would create (Pod Security admission enforces on Pods only)."""
    spec = dict(deployment["spec"]["template"]["spec"])
    spec.pop("serviceAccountName", None)  # not what is checked; real clusters admit SAs
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": deployment["metadata"]["name"],
            "namespace": namespace,
            "labels": deployment["spec"]["template"]["metadata"]["labels"],
        },
        "spec": spec,
    }


@pytest.fixture(scope="module")
def cluster(kube: KubeCluster) -> KubeCluster:
    """The test control plane with the chart's CRDs (and minimal monitoring CRDs)."""
    install_crds(kube)
    kubectl_ok(kube, "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(MONITORING_CRDS))
    names = [
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
        "crd/kopfpeerings.kopf.dev",
        "crd/clusterkopfpeerings.kopf.dev",
    ]
    # (`kubectl wait` errors out while a new CRD has no status.conditions yet.)
    wait_for(
        lambda: (
            kube.kubectl("wait", "--for=condition=Established", "--timeout=10s", *names).returncode
            == 0
        ),
        60,
        "the CRDs to be established",
        interval=1,
    )
    # A new CRD's storage answers 429 "storage is (re)initializing" for a while after that.
    kinds = (
        "flowruns.daskflow.io,kopfpeerings.kopf.dev,clusterkopfpeerings.kopf.dev,"
        "daskclusters.kubernetes.dask.org,daskworkergroups.kubernetes.dask.org,"
        "daskautoscalers.kubernetes.dask.org,daskjobs.kubernetes.dask.org,"
        "servicemonitors.monitoring.coreos.com,prometheusrules.monitoring.coreos.com"
    )
    wait_for(
        lambda: kube.kubectl("get", kinds, "--all-namespaces").returncode == 0,
        90,
        "the custom resources to be served",
        interval=1,
    )
    return kube


# --------------------------------------------------------------------------- CRD drift


def _yaml_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.yaml"))}


@pytest.mark.parametrize(
    ("source", "copy"),
    [
        ("crds", "charts/daskflow/crds"),
        ("crds/dask-kubernetes", "charts/daskflow/charts/dask-kubernetes-crds/crds"),
    ],
)
def test_chart_crds_are_the_repository_crds(source: str, copy: str) -> None:
    want, got = _yaml_files(ROOT / source), _yaml_files(ROOT / copy)
    assert want, f"no CRDs in {source}"
    drift = sorted(name for name in want.keys() | got.keys() if want.get(name) != got.get(name))
    assert not drift, f"{copy} drifted from {source} ({drift}): run hack/sync-chart-crds.sh"


# --------------------------------------------------------------------------- lint


@pytest.mark.helm
@pytest.mark.parametrize("combo", COMBO_NAMES)
def test_lint_strict(helm: Helm, combo: str) -> None:
    values = combos("daskflow-system", "team-a", "team-b")[combo]
    out = helm.run(
        "lint",
        "--strict",
        "--with-subcharts",
        str(CHART),
        "-n",
        "daskflow-system",
        "-f",
        str(helm.values_file(values)),
    )
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.helm
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replica": 2}, "additional properties 'replica' not allowed"),
        ({"operator": {"runner": "thread"}}, "runner"),
        ({"operator": {"defaultBackend": "ssh"}}, "defaultBackend"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "interval"),
        ({"daskKubernetes": {"enabled": "yes"}}, "enabled"),
        (
            {"rbac": {"clusterWide": True}, "watchNamespaces": ["a"]},
            "watchNamespaces must be empty when rbac.clusterWide is true",
        ),
        (
            {"replicas": 2, "operator": {"peering": {"enabled": False}}},
            "replicas > 1 needs operator.peering.enabled",
        ),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_bad_values_are_refused(helm: Helm, values: dict[str, Any], message: str) -> None:
    proc = helm.run(
        "template", "daskflow", str(CHART), "-f", str(helm.values_file(values)), check=False
    )
    assert proc.returncode != 0, proc.stdout[:500]
    assert message in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- rendering


def _rules_of(docs: list[dict[str, Any]], kind: str, name: str) -> list[list[dict[str, Any]]]:
    return [d["rules"] for d in find(docs, kind, name)]


@pytest.mark.helm
def test_namespaced_rendering(helm: Helm) -> None:
    docs = helm.render({"watchNamespaces": ["team-a", "team-b"]})
    # The operator: a Role per watched namespace with exactly the rules file, bound to its SA.
    for ns in ("team-a", "team-b"):
        assert one(docs, "Role", "daskflow", ns)["rules"] == rules("operator-rules")
        binding = one(docs, "RoleBinding", "daskflow", ns)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "daskflow",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "daskflow", "namespace": "daskflow-system"}
        ]
        one(docs, "KopfPeering", "daskflow", ns)
        # The runner account in each managed namespace.
        one(docs, "ServiceAccount", "daskflow-runner", ns)
        assert one(docs, "Role", "daskflow-runner", ns)["rules"] == rules("runner-rules")
        assert one(docs, "RoleBinding", "daskflow-runner", ns)["subjects"] == [
            {"kind": "ServiceAccount", "name": "daskflow-runner", "namespace": ns}
        ]
        assert one(docs, "Role", "daskflow-dask-kubernetes", ns)["rules"] == rules(
            "dask-kubernetes-rules"
        )
    assert not find(docs, "Role", namespace="daskflow-system")
    assert not find(docs, "ClusterKopfPeering")
    assert {d["metadata"]["name"] for d in find(docs, "ClusterRole")} == {
        "daskflow-view",
        "daskflow-edit",
    }
    assert not find(docs, "ClusterRoleBinding")
    args = container_args(operator_deployment(docs))
    assert args[0] == "operator"
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args
    assert "--all-namespaces" not in args
    assert "--peering=daskflow" in args
    assert "--standalone" not in args
    assert not any(a.startswith("--priority") for a in args)  # random per replica
    controller = one(docs, "Deployment", "daskflow-dask-kubernetes")
    c_args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in c_args
    assert "--namespace=team-b" in c_args


@pytest.mark.helm
def test_default_watches_the_release_namespace(helm: Helm) -> None:
    docs = helm.render({}, "flows")
    args = container_args(operator_deployment(docs))
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=flows"]
    one(docs, "Role", "daskflow", "flows")
    one(docs, "KopfPeering", "daskflow", "flows")
    one(docs, "ServiceAccount", "daskflow-runner", "flows")
    assert args[1:] == [
        "--runner=pod",
        "--namespace=flows",
        "--default-backend=kubernetes",
        "--image=daskflow:0.1.0",
        "--image-pull-policy=IfNotPresent",
        "--runner-service-account=daskflow-runner",
        "--status-interval=1",
        "--metrics-port=9090",
        "--health-port=8080",
        "--peering=daskflow",
        "--log-level=info",
    ]


@pytest.mark.helm
def test_the_operator_reads_the_charts_args_as_meant(helm: Helm) -> None:
    """The rendered args go through daskflow's own parser: each value arrives where the
    chart means it to, and the chart's defaults are the operator's own."""
    from daskflow.cli import build_parser
    from daskflow.kube.config import OperatorConfig, OperatorDefaults

    def parsed(values: dict[str, Any]) -> Any:
        return build_parser().parse_args(container_args(operator_deployment(helm.render(values))))

    chart, defaults, config = parsed({}), OperatorDefaults(), OperatorConfig()
    assert (chart.runner, chart.default_backend) == (config.runner, defaults.backend)
    assert chart.image_pull_policy == defaults.image_pull_policy
    assert chart.runner_service_account == defaults.runner_service_account
    assert chart.status_interval == defaults.status_interval
    assert (chart.metrics_port, chart.health_port) == (config.metrics_port, config.health_port)
    assert chart.peering == config.peering
    custom = parsed(
        {
            "operator": {"runner": "in-process", "defaultBackend": "local", "statusInterval": 2.5},
            "runner": {"allowedServiceAccounts": ["etl"]},
        }
    )
    assert (custom.runner, custom.default_backend, custom.status_interval) == (
        "in-process",
        "local",
        2.5,
    )
    assert custom.allow_service_account == ["etl"]


@pytest.mark.helm
def test_cluster_wide_rendering(helm: Helm) -> None:
    docs = helm.render({"rbac": {"clusterWide": True}, "runner": {"namespaces": ["team-a"]}})
    role = one(docs, "ClusterRole", "daskflow")
    assert role["rules"] == rules("operator-rules") + rules("operator-cluster-rules")
    binding = one(docs, "ClusterRoleBinding", "daskflow")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "daskflow", "namespace": "daskflow-system"}
    ]
    assert binding["roleRef"]["name"] == "daskflow"
    assert not find(docs, "Role", "daskflow")
    assert not find(docs, "KopfPeering")
    one(docs, "ClusterKopfPeering", "daskflow")
    args = container_args(operator_deployment(docs))
    assert "--all-namespaces" in args
    assert not any(a.startswith("--namespace") for a in args)
    # The runner account where asked (the operator's own namespace is not a flow namespace).
    assert [
        d["metadata"]["namespace"] for d in find(docs, "ServiceAccount", "daskflow-runner")
    ] == ["team-a"]
    assert one(docs, "ClusterRole", "daskflow-dask-kubernetes")["rules"] == rules(
        "dask-kubernetes-rules"
    )
    one(docs, "ClusterRoleBinding", "daskflow-dask-kubernetes")
    controller = one(docs, "Deployment", "daskflow-dask-kubernetes")
    assert "--all-namespaces" in controller["spec"]["template"]["spec"]["containers"][0]["args"]
    # With no runner.namespaces, the release namespace gets the runner account.
    docs = helm.render({"rbac": {"clusterWide": True}})
    assert [
        d["metadata"]["namespace"] for d in find(docs, "ServiceAccount", "daskflow-runner")
    ] == ["daskflow-system"]


@pytest.mark.helm
def test_replicas_and_peering(helm: Helm) -> None:
    docs = helm.render({"replicas": 2, "podDisruptionBudget": {"enabled": True}})
    deployment = operator_deployment(docs)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = container_args(deployment)
    assert "--peering=daskflow" in args
    assert not any(a.startswith("--priority") for a in args)
    one(docs, "KopfPeering", "daskflow", "daskflow-system")
    pdb = one(docs, "PodDisruptionBudget", "daskflow")
    assert pdb["spec"]["selector"]["matchLabels"] == (deployment["spec"]["selector"]["matchLabels"])
    # Standalone: no peering objects, Recreate, --standalone.
    docs = helm.render({"operator": {"peering": {"enabled": False}}})
    deployment = operator_deployment(docs)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--standalone" in container_args(deployment)
    assert not any(a.startswith("--peering") for a in container_args(deployment))
    assert not find(docs, "KopfPeering")
    # A fixed priority and a custom peering name are passed on.
    docs = helm.render({"operator": {"peering": {"name": "flows", "priority": 7}}})
    args = container_args(operator_deployment(docs))
    assert "--peering=flows" in args
    assert "--priority=7" in args
    one(docs, "KopfPeering", "flows")


@pytest.mark.helm
def test_dask_kubernetes_toggle(helm: Helm) -> None:
    dask_crds = {
        "daskclusters.kubernetes.dask.org",
        "daskworkergroups.kubernetes.dask.org",
        "daskjobs.kubernetes.dask.org",
        "daskautoscalers.kubernetes.dask.org",
    }
    ours = {"flowruns.daskflow.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}
    on = helm.render({}, "daskflow-system", "--include-crds")
    crds = {d["metadata"]["name"]: d for d in find(on, "CustomResourceDefinition")}
    assert set(crds) == ours | dask_crds
    for path in (ROOT / "crds" / "dask-kubernetes").glob("*.yaml"):
        source = yaml.safe_load(path.read_text())
        assert crds[source["metadata"]["name"]] == source
    controller = one(on, "Deployment", "daskflow-dask-kubernetes")
    pod = controller["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "daskflow-dask-kubernetes"
    assert (
        pod["serviceAccountName"]
        != operator_deployment(on)["spec"]["template"]["spec"]["serviceAccountName"]
    )
    assert len(pod["containers"]) == 1
    container = pod["containers"][0]
    assert container["command"] == ["kopf"]
    assert container["args"][:4] == [
        "run",
        "-m",
        "dask_kubernetes.operator.controller",
        CONTROLLER_SETTINGS,
    ]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(Path(CONTROLLER_SETTINGS).parent)]["readOnly"] is True
    settings = one(on, "ConfigMap", "daskflow-dask-kubernetes")
    source = CHART / "files" / "dask-kubernetes" / "daskflow_settings.py"
    assert settings["data"] == {"daskflow_settings.py": source.read_text()}
    assert "--standalone" in container["args"]
    assert container["image"] == "daskflow:0.1.0"
    assert controller["spec"]["replicas"] == 1
    assert controller["spec"]["strategy"] == {"type": "Recreate"}
    # The operator's pod holds the operator only.
    assert [
        c["name"] for c in operator_deployment(on)["spec"]["template"]["spec"]["containers"]
    ] == ["operator"]
    one(on, "ServiceAccount", "daskflow-dask-kubernetes")

    off = helm.render({"daskKubernetes": {"enabled": False}}, "daskflow-system", "--include-crds")
    assert {d["metadata"]["name"] for d in find(off, "CustomResourceDefinition")} == ours
    assert not [d for d in off if "dask-kubernetes" in d["metadata"]["name"]]


@pytest.mark.helm
def test_rbac_is_least_privilege(helm: Helm) -> None:
    """No wildcard, no Secrets, no Pods for the runner and only listing them for the
    operator, in any rendering."""
    for combo, values in combos("daskflow-system", "team-a", "team-b").items():
        docs = helm.render(values)
        for doc in find(docs, "Role") + find(docs, "ClusterRole"):
            for rule in doc["rules"]:
                where = f"{combo}: {doc['kind']} {doc['metadata']['name']}: {rule}"
                assert "*" not in rule.get("verbs", []) + rule.get("resources", []) + rule.get(
                    "apiGroups", []
                ), where
                assert "secrets" not in rule["resources"], where
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), where
                if doc["metadata"]["name"] == "daskflow-runner":
                    assert not {"pods", "pods/exec", "deployments"} & set(rule["resources"]), where
                if doc["metadata"]["name"] == "daskflow":  # lists pods, to see pull errors
                    assert not {"pods/exec", "deployments"} & set(rule["resources"]), where
                    if "pods" in rule["resources"]:
                        assert (rule["resources"], rule["verbs"]) == (["pods"], ["list"]), where


@pytest.mark.helm
@pytest.mark.parametrize("combo", COMBO_NAMES)
def test_deployments_are_restricted(helm: Helm, combo: str) -> None:
    docs = helm.render(combos("daskflow-system", "team-a", "team-b")[combo])
    deployments = find(docs, "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert psc["runAsUser"] == 10001
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"] is not None


@pytest.mark.helm
def test_operator_pod_settings(helm: Helm) -> None:
    values = combos("daskflow-system", "team-a", "team-b")["customised"]
    docs = helm.render(values)
    deployment = operator_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ref = "registry.example.com/daskflow@sha256:" + "ab" * 32
    assert container["image"] == ref
    assert container["imagePullPolicy"] == "Always"
    assert f"--image={ref}" in container["args"]  # the default flow image is the operator's
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert container["resources"] == values["resources"]
    assert pod["serviceAccountName"] == "flow-operator"
    assert one(docs, "ServiceAccount", "flow-operator")["metadata"]["annotations"] == {
        "example.com/role": "daskflow"
    }
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9191, "health": 8181}
    assert "--metrics-port=9191" in container["args"]
    assert "--health-port=8181" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    service = one(docs, "Service", "daskflow-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    controller = one(docs, "Deployment", "daskflow-dask-kubernetes")["spec"]["template"]["spec"]
    c = controller["containers"][0]
    assert c["image"] == "ghcr.io/dask/dask-kubernetes-operator:2026.3.0"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["DASK_KUBERNETES__CONTROLLER__WORKER_ALLOCATION__BATCH_SIZE"] == "5"
    assert env["DASK_KUBERNETES__CONTROLLER__WORKER_ALLOCATION__DELAY"] == "2"
    assert env["DASK_KUBERNETES__CONTROLLER__EVENTS__ENABLED"] == "false"
    assert env["DASK_KUBERNETES__CONTROLLER__EVENTS__LEVEL"] == "WARNING"

    docs = helm.render(
        {
            "operator": {
                "flowImage": "example.com/flows:1",
                "runner": "in-process",
                "defaultBackend": "address",
                "statusInterval": 0.5,
                "flowImagePullPolicy": "Always",
                "extraArgs": ["--log-level=debug"],
            },
            "runner": {"serviceAccountName": "flow-runner"},
            "image": {"tag": "1.2.3"},
        }
    )
    args = container_args(operator_deployment(docs))
    assert operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "daskflow:1.2.3"
    )
    for arg in (
        "--image=example.com/flows:1",
        "--runner=in-process",
        "--default-backend=address",
        "--status-interval=0.5",
        "--image-pull-policy=Always",
        "--runner-service-account=flow-runner",
    ):
        assert arg in args
    assert args[-1] == "--log-level=debug"
    one(docs, "Role", "flow-runner", "daskflow-system")


@pytest.mark.helm
def test_monitoring_rendering(helm: Helm) -> None:
    values = combos("daskflow-system", "team-a", "team-b")["monitoring"]
    docs = helm.render(values)
    service = one(docs, "Service", "daskflow-metrics")
    monitor = one(docs, "ServiceMonitor", "daskflow")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # Targets get job="daskflow-operator", the job label the alerts and the dashboard use.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "daskflow-operator"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["daskflow-system"]}

    rule = one(docs, "PrometheusRule", "daskflow")
    source = yaml.safe_load((CHART / "files" / "alerts" / "daskflow-rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    assert rule["metadata"]["labels"]["release"] == "prom"

    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    configmap = find(docs, "ConfigMap", "daskflow-dashboards")
    if not dashboards:
        assert not configmap
        return
    cm = configmap[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "daskflow"}
    assert cm["data"] == {p.name: p.read_text() for p in dashboards}
    for text in cm["data"].values():
        json.loads(text)


@pytest.mark.helm
def test_optional_objects_are_off_by_default(helm: Helm) -> None:
    docs = helm.render({})
    for kind in ("ServiceMonitor", "PrometheusRule", "PodDisruptionBudget"):
        assert not find(docs, kind), kind
    assert not find(docs, "ConfigMap", "daskflow-dashboards")


# --------------------------------------------------------------------------- dry runs


@pytest.mark.helm
@pytest.mark.parametrize("combo", COMBO_NAMES)
def test_template_applies_to_the_api_server(helm: Helm, cluster: KubeCluster, combo: str) -> None:
    release_ns = make_namespace(cluster, f"chart-{combo}")
    a, b = make_namespace(cluster, "chart-a"), make_namespace(cluster, "chart-b")
    # The release name is unique too: cluster-scoped objects carry it.
    release = f"df{secrets.token_hex(3)}"
    text = helm.template(combos(release_ns, a, b)[combo], release_ns, release)
    out = kubectl_ok(cluster, "apply", "--dry-run=server", "-f", "-", input=text)
    assert "PodSecurity" not in out, out
    assert "violate" not in out, out
    docs = [d for d in yaml.safe_load_all(text) if d]
    for deployment in find(docs, "Deployment"):
        pod = pod_of(deployment, release_ns)
        out = kubectl_ok(
            cluster, "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod)
        )
        assert "Warning" not in out, out


@pytest.mark.helm
def test_restricted_namespace_does_enforce(helm: Helm, cluster: KubeCluster) -> None:
    """The control for the test above: a pod without the security context is refused."""
    ns = make_namespace(cluster, "chart-enforce")
    pod = pod_of(operator_deployment(helm.render({}, ns)), ns)
    for container in pod["spec"]["containers"]:
        del container["securityContext"]
    proc = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod))
    assert proc.returncode != 0
    assert "violates PodSecurity" in proc.stderr


# --------------------------------------------------------------------------- helm install


def sa_user(namespace: str, name: str) -> list[str]:
    """kubectl flags that impersonate a ServiceAccount as its token would present it."""
    return [
        f"--as=system:serviceaccount:{namespace}:{name}",
        "--as-group=system:serviceaccounts",
        f"--as-group=system:serviceaccounts:{namespace}",
        "--as-group=system:authenticated",
    ]


def can_i(
    kube: KubeCluster, who: list[str], verb: str, resource: str, namespace: str | None
) -> bool:
    """``kubectl auth can-i``; ``resource`` may be ``flowruns.daskflow.io/status``."""
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, *who]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    if sub:
        args.append(f"--subresource={sub}")
    proc = kube.kubectl(*args)
    answer = proc.stdout.strip()
    if answer not in ("yes", "no"):
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}")
    return answer == "yes"


def check_permissions(
    kube: KubeCluster, who: list[str], expected: list[tuple[bool, str, str, str | None]]
) -> None:
    wrong = [
        f"{'may' if not allowed else 'may not'} {verb} {resource} in {ns or 'all namespaces'}"
        for allowed, verb, resource, ns in expected
        if can_i(kube, who, verb, resource, ns) != allowed
    ]
    assert not wrong, f"{who[0]}: " + "; ".join(wrong)


# What `kubectl auth can-i --list` shows for any authenticated user (system:basic-user).
_BASELINE = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}


def listed_permissions(kube: KubeCluster, who: list[str], namespace: str) -> dict[str, set[str]]:
    """``kubectl auth can-i --list`` as {resource: verbs}, without the baseline rules."""
    out = kubectl_ok(kube, "auth", "can-i", "--list", *who, "-n", namespace, "--no-headers")
    found: dict[str, set[str]] = {}
    for line in out.splitlines():
        match = re.match(r"^(\S+)\s+\[.*?\]\s+\[.*?\]\s+\[(.*)\]\s*$", line)
        if not match or match.group(1) in _BASELINE:
            continue
        found.setdefault(match.group(1), set()).update(match.group(2).split())
    return found


def expected_permissions(rule_list: list[dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for rule in rule_list:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = f"{resource.split('/')[0]}.{group}" if group else resource
                key += ("/" + resource.split("/")[1]) if "/" in resource else ""
                found.setdefault(key, set()).update(rule["verbs"])
    return found


@dataclass
class Release:
    name: str
    namespace: str
    watched: list[str]
    unmanaged: str
    kubeconfig: Path

    @property
    def operator_sa(self) -> str:
        return f"{self.name}-daskflow"

    @property
    def dask_sa(self) -> str:
        return f"{self.name}-daskflow-dask-kubernetes"


@pytest.fixture(scope="module")
def namespaced_release(helm: Helm, cluster: KubeCluster) -> Iterator[Release]:
    """``helm install`` (namespaced, two watched namespaces) into the test control plane."""
    release_ns = make_namespace(cluster, "chart-release")
    watched = [make_namespace(cluster, "chart-team-a"), make_namespace(cluster, "chart-team-b")]
    unmanaged = make_namespace(cluster, "chart-unmanaged", restricted=False)
    name = f"df{secrets.token_hex(3)}"
    values = helm.values_file(
        {
            "watchNamespaces": watched,
            "metrics": {"serviceMonitor": {"enabled": True}},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
            "replicas": 2,
        }
    )
    helm.run(
        "install",
        name,
        str(CHART),
        "-n",
        release_ns,
        "-f",
        str(values),
        kubeconfig=cluster.kubeconfig,
    )
    try:
        yield Release(name, release_ns, watched, unmanaged, cluster.kubeconfig)
    finally:
        helm.run("uninstall", name, "-n", release_ns, kubeconfig=cluster.kubeconfig, check=False)


@pytest.mark.helm
def test_install_creates_the_objects(
    helm: Helm, namespaced_release: Release, cluster: KubeCluster
) -> None:
    rel = namespaced_release
    status = helm.run(
        "status", rel.name, "-n", rel.namespace, "-o", "json", kubeconfig=rel.kubeconfig
    )
    assert json.loads(status.stdout)["info"]["status"] == "deployed"
    for ns in rel.watched:
        for kind, name in (
            ("kopfpeering", "daskflow"),
            ("serviceaccount", "daskflow-runner"),
            ("role", "daskflow-runner"),
            ("rolebinding", "daskflow-runner"),
            ("role", rel.operator_sa),
            ("rolebinding", rel.operator_sa),
            ("role", rel.dask_sa),
            ("rolebinding", rel.dask_sa),
        ):
            kubectl_ok(cluster, "get", kind, name, "-n", ns)
    for kind, name in (
        ("deployment", rel.operator_sa),
        ("deployment", rel.dask_sa),
        ("serviceaccount", rel.operator_sa),
        ("serviceaccount", rel.dask_sa),
        ("service", f"{rel.operator_sa}-metrics"),
        ("servicemonitor", rel.operator_sa),
        ("prometheusrule", rel.operator_sa),
    ):
        kubectl_ok(cluster, "get", kind, name, "-n", rel.namespace)
    deployment = kubectl_json(cluster, "get", "deployment", rel.operator_sa, "-n", rel.namespace)
    assert deployment["spec"]["replicas"] == 2
    for crd in (
        "flowruns.daskflow.io",
        "kopfpeerings.kopf.dev",
        "daskclusters.kubernetes.dask.org",
    ):
        kubectl_ok(cluster, "get", "crd", crd)
    # Nothing lands in a namespace the release does not manage.
    listing = kubectl_ok(
        cluster,
        "get",
        "serviceaccounts,roles,rolebindings,kopfpeerings",
        "-n",
        rel.unmanaged,
        "-o",
        "name",
    )
    assert not listing.strip(), listing


@pytest.mark.helm
def test_operator_permissions(namespaced_release: Release, cluster: KubeCluster) -> None:
    rel = namespaced_release
    who = sa_user(rel.namespace, rel.operator_sa)
    ns = rel.watched[0]
    needed = [
        ("get", "flowruns.daskflow.io"),
        ("list", "flowruns.daskflow.io"),
        ("watch", "flowruns.daskflow.io"),
        ("patch", "flowruns.daskflow.io"),
        ("delete", "flowruns.daskflow.io"),
        ("patch", "flowruns.daskflow.io/status"),
        ("get", "flowruns.daskflow.io/status"),
        ("create", "jobs.batch"),
        ("get", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("create", "daskclusters.kubernetes.dask.org"),
        ("get", "daskclusters.kubernetes.dask.org"),
        ("delete", "daskclusters.kubernetes.dask.org"),
        ("create", "daskautoscalers.kubernetes.dask.org"),
        ("delete", "daskautoscalers.kubernetes.dask.org"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
        ("get", "kopfpeerings.kopf.dev"),
        ("list", "kopfpeerings.kopf.dev"),
        ("watch", "kopfpeerings.kopf.dev"),
        ("patch", "kopfpeerings.kopf.dev"),
    ]
    forbidden = [
        ("get", "secrets", ns),
        ("list", "secrets", ns),
        ("create", "pods", ns),
        ("create", "pods/exec", ns),
        ("create", "deployments.apps", ns),
        ("create", "flowruns.daskflow.io", ns),
        ("update", "flowruns.daskflow.io", ns),
        ("update", "jobs.batch", ns),
        ("patch", "jobs.batch", ns),
        ("create", "serviceaccounts/token", ns),
        ("create", "rolebindings.rbac.authorization.k8s.io", ns),
        ("list", "flowruns.daskflow.io", rel.namespace),
        ("create", "jobs.batch", rel.namespace),
        ("delete", "namespaces", None),
        ("patch", "nodes", None),
        ("list", "flowruns.daskflow.io", None),
        ("patch", "clusterkopfpeerings.kopf.dev", None),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
    ]
    forbidden += [(verb, resource, rel.unmanaged) for verb, resource in needed]
    check_permissions(
        cluster,
        who,
        [(True, verb, resource, watched) for watched in rel.watched for verb, resource in needed]
        + [(False, *f) for f in forbidden],
    )
    # Exactly the rules file: nothing else shows up in a watched namespace.
    assert listed_permissions(cluster, who, ns) == expected_permissions(rules("operator-rules"))


@pytest.mark.helm
def test_runner_permissions(namespaced_release: Release, cluster: KubeCluster) -> None:
    rel = namespaced_release
    for ns in rel.watched:
        who = sa_user(ns, "daskflow-runner")
        check_permissions(
            cluster,
            who,
            [
                (True, "get", "flowruns.daskflow.io", ns),
                (True, "patch", "flowruns.daskflow.io/status", ns),
                (True, "create", "events.events.k8s.io", ns),
                (False, "list", "flowruns.daskflow.io", ns),
                (False, "patch", "flowruns.daskflow.io", ns),
                (False, "delete", "flowruns.daskflow.io", ns),
                (False, "create", "jobs.batch", ns),
                (False, "get", "secrets", ns),
                (False, "create", "pods", ns),
                (False, "create", "daskclusters.kubernetes.dask.org", ns),
                (False, "get", "flowruns.daskflow.io", rel.unmanaged),
                (
                    False,
                    "patch",
                    "flowruns.daskflow.io/status",
                    rel.watched[1 - rel.watched.index(ns)],
                ),
            ],
        )
        assert listed_permissions(cluster, who, ns) == expected_permissions(rules("runner-rules"))


@pytest.mark.helm
def test_dask_kubernetes_permissions(namespaced_release: Release, cluster: KubeCluster) -> None:
    rel = namespaced_release
    who = sa_user(rel.namespace, rel.dask_sa)
    ns = rel.watched[0]
    needed = [
        ("watch", "daskclusters.kubernetes.dask.org"),
        ("patch", "daskclusters.kubernetes.dask.org"),
        ("create", "daskworkergroups.kubernetes.dask.org"),
        ("patch", "daskjobs.kubernetes.dask.org/status"),
        ("create", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("create", "services"),
        ("watch", "services"),
        ("create", "pods"),
        ("watch", "pods"),
        ("create", "events"),
    ]
    forbidden = [
        ("get", "secrets", ns),
        ("create", "pods/exec", ns),
        ("create", "pods/portforward", ns),
        ("delete", "pods", ns),
        ("update", "deployments.apps", ns),
        ("patch", "flowruns.daskflow.io", ns),
        ("create", "jobs.batch", ns),
        ("create", "pods", rel.unmanaged),
        ("create", "deployments.apps", rel.unmanaged),
        ("list", "namespaces", None),
        ("patch", "nodes", None),
        ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None),
        ("patch", "clusterkopfpeerings.kopf.dev", None),
    ]
    check_permissions(
        cluster,
        who,
        [(True, verb, resource, watched) for watched in rel.watched for verb, resource in needed]
        + [(False, *f) for f in forbidden],
    )
    assert listed_permissions(cluster, who, ns) == expected_permissions(
        rules("dask-kubernetes-rules")
    )
    # The operator's account is not the controller's, and vice versa.
    assert not can_i(cluster, sa_user(rel.namespace, rel.operator_sa), "create", "services", ns)


@pytest.mark.helm
def test_notes_flowrun_is_valid(
    helm: Helm, namespaced_release: Release, cluster: KubeCluster
) -> None:
    rel = namespaced_release
    notes = helm.run(
        "get", "notes", rel.name, "-n", rel.namespace, kubeconfig=rel.kubeconfig
    ).stdout
    assert f"rollout status deployment/{rel.operator_sa}" in notes
    manifest = _notes_flowrun(notes)
    assert f"kubectl -n {rel.watched[0]} apply" in notes
    kubectl_ok(
        cluster, "apply", "--dry-run=server", "-n", rel.watched[0], "-f", "-", input=manifest
    )


def _notes_flowrun(notes: str) -> str:
    match = re.search(r"<<'YAML'.*?\n(.*?)\n\s*YAML\n", notes, re.S)
    assert match, notes
    lines = match.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines) + "\n"


def _installed_args(kube: KubeCluster, release: Release, deployment: str) -> list[str]:
    out = kube.kubectl(
        "get", "deployment", deployment, "-n", release.namespace, "-o", "json", check=True
    ).stdout
    container = json.loads(out)["spec"]["template"]["spec"]["containers"][0]
    args: list[str] = container["args"]
    return args


@pytest.mark.helm
def test_operator_and_controller_run_under_the_chart_accounts(
    namespaced_release: Release, cluster: KubeCluster
) -> None:
    """The installed arguments and accounts, as processes: of two operator replicas one
    stands by (peering through the chart's KopfPeerings), the other takes a FlowRun with the
    kubernetes backend to its runner Job and DaskCluster, and the dask-kubernetes controller
    turns that into scheduler and worker Deployments; deleting the FlowRun removes the
    operator's children. No request is ever forbidden."""
    rel = namespaced_release
    ns = rel.watched[0]
    op_args = _installed_args(cluster, rel, rel.operator_sa)
    assert op_args[0] == "operator"
    # Two replicas (the release has replicas: 2): peering makes exactly one of them active.
    operator_kubeconfig = cluster.service_account_kubeconfig(rel.namespace, rel.operator_sa)
    operators = [
        OperatorProcess(  # it adds --bind-address=127.0.0.1 to the installed arguments
            operator_kubeconfig,
            [*op_args[1:], "--log-level=debug"],
            cluster.work_dir / f"chart-op-{rel.name}-{i}.log",
        )
        for i in range(2)
    ]
    # The controller's kopf settings file, from the installed ConfigMap, where its args say.
    settings = kubectl_json(cluster, "get", "configmap", rel.dask_sa, "-n", rel.namespace)
    local_settings = cluster.work_dir / f"{rel.name}-daskflow_settings.py"
    local_settings.write_text(settings["data"]["daskflow_settings.py"])
    controller_args = [
        str(local_settings) if a == CONTROLLER_SETTINGS else a
        for a in _installed_args(cluster, rel, rel.dask_sa)
    ]
    assert str(local_settings) in controller_args
    controller = ControllerProcess(
        cluster.service_account_kubeconfig(rel.namespace, rel.dask_sa),
        controller_args,
        cluster.work_dir / f"chart-dask-kubernetes-{rel.name}.log",
    )
    flowrun = {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": "chart-e2e", "namespace": ns},
        "spec": {
            "cluster": {"backend": "kubernetes", "workers": 2},
            "tasks": [{"name": "hello", "command": ["echo", "hello"]}],
        },
    }
    try:
        controller.start()
        for operator in operators:
            operator.start()
            assert_loopback_only(operator.metrics_port, operator.health_port)
        assert_loopback_only(controller.port)
        # kopf peering: exactly one replica handles FlowRuns, the other stands by.
        active, standby = wait_for(
            lambda: _one_active(operators, rel.watched), 60, "exactly one active replica"
        )
        kubectl_ok(cluster, "apply", "-f", "-", input=yaml.safe_dump(flowrun))

        def children() -> tuple[dict[str, Any], dict[str, Any]] | None:
            got = kubectl_json(
                cluster,
                "get",
                "jobs.batch,daskclusters.kubernetes.dask.org",
                "-n",
                ns,
                "-l",
                "daskflow.io/flowrun=chart-e2e",
            )
            jobs = [i for i in got["items"] if i["kind"] == "Job"]
            clusters = [i for i in got["items"] if i["kind"] == "DaskCluster"]
            return (jobs[0], clusters[0]) if jobs and clusters else None

        job, dask_cluster = wait_for(
            children, 60, "the runner Job and the DaskCluster", interval=0.5
        )
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == "daskflow-runner"
        name = dask_cluster["metadata"]["name"]

        def dask_objects() -> dict[str, Any] | None:
            got = kubectl_json(
                cluster,
                "get",
                "deployments.apps,services,daskworkergroups",
                "-n",
                ns,
                "-l",
                f"dask.org/cluster-name={name}",
            )
            kinds = [i["kind"] for i in got["items"]]
            ready = (
                kinds.count("Deployment") == 3
                and "Service" in kinds
                and ("DaskWorkerGroup" in kinds)
            )
            return got if ready else None

        wait_for(dask_objects, 90, f"the dask-kubernetes objects of {name}", interval=1)
        phase = kubectl_json(cluster, "get", "daskcluster", name, "-n", ns)["status"]["phase"]
        assert phase in ("Pending", "Running")
        obj = get_flowrun(cluster, ns, "chart-e2e")
        assert obj is not None
        assert obj["status"]["phase"] == "Pending"

        kubectl_ok(cluster, "delete", "flowrun", "chart-e2e", "-n", ns, "--wait=false")

        def cleaned() -> bool:
            got = kubectl_json(
                cluster,
                "get",
                "jobs.batch,daskclusters.kubernetes.dask.org",
                "-n",
                ns,
                "-l",
                "daskflow.io/flowrun=chart-e2e",
            )
            return not got["items"] and get_flowrun(cluster, ns, "chart-e2e") is None

        wait_for(cleaned, 60, "the FlowRun and its children to be deleted")

        # Fail-over: when the active replica goes, the standby takes over.
        active.stop()
        wait_for(
            lambda: _flowrun_streams(standby) == dict.fromkeys(rel.watched, "Resuming"),
            60,
            "the standby replica to take over",
        )
    finally:
        for operator in operators:
            operator.stop()
        controller.stop()
    for log in (*(op.log_path for op in operators), controller.log_path):
        denied = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if re.search(r"forbidden|status=403|HTTP/1\.1 403|not enough permissions", line, re.I)
        ]
        assert not denied, f"{log.name}:\n" + "\n".join(denied[:20])


def _flowrun_streams(operator: OperatorProcess) -> dict[str, str]:
    """The last state kopf logged (at debug level) of each namespace's FlowRun watch-stream:
    "Resuming" in the active replica, "Pausing" in one that stands by (peering)."""
    states: dict[str, str] = {}
    text = operator.log_path.read_text(errors="replace")
    for match in re.finditer(
        r"(Pausing|Resuming) the watch-stream for flowruns\S* in '([^']+)'", text
    ):
        states[match.group(2)] = match.group(1)
    return states


def _one_active(
    operators: list[OperatorProcess], namespaces: list[str]
) -> tuple[OperatorProcess, OperatorProcess] | None:
    streams = [_flowrun_streams(op) for op in operators]
    active = [
        op
        for op, s in zip(operators, streams, strict=True)
        if s == dict.fromkeys(namespaces, "Resuming")
    ]
    standby = [
        op
        for op, s in zip(operators, streams, strict=True)
        if s == dict.fromkeys(namespaces, "Pausing")
    ]
    return (active[0], standby[0]) if len(active) == 1 and len(standby) == 1 else None


def kubectl_json(kube: KubeCluster, *args: str) -> dict[str, Any]:
    proc = kube.kubectl(*args, "-o", "json")
    if proc.returncode != 0:
        raise AssertionError(proc.stderr)
    loaded: dict[str, Any] = json.loads(proc.stdout)
    return loaded


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the TCP sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.append(address)
    return found


def assert_loopback_only(*ports: int) -> None:
    """The processes under test listen on 127.0.0.1 only (nothing beyond loopback here)."""
    for port in ports:
        assert _listeners(port) == ["0100007F"], f"port {port}: {_listeners(port)}"


class ControllerProcess:
    """The dask-kubernetes controller (its chart arguments), as its ServiceAccount."""

    def __init__(self, kubeconfig: Path, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.kubeconfig = kubeconfig
        self.args = [
            a
            if not a.startswith("--liveness=")
            else f"--liveness=http://127.0.0.1:{self.port}/healthz"
            for a in args
        ]
        self.log_path = log_path
        self.proc: Supervised | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc = Supervised(
            [sys.executable, "-m", "kopf", *self.args],
            self.log_path,
            name="dask-kubernetes controller",
            env=env,
        )
        wait_for(self.alive, 60, "the dask-kubernetes controller's liveness endpoint")

    def alive(self) -> bool:
        assert self.proc is not None
        if not self.proc.running():
            raise AssertionError(
                f"the controller exited {self.proc.returncode}:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as rsp:
                return bool(rsp.status == 200)
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=30)


@pytest.mark.helm
def test_cluster_wide_install(helm: Helm, cluster: KubeCluster) -> None:
    release_ns = make_namespace(cluster, "chart-cw-release")
    flows = make_namespace(cluster, "chart-cw-flows")
    other = make_namespace(cluster, "chart-cw-other")
    name = f"df{secrets.token_hex(3)}"
    values = helm.values_file(
        {
            "rbac": {"clusterWide": True},
            "runner": {"namespaces": [flows]},
            "operator": {"peering": {"name": name}},
        }
    )
    helm.run(
        "install",
        name,
        str(CHART),
        "-n",
        release_ns,
        "-f",
        str(values),
        kubeconfig=cluster.kubeconfig,
    )
    try:
        kubectl_ok(cluster, "get", "clusterkopfpeering", name)
        op = sa_user(release_ns, f"{name}-daskflow")
        check_permissions(
            cluster,
            op,
            [
                (True, "list", "flowruns.daskflow.io", None),
                (True, "watch", "flowruns.daskflow.io", None),
                (True, "patch", "flowruns.daskflow.io/status", other),
                (True, "create", "jobs.batch", other),
                (True, "create", "daskclusters.kubernetes.dask.org", other),
                (True, "patch", "clusterkopfpeerings.kopf.dev", None),
                (True, "watch", "clusterkopfpeerings.kopf.dev", None),
                (False, "get", "secrets", other),
                (False, "list", "secrets", None),
                (False, "create", "pods", other),
                (False, "delete", "namespaces", None),
                (False, "patch", "nodes", None),
                (False, "create", "clusterrolebindings.rbac.authorization.k8s.io", None),
            ],
        )
        runner = sa_user(flows, "daskflow-runner")
        check_permissions(
            cluster,
            runner,
            [
                (True, "patch", "flowruns.daskflow.io/status", flows),
                (False, "create", "jobs.batch", flows),
                (False, "get", "secrets", flows),
                (False, "get", "flowruns.daskflow.io", other),
            ],
        )
        dask = sa_user(release_ns, f"{name}-daskflow-dask-kubernetes")
        check_permissions(
            cluster,
            dask,
            [
                (True, "create", "deployments.apps", other),
                (True, "watch", "pods", None),
                (False, "get", "secrets", other),
                (False, "list", "namespaces", None),
            ],
        )
        assert not kube_has(cluster, "serviceaccount", "daskflow-runner", other)
    finally:
        helm.run("uninstall", name, "-n", release_ns, kubeconfig=cluster.kubeconfig, check=False)


def kube_has(kube: KubeCluster, kind: str, name: str, namespace: str) -> bool:
    return kube.kubectl("get", kind, name, "-n", namespace).returncode == 0


# --------------------------------------------------------------------------- README


def _readme_runner_manifest() -> list[dict[str, Any]]:
    text = (CHART / "README.md").read_text()
    match = re.search(
        r"<!-- runner-manifest:start -->\n```yaml\n(.*?)```\n"
        r"<!-- runner-manifest:end -->",
        text,
        re.S,
    )
    assert match, "the runner manifest is missing from charts/daskflow/README.md"
    return [d for d in yaml.safe_load_all(match.group(1)) if d]


def test_readme_runner_manifest_matches_the_rules() -> None:
    docs = _readme_runner_manifest()
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    assert docs[1]["rules"] == rules("runner-rules")


def test_readme_runner_manifest_works(cluster: KubeCluster) -> None:
    ns = make_namespace(cluster, "chart-readme")
    text = yaml.safe_dump_all(_readme_runner_manifest()).replace("team-b", ns)
    kubectl_ok(cluster, "apply", "-f", "-", input=text)
    who = sa_user(ns, "daskflow-runner")
    check_permissions(
        cluster,
        who,
        [
            (True, "get", "flowruns.daskflow.io", ns),
            (True, "patch", "flowruns.daskflow.io/status", ns),
            (True, "create", "events.events.k8s.io", ns),
            (False, "create", "jobs.batch", ns),
            (False, "get", "secrets", ns),
        ],
    )
