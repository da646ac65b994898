"""`daskflow operator` started the way the README shows, on a cluster that lacks something:
the peering CRD or object, or dask-kubernetes. The operator must say what is missing and
how to fix it, hold /readyz at 503 meanwhile, and never leave a FlowRun without a phase.

CRDs are cluster-wide, so these tests get a control plane of their own that has only the
FlowRun CRD; each test adds or removes the peering CRD it needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.controlplane import ENV_KUBECONFIG, ControlPlane, ControlPlaneError, KubeCluster
from harness.kube import (
    CRDS,
    OperatorProcess,
    apply,
    bind_rules,
    get_flowrun,
    rules,
    wait_established,
    wait_for_phase,
)
from harness.waiting import wait_for
from tests.kube.test_operator_inprocess import events, flowrun

pytestmark = pytest.mark.kube

PEERING_CRDS = CRDS / "kopf.dev_peerings.yaml"
RBAC_API = "rbac.authorization.k8s.io/v1"


@pytest.fixture(scope="module")
def bare() -> Iterator[KubeCluster]:
    """A control plane of its own, with only the FlowRun CRD applied."""
    if os.environ.get(ENV_KUBECONFIG):
        pytest.skip("needs a control plane of its own: CRDs are cluster-wide")
    cluster = ControlPlane()
    try:
        cluster.start()
    except ControlPlaneError as exc:
        pytest.fail(f"cannot start the test control plane: {exc}", pytrace=False)
    try:
        cluster.kubectl("apply", "-f", str(CRDS / "daskflow.io_flowruns.yaml"), check=True)
        wait_established(cluster, "flowruns.daskflow.io")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ns(bare: KubeCluster, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50].strip("-")
    bare.kubectl("create", "namespace", name, check=True)
    return name


@pytest.fixture
def no_peering_crd(bare: KubeCluster) -> None:
    bare.kubectl("delete", "--ignore-not-found", "--wait", "-f", str(PEERING_CRDS), check=True)


@pytest.fixture
def peering_crd(bare: KubeCluster) -> None:
    bare.kubectl("apply", "-f", str(PEERING_CRDS), check=True)
    wait_established(bare, "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev")


def operator_account(kube: KubeCluster, namespace: str) -> Path:
    """The operator's ServiceAccount, bound to exactly the chart's operator rules."""
    kubeconfig = kube.service_account_kubeconfig(namespace, "daskflow-operator")
    bind_rules(kube, namespace, "daskflow-operator", "operator-rules")
    return kubeconfig


@contextmanager
def operator(kube: KubeCluster, kubeconfig: Path, ns: str, *args: str) -> Iterator[OperatorProcess]:
    """The installed `daskflow operator ARGS`, not waited for: it may never be ready."""
    op = OperatorProcess(kubeconfig, list(args), kube.work_dir / f"operator-{ns}.log")
    op.start(wait=False)
    try:
        yield op
    finally:
        op.stop()
        print(f"--- operator log ---\n{op.log_tail(80)}")  # shown on failure


def log_line(op: OperatorProcess, *parts: str, timeout: float = 60) -> str:
    """Wait for a line of the operator's log that contains every one of ``parts``."""

    def find() -> str | None:
        lines = op.log_path.read_text(errors="replace").splitlines()
        return next((ln for ln in lines if all(p in ln for p in parts)), None)

    found: str = wait_for(find, timeout, f"a log line with {parts}")
    return found


def not_ready_because(op: OperatorProcess, missing: str, timeout: float = 60) -> str:
    """Wait for /readyz to answer 503 with ``missing`` named in its body."""

    def answer() -> str | None:
        got = op.readyz()
        return got[1] if got is not None and got[0] == 503 and missing in got[1] else None

    body: str = wait_for(answer, timeout, f"/readyz: 503 naming {missing}")
    return body


def test_without_the_peering_crd_it_says_so_and_is_not_ready(
    bare: KubeCluster, ns: str, no_peering_crd: None
) -> None:
    # As the README shows: `daskflow operator --namespace NS`, peering on by default.
    with operator(bare, operator_account(bare, ns), ns, "--namespace", ns) as op:
        line = log_line(op, "ERROR", "KopfPeering CRD (kopfpeerings.kopf.dev) is not installed")
        assert "kubectl apply -R -f crds/" in line
        assert "--standalone" in line
        not_ready_because(op, "CRD kopfpeerings.kopf.dev")


def test_a_kubernetes_run_without_dask_kubernetes_fails_at_once_with_an_event(
    bare: KubeCluster, ns: str
) -> None:
    with operator(bare, operator_account(bare, ns), ns, "--namespace", ns, "--standalone") as op:
        line = log_line(op, "ERROR", "DaskCluster, DaskWorkerGroup, DaskAutoscaler CRDs (")
        assert "daskclusters.kubernetes.dask.org" in line
        assert "kubectl apply -R -f crds/" in line
        assert "Helm chart" in line
        not_ready_because(op, "daskclusters.kubernetes.dask.org")

        apply(
            bare,
            flowrun(
                "needs-dask-k8s",
                [{"name": "hi", "command": ["echo", "hi"]}],
                cluster={"backend": "kubernetes"},
                deadlineSeconds=600,
            ),
            ns,
        )
        status = wait_for_phase(bare, ns, "needs-dask-k8s", timeout=90)["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "DaskKubernetesMissing")
        assert "DaskCluster CRD (daskclusters.kubernetes.dask.org)" in status["message"]
        assert "kubectl apply -R -f crds/" in status["message"]
        fr = get_flowrun(bare, ns, "needs-dask-k8s")
        assert fr is not None
        notes = [
            e.get("note", "")
            for e in events(bare, ns)
            if e["regarding"].get("uid") == fr["metadata"]["uid"] and e["type"] == "Warning"
        ]
        assert any("DaskCluster CRD" in note for note in notes), notes
        jobs = json.loads(bare.kubectl("get", "jobs", "-n", ns, "-o", "json", check=True).stdout)
        assert jobs["items"] == []
        assert "failed temporarily" not in op.log_path.read_text()


def test_a_missing_peering_object_is_named_and_the_operator_resumes_once_it_exists(
    bare: KubeCluster, ns: str, peering_crd: None
) -> None:
    # The chart's operator rules may not create KopfPeerings: the chart creates them.
    args = ("--namespace", ns, "--default-backend", "local")
    with operator(bare, operator_account(bare, ns), ns, *args) as op:
        line = log_line(op, "ERROR", f"KopfPeering {ns}/daskflow does not exist")
        assert "may not create it: 403" in line
        assert "--standalone" in line
        not_ready_because(op, f"KopfPeering {ns}/daskflow")
        apply(bare, flowrun("waits", [{"name": "hi", "command": ["echo", "hi"]}]), ns)

        # What the log line says to run, as the user would run it.
        command = re.search(r"echo '(\{.*?\})' \| kubectl apply -n (\S+) -f -", line)
        assert command is not None, line
        assert command.group(2) == ns
        apply(bare, command.group(1), ns)

        wait_for(op.ready, 60, "the operator to be ready")
        log_line(op, f"KopfPeering {ns}/daskflow: found now")
        # kopf resumes: the operator records the runner it started.
        wait_for(
            lambda: ((get_flowrun(bare, ns, "waits") or {}).get("status") or {}).get("runner"),
            90,
            "the operator to act on the FlowRun",
        )


def test_the_operator_creates_the_peering_object_when_it_may(
    bare: KubeCluster, ns: str, peering_crd: None
) -> None:
    # A newcomer's own (admin) kubeconfig may create it.
    with operator(bare, bare.kubeconfig, ns, "--namespace", ns, "--default-backend", "local") as op:
        log_line(op, "INFO", f"created KopfPeering {ns}/daskflow")
        wait_for(op.ready, 60, "the operator to be ready")
    got = bare.kubectl("get", "kopfpeering", "daskflow", "-n", ns, "-o", "json", check=True)
    assert json.loads(got.stdout)["metadata"]["name"] == "daskflow"


def test_an_api_error_names_the_verb_the_resource_and_the_object(
    bare: KubeCluster, ns: str
) -> None:
    from daskflow.kube.api import DASKCLUSTERS, FLOWRUNS, KubeApi, KubeApiError

    async def attempt() -> tuple[KubeApiError, KubeApiError]:
        async with await KubeApi.connect(str(operator_account(bare, ns))) as api:
            with pytest.raises(KubeApiError) as created:  # no such CRD
                await api.create(DASKCLUSTERS, ns, {"metadata": {"name": "c1"}})
            with pytest.raises(KubeApiError) as deleted:  # not allowed
                await api.delete(FLOWRUNS, "kube-system", "f1")
        return created.value, deleted.value

    created, deleted = asyncio.run(attempt())
    assert str(created).startswith(
        f"create daskclusters.kubernetes.dask.org {ns}/c1: 404 Not Found"
    ), created
    assert str(deleted).startswith("delete flowruns.daskflow.io kube-system/f1: 403 Forbidden: "), (
        deleted
    )
    assert (created.status, deleted.status) == (404, 403)


def test_a_run_the_operator_cannot_start_says_why_and_still_meets_its_deadline(
    bare: KubeCluster, ns: str
) -> None:
    # A broken install: the operator's Role lacks `create` on Jobs, so every attempt to
    # start the runner is refused.
    account = "daskflow-operator"
    kubeconfig = bare.service_account_kubeconfig(ns, account)
    crippled = [
        {**rule, "verbs": ["get", "delete"]} if rule["resources"] == ["jobs"] else rule
        for rule in rules("operator-rules")
    ]
    assert crippled != rules("operator-rules")
    meta = {"name": account, "namespace": ns}
    apply(bare, {"apiVersion": RBAC_API, "kind": "Role", "metadata": meta, "rules": crippled})
    apply(
        bare,
        {
            "apiVersion": RBAC_API,
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        },
    )
    args = ("--namespace", ns, "--standalone", "--default-backend", "local")
    with operator(bare, kubeconfig, ns, *args):
        apply(
            bare,
            flowrun("refused", [{"name": "hi", "command": ["echo", "hi"]}], deadlineSeconds=5),
            ns,
        )
        pending = wait_for_phase(bare, ns, "refused", ("Pending",), timeout=60)["status"]
        assert pending["reason"] == "ApiError"
        assert "create jobs.batch " + ns + "/refused-" in pending["message"]
        assert "403 Forbidden" in pending["message"]
        # deadlineSeconds 5, plus the operator's grace of 10 s, plus a retry.
        failed = wait_for_phase(bare, ns, "refused", ("Failed",), timeout=90)["status"]
    assert (failed["reason"], failed["message"]) == ("DeadlineExceeded", "deadline of 5s exceeded")


def test_a_cluster_wide_operator_creates_the_cluster_peering_when_it_may(
    bare: KubeCluster, ns: str, peering_crd: None
) -> None:
    bare.kubectl("delete", "clusterkopfpeering", "daskflow", "--ignore-not-found", check=True)
    args = ("--all-namespaces", "--default-backend", "local")
    with operator(bare, bare.kubeconfig, ns, *args) as op:
        log_line(op, "INFO", "created ClusterKopfPeering daskflow")
        wait_for(op.ready, 60, "the operator to be ready")
    got = bare.kubectl("get", "clusterkopfpeering", "daskflow", "-o", "json", check=True)
    assert json.loads(got.stdout)["kind"] == "ClusterKopfPeering"
