"""examples/gitops: Argo CD Applications and the FlowRuns they deploy.

Checks that the examples follow the rules docs/gitops.md gives (unique names and no TTL
for committed runs, hooks with a delete policy and a deadline, sync options that never
re-create a run), and, against the test control plane, the API behaviour those rules
rest on: `kubectl apply` refuses generateName, spec.cancel can change after creation,
spec.parameters and spec.tasks cannot.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from daskflow.model.validate import parse_flowrun
from harness.controlplane import KubeCluster
from harness.kube import install_crds
from tests.argocd.lua import REPO

GITOPS = REPO / "examples" / "gitops"
APPLICATIONS = sorted((GITOPS / "applications").glob("*.yaml"))
HOOK = "argocd.argoproj.io/hook"
DELETE_POLICY = "argocd.argoproj.io/hook-delete-policy"

# Argo CD's sync options (user-guide/sync-options.md), name -> accepted values.
SYNC_OPTIONS: dict[str, set[str]] = {
    "Validate": {"false", "true"},
    "SkipDryRunOnMissingResource": {"true"},
    "Prune": {"false", "confirm"},
    "Delete": {"false", "confirm"},
    "ApplyOutOfSyncOnly": {"true", "false"},
    "PrunePropagationPolicy": {"foreground", "background", "orphan"},
    "PruneLast": {"true"},
    "Replace": {"true", "false"},
    "Force": {"true"},
    "ServerSideApply": {"true", "false"},
    "FailOnSharedResource": {"true"},
    "RespectIgnoreDifferences": {"true"},
    "CreateNamespace": {"true"},
}


def load(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path}: one document per file"
    doc: dict[str, Any] = docs[0]
    return doc


def applications() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, load(p)) for p in APPLICATIONS]


def source_files(app: dict[str, Any]) -> list[Path]:
    folder = REPO / app["spec"]["source"]["path"]
    return sorted(folder.glob("*.yaml"))


def is_hook(doc: dict[str, Any]) -> bool:
    return HOOK in (doc.get("metadata", {}).get("annotations") or {})


def test_there_is_an_application_for_the_chart_and_for_runs() -> None:
    paths = {app["spec"]["source"]["path"] for _, app in applications()}
    assert "charts/daskflow" in paths
    assert "examples/gitops/flowruns" in paths
    assert "examples/gitops/on-sync" in paths


@pytest.mark.parametrize("path", APPLICATIONS, ids=lambda p: p.name)
def test_applications_are_well_formed(path: Path) -> None:
    app = load(path)
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    assert app["kind"] == "Application"
    assert app["metadata"]["namespace"] == "argocd"
    spec = app["spec"]
    assert spec["project"] == "default"
    assert (REPO / spec["source"]["path"]).is_dir()
    assert spec["source"]["repoURL"].endswith(".git")
    assert spec["destination"]["server"] == "https://kubernetes.default.svc"
    assert spec["destination"]["namespace"]
    policy = spec["syncPolicy"]
    assert set(policy["automated"]) <= {"prune", "selfHeal", "allowEmpty"}
    for option in policy.get("syncOptions", []):
        name, _, value = option.partition("=")
        assert value in SYNC_OPTIONS.get(name, set()), f"{path.name}: unknown {option}"
    # Never a cascading delete of the chart (it carries the CRDs) or of runs by accident.
    assert "resources-finalizer.argocd.argoproj.io" not in app["metadata"].get("finalizers", [])


def test_the_chart_application_pins_a_release() -> None:
    (app,) = [a for _, a in applications() if a["spec"]["source"]["path"] == "charts/daskflow"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", app["spec"]["source"]["targetRevision"])


@pytest.mark.parametrize(
    ("path", "app"),
    [(p, a) for p, a in applications() if a["spec"]["source"]["path"].startswith("examples/")],
    ids=lambda v: v.name if isinstance(v, Path) else "",
)
def test_applications_of_runs_never_run_a_flow_twice(path: Path, app: dict[str, Any]) -> None:
    options = app["spec"]["syncPolicy"].get("syncOptions", [])
    assert "Replace=false" in options
    assert "Force=true" not in options
    docs = [load(f) for f in source_files(app)]
    runs = [d for d in docs if d["kind"] == "FlowRun"]
    assert runs, f"{path.name}: no FlowRun in its folder"
    tracked_runs = [d for d in runs if not is_hook(d)]
    if tracked_runs:
        # selfHeal would re-create (so re-run) a tracked FlowRun deleted by hand.
        assert app["spec"]["syncPolicy"]["automated"].get("selfHeal") is False
    if any(is_hook(d) for d in docs):
        # Automated sync starts only on an OutOfSync tracked resource; hooks are not tracked.
        assert any(not is_hook(d) for d in docs), f"{path.name}: nothing but hooks never syncs"
        # In a sync with hooks, Argo CD waits for every tracked resource to be healthy:
        # a failed committed run would fail every sync. Keep the two kinds apart.
        assert not tracked_runs, f"{path.name}: hooks next to committed runs"


EXAMPLE_RUNS = sorted(GITOPS.glob("*/*.yaml"))
EXAMPLE_RUNS = [p for p in EXAMPLE_RUNS if load(p)["kind"] == "FlowRun"]


@pytest.mark.parametrize("path", EXAMPLE_RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_flowruns_follow_the_gitops_rules(path: Path) -> None:
    doc = load(path)
    parse_flowrun(doc, str(path))  # a valid FlowRun for daskflow itself
    meta, spec = doc["metadata"], doc["spec"]
    assert "generateName" not in meta
    assert "namespace" not in meta  # the Application's destination decides
    if is_hook(doc):
        assert meta["annotations"][HOOK] in {"PreSync", "Sync", "PostSync", "SyncFail"}
        policies = set(meta["annotations"][DELETE_POLICY].split(","))
        assert policies <= {"BeforeHookCreation", "HookSucceeded", "HookFailed"}
        assert "deadlineSeconds" in spec  # a hook holds its sync open while it runs
    else:
        assert re.search(r"-\d{4}-\d{2}-\d{2}$", meta["name"]), "one-off runs carry a date"
        # A TTL would delete it, and Argo CD would create it again: a second run.
        assert "ttlSecondsAfterFinished" not in spec


# -- the API behaviour the rules rest on (test control plane) ----------------------------
@pytest.fixture(scope="module")
def crds(kube: KubeCluster) -> KubeCluster:
    install_crds(kube)
    return kube


def apply(kube: KubeCluster, namespace: str, doc: dict[str, Any]) -> Any:
    return kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def test_committed_runs_cancel_through_git_but_never_change_otherwise(
    crds: KubeCluster, namespace: str
) -> None:
    run = load(GITOPS / "flowruns" / "etl-2026-07-01.yaml")
    assert run["spec"]["cancel"] is False
    created = apply(crds, namespace, run)
    assert created.returncode == 0, created.stderr

    cancel = copy.deepcopy(run)
    cancel["spec"]["cancel"] = True
    changed = apply(crds, namespace, cancel)
    assert changed.returncode == 0, changed.stderr

    edited = copy.deepcopy(cancel)
    edited["spec"]["parameters"]["rows"] = 10
    refused = apply(crds, namespace, edited)
    assert refused.returncode != 0
    assert "spec.parameters is immutable once created" in refused.stderr

    edited = copy.deepcopy(cancel)
    edited["spec"]["tasks"] = edited["spec"]["tasks"][:2]
    refused = apply(crds, namespace, edited)
    assert refused.returncode != 0
    assert "spec.tasks is immutable once created" in refused.stderr


def test_kubectl_apply_cannot_use_generate_name(crds: KubeCluster, namespace: str) -> None:
    run = load(GITOPS / "flowruns" / "etl-2026-07-01.yaml")
    del run["metadata"]["name"]
    run["metadata"]["generateName"] = "etl-"
    proc = apply(crds, namespace, run)
    assert proc.returncode != 0
    assert "cannot use generate name with apply" in proc.stderr
    created = crds.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(run))
    # kubectl create can; Argo CD names a generateName hook itself before applying it.
    assert created.returncode == 0, created.stderr


def test_the_hook_flowrun_is_accepted_as_it_is(crds: KubeCluster, namespace: str) -> None:
    proc = apply(crds, namespace, load(GITOPS / "on-sync" / "etl-after-sync.yaml"))
    assert proc.returncode == 0, proc.stderr


# -- the chart Application's values, rendered as Argo CD renders them (helm) ------------
def _helm() -> Path:
    cache = Path(os.environ.get("DASKFLOW_CACHE") or Path.home() / ".cache" / "daskflow")
    path = cache / "bin" / "helm"
    if not path.exists():
        subprocess.run(["bash", str(REPO / "hack" / "build-helm.sh")], check=True, timeout=1800)
    return path


@pytest.mark.helm
def test_the_chart_application_values_render(tmp_path: Path) -> None:
    (app,) = [a for _, a in applications() if a["spec"]["source"]["path"] == "charts/daskflow"]
    source = app["spec"]["source"]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(source["helm"]["valuesObject"]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    for name in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{name}_HOME"] = str(tmp_path / name.lower())
    proc = subprocess.run(
        [
            str(_helm()), "template", source["helm"]["releaseName"], str(REPO / source["path"]),
            "-n", app["spec"]["destination"]["namespace"], "-f", str(values), "--include-crds",
        ],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # values.schema.json accepts the values
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    runner_accounts = [
        d["metadata"].get("namespace")
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "daskflow-runner"
    ]
    assert "flows" in runner_accounts
    assert any(d["kind"] == "CustomResourceDefinition" for d in docs)  # Argo CD manages them
    # Client-side apply (Argo CD's default) keeps each object in an annotation, and
    # annotations hold 262144 bytes in total: every object here fits, CRDs included.
    largest = max(len(json.dumps(d, separators=(",", ":"))) for d in docs)
    assert largest < 262144
