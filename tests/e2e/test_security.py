"""Security on real pods: Pod Security ``restricted`` admits every daskflow and Dask pod, and
the runner's account can do what files/rbac/runner-rules.yaml grants and nothing more.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from tests.chart.test_chart import can_i, sa_user
from tests.e2e.scenario import Scenario

from harness.realcluster import NAMESPACES, PSS_LABELS, Install

RUNNER_RULES = "charts/daskflow/files/rbac/runner-rules.yaml"


def test_namespaces_enforce_restricted_and_admit_every_pod(
    flows: Scenario, installed: Install
) -> None:
    for ns in NAMESPACES:
        namespace = installed.kubectl.get("namespace", None, ns)
        labels = (namespace or {})["metadata"]["labels"]
        assert {k: labels.get(k) for k in PSS_LABELS} == PSS_LABELS, labels
    # The enforcement is live: a pod that is not "restricted" is refused.
    loose = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "loose", "namespace": installed.namespace},
        "spec": {"containers": [{"name": "c", "image": installed.image}]},
    }
    refused = installed.kube.kubectl(
        "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(loose)
    )
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    # A run's pods, and the operator's and controller's, were all admitted.
    run = flows.given.flowrun(
        {
            "apiVersion": "daskflow.io/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "restricted"},
            "spec": {
                "cluster": {"backend": "kubernetes"},
                "tasks": [{"name": "hold", "command": ["sleep", "5"]}],
            },
        }
    )
    run.when.applied().pods_running("runner").pods_running("scheduler").pods_running("worker", 2)
    run.finished().then.phase_is("Succeeded")
    system = installed.kubectl.list("pods", installed.system_namespace)
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in system}
    assert {"operator", "dask-kubernetes"} <= components, components
    # Pod Security refusals show as FailedCreate events of the Jobs and ReplicaSets.
    for ns in NAMESPACES:
        refusals = [
            e.get("note") or e.get("message")
            for e in installed.kubectl.list("events.events.k8s.io", ns)
            if e.get("reason") == "FailedCreate"
        ]
        assert not refusals, refusals
    run.nothing_left()


def runner_can(install: Install, verb: str, resource: str, namespace: str) -> bool:
    """``kubectl auth can-i`` as the runner's token presents itself."""
    return can_i(
        install.kube, sa_user(install.namespace, "daskflow-runner"), verb, resource, namespace
    )


def runner_rules() -> list[dict[str, Any]]:
    from harness.helm import ROOT

    rules: list[dict[str, Any]] = yaml.safe_load((ROOT / RUNNER_RULES).read_text())
    return rules


def kubectl_resource(resource: str, group: str) -> str:
    """kubectl's spelling: ``flowruns.daskflow.io``, ``flowruns.daskflow.io/status``."""
    plural, _, sub = resource.partition("/")
    name = f"{plural}.{group}" if group else plural
    return f"{name}/{sub}" if sub else name


ALLOWED = [
    (verb, kubectl_resource(res, rule["apiGroups"][0]))
    for rule in runner_rules()
    for res in rule["resources"]
    for verb in rule["verbs"]
]
DENIED = [
    ("list", "flowruns.daskflow.io"),
    ("watch", "flowruns.daskflow.io"),
    ("patch", "flowruns.daskflow.io"),
    ("delete", "flowruns.daskflow.io"),
    ("create", "flowruns.daskflow.io"),
    ("get", "secrets"),
    ("list", "pods"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("get", "configmaps"),
    ("create", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("create", "daskclusters.kubernetes.dask.org"),
    ("get", "daskclusters.kubernetes.dask.org"),
    ("create", "events"),
    ("create", "serviceaccounts/token"),
]


@pytest.mark.parametrize(("verb", "resource"), ALLOWED)
def test_runner_account_can_do_what_its_rules_allow(
    installed: Install, verb: str, resource: str
) -> None:
    assert runner_can(installed, verb, resource, installed.namespace)


@pytest.mark.parametrize(("verb", "resource"), DENIED)
def test_runner_account_can_do_nothing_more(installed: Install, verb: str, resource: str) -> None:
    assert not runner_can(installed, verb, resource, installed.namespace)
    # and nothing at all outside its own namespace
    assert not runner_can(installed, verb, resource, installed.system_namespace)


def test_only_the_runner_pod_carries_a_token(flows: Scenario) -> None:
    """Dask pods run user code next to the scheduler: they get no API credentials."""
    run = flows.given.flowrun(
        {
            "apiVersion": "daskflow.io/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "tokens"},
            "spec": {
                "cluster": {"backend": "kubernetes", "workers": 1},
                "tasks": [
                    {
                        "name": "look",
                        "command": ["sh", "-c", "ls /var/run/secrets/kubernetes.io 2>&1; true"],
                    },
                    {"name": "hold", "command": ["sleep", "3"], "dependsOn": ["look"]},
                ],
            },
        }
    )
    run.when.applied().pods_running("runner").pods_running("scheduler").pods_running("worker")
    mounted = {
        pod["metadata"]["name"]: any(
            "serviceaccount" in (m.get("mountPath") or "")
            for c in pod["spec"]["containers"]
            for m in c.get("volumeMounts") or []
        )
        for pod in run.pods()
    }
    run.finished().then.phase_is("Succeeded")
    assert "No such file or directory" in run.result_of("look"), run.result_of("look")
    runner = {n for n in mounted if n in run.pod_names["runner"]}
    assert runner and all(mounted[n] for n in runner), json.dumps(mounted)
    assert not any(v for n, v in mounted.items() if n not in runner), json.dumps(mounted)
    run.nothing_left()
