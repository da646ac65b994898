"""Running daskflow against the test control plane as it runs in production: the CRDs
installed, and the operator or runner as a real process authenticated as a ServiceAccount
that is bound to exactly the rules in ``charts/daskflow/files/rbac/``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane import KubeCluster
from harness.processes import Supervised, free_port
from harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "crds"
RBAC = ROOT / "charts" / "daskflow" / "files" / "rbac"
DASKFLOW = str(Path(sys.executable).with_name("daskflow"))


def rules(name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load((RBAC / f"{name}.yaml").read_text())
    return loaded


def install_crds(kube: KubeCluster) -> None:
    kube.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-R",  # what the README says: crds/ has dask-kubernetes/ below it
        "-f",
        str(CRDS),
        check=True,
    )
    wait_established(kube, "flowruns.daskflow.io", "daskclusters.kubernetes.dask.org")


def wait_established(kube: KubeCluster, *crds: str) -> None:
    """Wait until the CRDs serve. ``kubectl wait`` alone fails on a CRD that has no status
    yet (".status.conditions accessor error"), so it is retried."""
    argv = ["wait", "--for=condition=Established", "--timeout=10s"]
    wait_for(
        lambda: kube.kubectl(*argv, *(f"crd/{c}" for c in crds)).returncode == 0,
        60,
        f"CRDs {crds} to be established",
    )


def apply(kube: KubeCluster, doc: dict[str, Any] | str, namespace: str | None = None) -> str:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    result = kube.kubectl(*args, input=text)
    if result.returncode != 0:
        raise AssertionError(f"kubectl apply failed: {result.stderr}")
    return result.stdout


def bind_rules(
    kube: KubeCluster, namespace: str, account: str, rule_file: str, *, cluster: bool = False
) -> None:
    """A Role (or ClusterRole) with the rules of ``rule_file``, bound to the account."""
    role_kind = "ClusterRole" if cluster else "Role"
    role_name = f"{account}-{rule_file}" + (f"-{namespace}" if cluster else "")
    role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": role_kind,
        "metadata": {"name": role_name, **({} if cluster else {"namespace": namespace})},
        "rules": rules(rule_file),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding" if cluster else "RoleBinding",
        "metadata": {"name": role_name, **({} if cluster else {"namespace": namespace})},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    apply(kube, role)
    apply(kube, binding)


def get_flowrun(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any] | None:
    result = kube.kubectl("get", "flowrun", name, "-n", namespace, "-o", "json")
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def wait_for_phase(
    kube: KubeCluster,
    namespace: str,
    name: str,
    phases: tuple[str, ...] = ("Succeeded", "Failed", "Cancelled"),
    timeout: float = 90.0,
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = get_flowrun(kube, namespace, name)
        phase = ((obj or {}).get("status") or {}).get("phase")
        return obj if phase in phases else None

    found: dict[str, Any] = wait_for(reached, timeout, f"FlowRun {name} to reach {phases}")
    return found


def request_cancel(kube: KubeCluster, namespace: str, name: str) -> None:
    """What a user does to cancel a run: set ``spec.cancel``."""
    kube.kubectl(
        "patch",
        "fr",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"cancel":true}}',
        check=True,
    )


def wait_for_task_state(
    kube: KubeCluster, namespace: str, name: str, task: str, state: str, timeout: float = 60.0
) -> None:
    def reached() -> bool:
        status = (get_flowrun(kube, namespace, name) or {}).get("status") or {}
        return bool((status.get("tasks") or {}).get(task, {}).get("state") == state)

    wait_for(reached, timeout, f"task {task} of {name} to be {state}")


class OperatorProcess:
    """``daskflow operator`` as a subprocess, authenticated as its ServiceAccount."""

    def __init__(self, kubeconfig: Path, args: list[str], log_path: Path) -> None:
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.kubeconfig = kubeconfig
        self.args = args
        self.log_path = log_path
        self.proc: Supervised | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, *, wait: bool = True) -> None:
        """Start it; with ``wait``, until ``/readyz`` says ready."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        argv = [
            DASKFLOW,
            "operator",
            *self.args,
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--bind-address",
            "127.0.0.1",
        ]
        self.proc = Supervised(argv, self.log_path, name="daskflow operator", env=env)
        if wait:
            wait_for(self.ready, 60, "the operator to be ready")

    def readyz(self) -> tuple[int, str] | None:
        """``/readyz``'s HTTP status and body; None while nothing listens."""
        if self.proc is not None and not self.proc.running():
            raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/readyz", timeout=2
            ) as rsp:
                return int(rsp.status), rsp.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    def ready(self) -> bool:
        answer = self.readyz()
        return answer is not None and answer[0] == 200

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as rsp:
            text: str = rsp.read().decode()
            return text

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole process tree: no cleanup of any kind runs."""
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        """SIGTERM, then whatever the operator started (LocalCluster workers) dies with it."""
        if self.proc is not None:
            self.proc.stop(grace=40)


def prepare_operator_account(
    kube: KubeCluster, namespace: str, account: str = "daskflow-operator"
) -> Path:
    """The operator's ServiceAccount with exactly its rules, and the peering object."""
    kubeconfig = kube.service_account_kubeconfig(namespace, account)
    bind_rules(kube, namespace, account, "operator-rules")
    apply(
        kube,
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "daskflow", "namespace": namespace},
        },
    )
    return kubeconfig


@contextmanager
def operator_running(
    kube: KubeCluster,
    namespace: str,
    *,
    runner: str = "in-process",
    backend: str = "local",
    extra: tuple[str, ...] = (),
    kubeconfig: Path | None = None,
    status_interval: float = 0.5,
    show_log: bool = True,
) -> Iterator[OperatorProcess]:
    """An operator watching ``namespace``, as its own least-privileged ServiceAccount; with
    ``show_log``, the end of its log is printed when it has stopped (pytest shows it when a
    test fails)."""
    kubeconfig = kubeconfig or prepare_operator_account(kube, namespace)
    op = OperatorProcess(
        kubeconfig,
        [
            "--runner",
            runner,
            "--namespace",
            namespace,
            "--default-backend",
            backend,
            "--status-interval",
            f"{status_interval:g}",
            *extra,
        ],
        kube.work_dir / f"operator-{namespace}.log",
    )
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if show_log:
            print(f"--- operator log ({namespace}) ---\n{op.log_tail(80)}")
