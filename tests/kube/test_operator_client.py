"""One Kubernetes client per process: the credentials daskflow loads are the ones kopf logs
in with, whether they come from ``--kubeconfig`` or from a pod's ServiceAccount; an
operator that stops leaves no thread, port or connection of its own behind; and a call
that cannot connect yet is tried again.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import psutil
import pytest
import yaml

from daskflow.kube.api import FLOWRUNS, KubeApi, KubeApiError, load_configuration
from daskflow.kube.builders import OperatorDefaults
from daskflow.kube.operator import OperatorConfig, run_operator
from harness.controlplane import KubeCluster
from harness.kube import apply, install_crds, prepare_operator_account, wait_for_phase
from harness.processes import free_port
from harness.waiting import wait_for
from tests.kube.test_operator_inprocess import flowrun


@pytest.fixture(scope="module")
def crds(kube: KubeCluster) -> KubeCluster:
    install_crds(kube)
    return kube


def answers(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 503 while not ready: still served
    except OSError:
        return False


def listening(ports: set[int]) -> set[int]:
    """Which of ``ports`` this process listens on."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in ports
    }


def test_the_operator_logs_in_with_its_kubeconfig_flag_and_leaves_nothing_when_stopped(
    crds: KubeCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = prepare_operator_account(crds, namespace)
    # Nothing else to log in with: no $KUBECONFIG, no ~/.kube/config, not in a pod.
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    environ = dict(os.environ)
    ports = {"metrics": free_port(), "health": free_port()}
    config = OperatorConfig(
        runner="pod",
        namespaces=[namespace],
        defaults=OperatorDefaults(backend="local"),
        metrics_port=ports["metrics"],
        health_port=ports["health"],
        bind_address="127.0.0.1",
        kubeconfig=str(kubeconfig),
    )
    threads_before = psutil.Process().num_threads()
    names_before = {t.name for t in threading.enumerate()}

    async def scenario() -> dict[str, object]:
        stop = asyncio.Event()
        operator = asyncio.create_task(run_operator(config, stop))
        try:
            await asyncio.to_thread(
                wait_for, lambda: answers(ports["health"], "/readyz"), 60, "/readyz"
            )
            # kopf sees the FlowRun (its watch) and daskflow's client ends it (a status
            # write): both logged in with the flag's kubeconfig alone.
            run = flowrun("cancelled", [{"name": "a", "command": ["true"]}], cancel=True)
            await asyncio.to_thread(apply, crds, run, namespace)
            ended = await asyncio.to_thread(wait_for_phase, crds, namespace, "cancelled")
            assert await asyncio.to_thread(answers, ports["metrics"], "/metrics")
        finally:
            stop.set()
            await asyncio.wait_for(operator, 60)
        status: dict[str, object] = ended["status"]
        return status

    status = asyncio.run(scenario())
    assert (status["phase"], status["reason"]) == ("Cancelled", "Cancelled")
    assert dict(os.environ) == environ  # read, never written
    assert not listening(set(ports.values()))
    assert not any(answers(port, "/") for port in ports.values())
    assert {t.name for t in threading.enumerate()} == names_before
    assert psutil.Process().num_threads() == threads_before


def test_a_pods_service_account_is_what_kopf_logs_in_with(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    # What the kubelet gives a pod: a token and the CA in files, the API server in env vars.
    kubeconfig = yaml.safe_load(kube.service_account_kubeconfig(namespace, "reader").read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    token = kubeconfig["users"][0]["user"]["token"]
    (tmp_path / "token").write_text(token)
    ca = cluster.get("certificate-authority")
    pem = Path(ca).read_bytes() if ca else base64.b64decode(cluster["certificate-authority-data"])
    (tmp_path / "ca.crt").write_bytes(pem)
    host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
    environ = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    account = f"system:serviceaccount:{namespace}:reader"

    async def check() -> tuple[KubeApiError, int, str]:
        configuration = await load_configuration(environ=environ, service_account=tmp_path)
        async with KubeApi(configuration) as api:
            with pytest.raises(KubeApiError) as refused:  # authenticated, but not allowed
                await api.get(FLOWRUNS, "kube-system", "etl")
            info = await api.connection_info()
        # kopf's client, from kopf's view of those credentials, is the same account.
        async with (
            aiohttp.ClientSession(headers=info.as_http_headers()) as session,
            session.get(
                f"{info.server}/apis/daskflow.io/v1alpha1/namespaces/kube-system/flowruns",
                ssl=info.as_ssl_context(),
            ) as response,
        ):
            return refused.value, response.status, await response.text()

    refused, status, body = asyncio.run(check())
    assert refused.status == 403 and account in str(refused), refused
    assert str(refused).startswith("get flowruns.daskflow.io kube-system/etl: 403 Forbidden")
    assert status == 403 and account in body, body


async def relay(port: int, host: str, to: int) -> asyncio.Server:
    """A TCP relay from 127.0.0.1:port to host:to (TLS passes through it untouched)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await asyncio.open_connection(host, to)
        await asyncio.gather(pipe(reader, upstream[1]), pipe(upstream[0], writer))

    return await asyncio.start_server(connected, "127.0.0.1", port)


def test_a_call_that_cannot_connect_yet_is_tried_again(crds: KubeCluster) -> None:
    # The API server comes up a moment after the first try (a restart, a Service that moved):
    # the call is made again instead of failing the run it was for.
    async def scenario() -> tuple[object, float]:
        configuration = await load_configuration(str(crds.kubeconfig))
        server = urlsplit(configuration.host)
        port = free_port()
        configuration.host = f"https://127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def listen_late() -> asyncio.Server:
            await asyncio.sleep(0.5)
            return await relay(port, server.hostname or "", server.port or 443)

        late = asyncio.create_task(listen_late())
        try:
            async with KubeApi(configuration) as api:
                found = await api.get(FLOWRUNS, "default", "no-such-run")
            return found, loop.time() - started
        finally:
            listening = await late
            listening.close()

    found, took = asyncio.run(scenario())
    assert found is None  # the API server's answer: no such FlowRun
    assert took >= 0.5
