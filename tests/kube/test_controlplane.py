"""The test control plane itself: the API answers, RBAC is enforced, tokens work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from harness.controlplane import (
    ENV_KUBECONFIG,
    KUBE_VERSION,
    ControlPlane,
    KubeCluster,
    remove_stale_work_dirs,
)
from harness.waiting import wait_for

pytestmark = pytest.mark.kube

T = TypeVar("T")

needs_own_control_plane = pytest.mark.skipif(
    bool(os.environ.get(ENV_KUBECONFIG)),
    reason=f"{ENV_KUBECONFIG} is set: the suite uses an existing cluster",
)


def eventually(check: Callable[[], T], what: str, timeout: float = 15.0) -> T:
    """Retry ``check`` until it stops raising (RBAC changes reach the authorizer
    through an informer, so they apply a moment after the write)."""
    return wait_for(
        check, timeout, what, ignore=(ApiException, AssertionError), until=lambda _: True
    )


def test_api_answers(kube: KubeCluster) -> None:
    with kube.api_client() as api:
        version = k8s.VersionApi(api).get_code()
        names = {
            ns.metadata.name for ns in k8s.CoreV1Api(api).list_namespace().items if ns.metadata
        }
    assert version.major == "1"
    assert {"default", "kube-system"} <= names
    if isinstance(kube, ControlPlane):
        assert version.git_version == KUBE_VERSION


def test_namespace_fixture(kube: KubeCluster, namespace: str) -> None:
    with kube.api_client() as api:
        core = k8s.CoreV1Api(api)
        status = core.read_namespace(namespace).status
        assert status is not None
        assert status.phase == "Active"
        core.create_namespaced_config_map(
            namespace,
            k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="probe"), data={"a": "1"}),
        )
        assert core.read_namespaced_config_map("probe", namespace).data == {"a": "1"}


@needs_own_control_plane
def test_admin_is_system_masters(kube: KubeCluster) -> None:
    result = kube.kubectl("auth", "whoami", "-o", "json", check=True)
    user = json.loads(result.stdout)["status"]["userInfo"]
    assert user["username"] == "daskflow-admin"
    assert "system:masters" in user["groups"]


def test_rbac_is_enforced(kube: KubeCluster, namespace: str) -> None:
    sa_kubeconfig = kube.service_account_kubeconfig(namespace, "reader")

    with kube.api_client(sa_kubeconfig) as api:
        core = k8s.CoreV1Api(api)
        with pytest.raises(ApiException) as forbidden:
            core.list_namespaced_pod(namespace)
        assert forbidden.value.status == 403

        with kube.api_client() as admin_api:
            rbac = k8s.RbacAuthorizationV1Api(admin_api)
            rbac.create_namespaced_role(
                namespace,
                k8s.V1Role(
                    metadata=k8s.V1ObjectMeta(name="pod-reader"),
                    rules=[
                        k8s.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])
                    ],
                ),
            )
            rbac.create_namespaced_role_binding(
                namespace,
                k8s.V1RoleBinding(
                    metadata=k8s.V1ObjectMeta(name="reader-reads-pods"),
                    role_ref=k8s.V1RoleRef(
                        api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                    ),
                    subjects=[
                        k8s.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
                    ],
                ),
            )

        pods = eventually(lambda: core.list_namespaced_pod(namespace), "the pods to be listed")
        assert pods.items == []
        # The binding is for pods in this namespace only.
        with pytest.raises(ApiException) as still_forbidden:
            core.list_namespaced_config_map(namespace)
        assert still_forbidden.value.status == 403
        with pytest.raises(ApiException) as other_namespace:
            core.list_namespaced_pod("default")
        assert other_namespace.value.status == 403


def test_token_kubeconfig_works_with_kubectl(kube: KubeCluster, namespace: str) -> None:
    sa_kubeconfig = kube.service_account_kubeconfig(namespace, "robot")

    whoami = kube.kubectl("auth", "whoami", "-o", "json", kubeconfig=sa_kubeconfig, check=True)
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:robot"
    assert "system:serviceaccounts" in user["groups"]

    denied = kube.kubectl("get", "pods", "-n", namespace, kubeconfig=sa_kubeconfig)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()

    # Not the `view` ClusterRole: admin, edit and view are aggregated by a
    # kube-controller-manager controller, which the test control plane lacks.
    kube.kubectl(
        "create", "role", "pod-reader", "-n", namespace, "--verb=get,list", "--resource=pods",
        check=True,
    )  # fmt: skip
    kube.kubectl(
        "create", "rolebinding", "robot-reads-pods", "-n", namespace,
        "--role=pod-reader", f"--serviceaccount={namespace}:robot",
        check=True,
    )  # fmt: skip

    def allowed() -> None:
        result = kube.kubectl("get", "pods", "-n", namespace, kubeconfig=sa_kubeconfig)
        assert result.returncode == 0, result.stderr

    eventually(allowed, "the ServiceAccount to be allowed")
    can_i = kube.kubectl(
        "auth", "can-i", "create", "pods", "-n", namespace, kubeconfig=sa_kubeconfig
    )
    assert can_i.stdout.strip() == "no"


def test_kubectl_version_matches_server(kube: KubeCluster) -> None:
    result = kube.kubectl("version", "-o", "json", check=True)
    versions = json.loads(result.stdout)
    client, server = versions["clientVersion"], versions["serverVersion"]
    if isinstance(kube, ControlPlane):
        assert client["gitVersion"] == server["gitVersion"] == KUBE_VERSION
    else:
        assert (client["major"], client["minor"]) == (server["major"], server["minor"])


# ------------------------------------------------ starting and stopping cleanly


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for an init that does not reap is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_dead(pids: list[int], timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from harness.controlplane import ControlPlane

    cp = ControlPlane()
    cp.start()
    pids = list(cp.pids().values())
    print(json.dumps({"pids": pids, "dir": str(cp.work_dir)}), flush=True)
    if sys.argv[1] == "stop":
        cp.stop()
        print("stopped", flush=True)
    else:
        time.sleep(600)
    """
)


def _start_child(mode: str) -> tuple[subprocess.Popen[str], list[int], Path]:
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(10)
        pytest.fail(f"the control plane did not start in a child (exit {child.returncode})")
    info = json.loads(line)
    return child, info["pids"], Path(info["dir"])


@needs_own_control_plane
def test_stop_leaves_nothing_behind() -> None:
    child, pids, work_dir = _start_child("stop")
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "stopped"
    assert child.wait(30) == 0
    assert _wait_dead(pids, timeout=1) == []
    assert not work_dir.exists()


@needs_own_control_plane
def test_children_die_with_a_killed_session() -> None:
    child, pids, work_dir = _start_child("sleep")
    try:
        assert all(_alive(p) for p in pids)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert _wait_dead(pids) == []
        # What a killed session leaves is removed by the next one.
        assert work_dir in remove_stale_work_dirs(str(work_dir.parent))
        assert not work_dir.exists()
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work_dir, ignore_errors=True)
