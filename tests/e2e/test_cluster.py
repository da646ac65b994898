"""The single-node cluster itself (hack/cluster.sh), before anything of daskflow runs on it.

Given the session's cluster and the project's image loaded into its node: the node is
Ready, a pod from that image runs, resolves the API server's Service name through the
cluster DNS, reaches the API server through it, and answers ``kubectl logs`` and
``kubectl exec``; nothing from a pod can leave the machine; and a second ``up`` changes
nothing. That ``down`` leaves nothing behind is checked by the session fixture.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from tests.e2e.host import CLUSTER_DIR

from harness.hack import cluster_sh
from harness.realcluster import RealCluster
from harness.waiting import wait_for

pytestmark = pytest.mark.e2e

# Runs in the pod: resolves the API server's Service name, calls the API server through it
# with the pod's token, prints both, then waits to be exec'd into.
PROBE = """
import json, socket, ssl, sys, time, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ip = socket.gethostbyname("kubernetes.default.svc.cluster.local")
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
req = urllib.request.Request(
    "https://kubernetes.default.svc/version",
    headers={"Authorization": "Bearer " + open(f"{sa}/token").read()},
)
version = json.load(urllib.request.urlopen(req, context=ctx, timeout=20))["gitVersion"]
print(json.dumps({"ip": ip, "version": version}), flush=True)
time.sleep(3600)
"""

# Runs by `kubectl exec`: one attempt to leave the machine by address, one by name.
ESCAPE = """
import errno, json, socket
out = {}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=5)
    out["connect"] = "connected"
except OSError as exc:
    out["connect"] = errno.errorcode.get(exc.errno or 0, str(exc))
try:
    out["resolve"] = socket.gethostbyname("example.com")
except OSError as exc:
    out["resolve"] = type(exc).__name__
print(json.dumps(out))
"""


def kubectl_json(cluster: RealCluster, *args: str) -> Any:
    proc = cluster.kubectl(*args, "-o", "json", check=True)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def probe(cluster: RealCluster, e2e_image: str) -> Iterator[tuple[str, str]]:
    """A Running pod from the project's image running PROBE: (namespace, name)."""
    namespace, name = f"cluster-smoke-{secrets.token_hex(3)}", "probe"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "probe",
                    "image": e2e_image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", PROBE],
                }
            ],
        },
    }
    cluster.kubectl("create", "namespace", namespace, check=True)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod), check=True)
    try:

        def running() -> bool:
            status = kubectl_json(cluster, "get", "pod", name, "-n", namespace)["status"]
            if status.get("phase") in ("Failed", "Succeeded"):
                raise AssertionError(f"probe pod ended: {json.dumps(status)[:2000]}")
            return bool(status.get("phase") == "Running")

        wait_for(running, 180, "the probe pod to run", interval=1)
        yield namespace, name
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def test_the_node_is_ready_on_the_bridge_address(cluster: RealCluster) -> None:
    node = kubectl_json(cluster, "get", "nodes")["items"]
    assert len(node) == 1
    conditions = {c["type"]: c["status"] for c in node[0]["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    addresses = {a["type"]: a["address"] for a in node[0]["status"]["addresses"]}
    assert addresses["InternalIP"] == "10.244.0.1"


def test_a_pod_from_a_loaded_image_resolves_and_reaches_the_api_server(
    cluster: RealCluster, probe: tuple[str, str]
) -> None:
    namespace, name = probe
    service_ip = kubectl_json(cluster, "get", "service", "kubernetes", "-n", "default")["spec"][
        "clusterIP"
    ]
    server_version = kubectl_json(cluster, "version")["serverVersion"]["gitVersion"]

    def printed() -> dict[str, str] | None:
        logs = cluster.kubectl("logs", name, "-n", namespace).stdout.strip()
        return json.loads(logs.splitlines()[-1]) if logs else None

    seen = wait_for(printed, 60, "the probe's line in `kubectl logs`", interval=1)
    assert seen == {"ip": service_ip, "version": server_version}


def test_kubectl_exec_runs_in_the_pod(cluster: RealCluster, probe: tuple[str, str]) -> None:
    namespace, name = probe
    proc = cluster.kubectl(
        "exec",
        name,
        "-n",
        namespace,
        "--",
        "python",
        "-c",
        "import socket; print(socket.gethostname())",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == name


def test_nothing_from_a_pod_leaves_the_machine(
    cluster: RealCluster, probe: tuple[str, str]
) -> None:
    namespace, name = probe
    proc = cluster.kubectl("exec", name, "-n", namespace, "--", "python", "-c", ESCAPE)
    assert proc.returncode == 0, proc.stderr
    # No route out (the policy-routing rule), and no upstream DNS (CoreDNS without `forward`).
    assert json.loads(proc.stdout) == {"connect": "EHOSTUNREACH", "resolve": "gaierror"}


def test_up_again_changes_nothing(cluster: RealCluster) -> None:
    pids = {p.name: p.read_text() for p in (CLUSTER_DIR / "pids").iterdir()}
    assert set(pids) == {
        "containerd", "etcd", "kube-apiserver", "kube-controller-manager",
        "kube-scheduler", "kubelet", "kube-proxy",
    }  # fmt: skip
    out = cluster_sh("up").strip().splitlines()
    assert out[-1] == str(cluster.kubeconfig)
    assert {p.name: p.read_text() for p in (CLUSTER_DIR / "pids").iterdir()} == pids
