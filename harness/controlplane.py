"""A real Kubernetes control plane for tests: etcd and kube-apiserver on loopback.

Modelled on controller-runtime's envtest (pkg/internal/testing/controlplane): no
controller-manager, scheduler or kubelet run, so nothing reconciles (pods stay
Pending, namespaces stay Terminating after deletion), but the API, its validation,
admission and RBAC are the real thing.

The binaries are built by ``hack/build-testenv.sh``. They are looked up in
``$KUBEBUILDER_ASSETS`` (envtest's convention: a folder with ``etcd``,
``kube-apiserver`` and, optionally, ``kubectl``) and then in the cache that
script fills, ``~/.cache/daskflow/testenv/<version>``.

With ``$DASKFLOW_TEST_KUBECONFIG`` set, nothing is started: :func:`from_environment`
returns an :class:`ExternalCluster` that uses that kubeconfig's current context.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from harness.processes import Supervised, free_port
from harness.waiting import WaitTimeout, wait_for

KUBE_VERSION = "v1.36.3"
"""The Kubernetes version hack/build-testenv.sh builds."""

ENV_ASSETS = "KUBEBUILDER_ASSETS"
ENV_KUBECONFIG = "DASKFLOW_TEST_KUBECONFIG"

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
_ADMIN_USER = "daskflow-admin"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or used."""


def cache_dir() -> Path:
    """The folder hack/build-testenv.sh builds the binaries into."""
    base = os.environ.get("DASKFLOW_CACHE")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "daskflow"
    return root / "testenv" / KUBE_VERSION


def find_binary(name: str) -> Path:
    """Find a control plane binary: ``$KUBEBUILDER_ASSETS`` first, then the cache."""
    candidates: list[Path] = []
    assets = os.environ.get(ENV_ASSETS)
    if assets:
        candidates.append(Path(assets) / name)
    candidates.append(cache_dir() / name)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise ControlPlaneError(
        f"{name} not found (tried {tried}); run hack/build-testenv.sh "
        f"(or `make testenv`), set {ENV_ASSETS}, or point {ENV_KUBECONFIG} at a cluster"
    )


def find_kubectl() -> Path:
    """Our kubectl (same version as the apiserver); else one on PATH (external clusters)."""
    try:
        return find_binary("kubectl")
    except ControlPlaneError:
        found = shutil.which("kubectl")
        if found is None:
            raise
        return Path(found)


# --------------------------------------------------------------------------- PKI


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


class _CertificateAuthority:
    """A throwaway CA that signs serving and client certificates."""

    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
    ) -> tuple[bytes, bytes]:
        """Issue a leaf certificate; returns (certificate PEM, private key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _cert_pem(cert), _key_pem(key)

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)


# ------------------------------------------------------------------- processes


def _poll(
    what: str, check: Any, deadline: float, processes: Sequence[Supervised], interval: float = 0.1
) -> None:
    """Call ``check()`` until it returns true; fail early if a process exits."""

    def step() -> Any:
        for proc in processes:
            if not proc.running():
                raise ControlPlaneError(
                    f"{proc.name} exited with code {proc.returncode} while waiting "
                    f"for {what}; its log ({proc.log_path}) ends with:\n{proc.log_tail()}"
                )
        return check()

    try:
        wait_for(step, deadline - time.monotonic(), what, interval=interval, ignore=(OSError,))
    except WaitTimeout as exc:
        logs = "\n".join(f"--- {p.name}:\n{p.log_tail()}" for p in processes)
        raise ControlPlaneError(f"{exc}\n{logs}") from None


# ----------------------------------------------------------------- kubeconfigs


def _write_kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "daskflow-test", "cluster": cluster}],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {
                "name": "daskflow-test",
                "context": {"cluster": "daskflow-test", "user": "user", "namespace": "default"},
            }
        ],
        "current-context": "daskflow-test",
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def _current_cluster(kubeconfig: Path) -> dict[str, Any]:
    """The ``cluster`` entry of a kubeconfig's current context, with file paths made absolute."""
    doc = yaml.safe_load(kubeconfig.read_text()) or {}
    contexts = {c["name"]: c["context"] for c in doc.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in doc.get("clusters") or []}
    try:
        cluster = dict(clusters[contexts[doc["current-context"]]["cluster"]])
    except KeyError as exc:
        raise ControlPlaneError(f"{kubeconfig}: no usable current context ({exc})") from exc
    ca = cluster.get("certificate-authority")
    if ca:
        cluster["certificate-authority"] = str((kubeconfig.parent / ca).resolve())
    return cluster


# ------------------------------------------------------------ scratch folders

_WORK_PREFIX = "daskflow-kube-"
_OWNER_FILE = "owner.pid"


def _work_root() -> str | None:
    """Where work folders go: tmpfs (/dev/shm) when usable, for etcd's sake."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def remove_stale_work_dirs(root: str | None = None) -> list[Path]:
    """Remove work folders left by control planes whose test process died (killed
    sessions cannot clean up after themselves; their children die with them)."""
    removed: list[Path] = []
    base = Path(root or _work_root() or tempfile.gettempdir())
    for folder in base.glob(f"{_WORK_PREFIX}*"):
        try:
            owner = int((folder / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


# -------------------------------------------------------------------- clusters


class KubeCluster:
    """What tests get: a kubeconfig with admin rights, and helpers around it.

    Subclasses set ``kubeconfig`` (admin), ``work_dir`` (scratch space that
    lives as long as the cluster) and ``kubectl_path``.
    """

    kubeconfig: Path
    work_dir: Path
    kubectl_path: Path

    def api_client(self, kubeconfig: Path | None = None) -> k8s.ApiClient:
        """A new kubernetes ``ApiClient`` (admin, unless another kubeconfig is given).

        The caller owns it; use it as a context manager or ``.close()`` it.
        """
        api: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig or self.kubeconfig)
        )
        return api

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = False,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run our kubectl (admin unless ``kubeconfig`` is given); output is captured as text."""
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        argv = [str(self.kubectl_path), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        return subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=env,
        )

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name``.

        Creates the ServiceAccount if it does not exist, and gets a bound token for
        it from the TokenRequest API (no Secret-based token is involved). It has
        only the rights RBAC grants that ServiceAccount.
        """
        with self.api_client() as api:
            core = k8s.CoreV1Api(api)
            try:
                core.create_namespaced_service_account(
                    namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
            request = k8s.AuthenticationV1TokenRequest(
                spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
            )
            response = core.create_namespaced_service_account_token(name, namespace, request)
        if response.status is None or not response.status.token:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
        folder = self.work_dir / "serviceaccounts"
        folder.mkdir(exist_ok=True)
        return _write_kubeconfig(
            folder / f"{namespace}.{name}.kubeconfig",
            _current_cluster(self.kubeconfig),
            {"token": response.status.token},
        )

    def start(self) -> None:
        """Nothing to start for an existing cluster."""

    def stop(self) -> None:
        """Nothing to stop for an existing cluster."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ExternalCluster(KubeCluster):
    """An existing cluster, from ``$DASKFLOW_TEST_KUBECONFIG``: nothing is started."""

    def __init__(self, kubeconfig: Path) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=_WORK_PREFIX)
        self.kubeconfig = kubeconfig.resolve()
        self.work_dir = Path(self._tmp.name)
        self.kubectl_path = find_kubectl()

    def stop(self) -> None:
        self._tmp.cleanup()


class ControlPlane(KubeCluster):
    """etcd + kube-apiserver on free loopback ports, with TLS and RBAC.

    Everything lives in a temporary folder (etcd's data on tmpfs when
    ``/dev/shm`` is usable) that :meth:`stop` removes. The children are killed if
    the process (strictly: the thread) that started them dies.
    """

    def __init__(self, *, start_timeout: float = 90.0, verbosity: int = 0) -> None:
        self.start_timeout = start_timeout
        self.verbosity = verbosity
        self.etcd_path = find_binary("etcd")
        self.apiserver_path = find_binary("kube-apiserver")
        self.kubectl_path = find_binary("kubectl")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._processes: list[Supervised] = []
        self.server = ""
        self.etcd_url = ""
        self.startup_seconds: float | None = None

    # -- lifecycle

    def start(self) -> None:
        if self._processes:
            raise ControlPlaneError("control plane already started")
        began = time.monotonic()
        deadline = began + self.start_timeout
        root = _work_root()
        remove_stale_work_dirs(root)
        self._tmp = tempfile.TemporaryDirectory(prefix=_WORK_PREFIX, dir=root)
        work = self.work_dir = Path(self._tmp.name)
        (work / _OWNER_FILE).write_text(str(os.getpid()))
        self.kubeconfig = work / "admin.kubeconfig"
        try:
            pki = self._write_pki(work / "pki")
            self._start_etcd(work, deadline)
            self._start_apiserver(work, pki, deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def pids(self) -> dict[str, int]:
        """The process id of each server it started (etcd, kube-apiserver)."""
        return {proc.name: proc.pid for proc in self._processes}

    def stop(self) -> None:
        # The apiserver first: it keeps retrying etcd while it shuts down.
        for proc in reversed(self._processes):
            proc.stop()
        self._processes.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- internals

    def _write_pki(self, pki: Path) -> dict[str, Path]:
        pki.mkdir(mode=0o700)
        ca = _CertificateAuthority("daskflow-test-ca")
        serving_cert, serving_key = ca.issue(
            "kube-apiserver",
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=["127.0.0.1", "10.0.0.1"],
            server=True,
        )
        admin_cert, admin_key = ca.issue(_ADMIN_USER, organizations=["system:masters"])
        sa_key = ec.generate_private_key(ec.SECP256R1())
        sa_pub = sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        files = {
            "ca.crt": ca.cert_pem,
            "apiserver.crt": serving_cert,
            "apiserver.key": serving_key,
            "admin.crt": admin_cert,
            "admin.key": admin_key,
            "sa.key": _key_pem(sa_key),
            "sa.pub": sa_pub,
        }
        paths: dict[str, Path] = {}
        for name, data in files.items():
            path = pki / name
            path.write_bytes(data)
            path.chmod(0o600)
            paths[name] = path
        return paths

    def _start_etcd(self, work: Path, deadline: float) -> None:
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        argv = [
            str(self.etcd_path),
            "--name=daskflow-test",
            f"--data-dir={work / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=daskflow-test={peer_url}",
            "--initial-cluster-state=new",
            # Test data: no fsync, small backend, nothing kept for long.
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ]
        proc = Supervised(argv, work / "etcd.log", name="etcd", die_with_parent=True)
        self._processes.append(proc)

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                return resp.status == 200 and b'"health":"true"' in resp.read()

        _poll("etcd /health", healthy, deadline, [proc])

    def _start_apiserver(self, work: Path, pki: dict[str, Path], deadline: float) -> None:
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        argv = [
            str(self.apiserver_path),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={work / 'apiserver-certs'}",
            f"--tls-cert-file={pki['apiserver.crt']}",
            f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={pki['sa.pub']}",
            f"--service-account-signing-key-file={pki['sa.key']}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            # No controller-manager creates the `default` ServiceAccount, so pods
            # would be rejected by this plugin (envtest does the same).
            "--disable-admission-plugins=ServiceAccount",
            f"--v={self.verbosity}",
        ]
        proc = Supervised(
            argv, work / "kube-apiserver.log", name="kube-apiserver", die_with_parent=True
        )
        self._processes.append(proc)

        _write_kubeconfig(
            self.kubeconfig,
            {"server": self.server, "certificate-authority-data": _b64(pki["ca.crt"].read_bytes())},
            {
                "client-certificate-data": _b64(pki["admin.crt"].read_bytes()),
                "client-key-data": _b64(pki["admin.key"].read_bytes()),
            },
        )

        tls = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        tls.load_cert_chain(str(pki["admin.crt"]), str(pki["admin.key"]))

        def ready() -> bool:
            try:
                with urllib.request.urlopen(
                    f"{self.server}/readyz", timeout=5, context=tls
                ) as resp:
                    return bool(resp.status == 200)
            except urllib.error.HTTPError:  # 500 while post-start hooks run
                return False

        _poll("kube-apiserver /readyz", ready, deadline, self._processes, interval=0.2)

        # Ready does not mean bootstrapped: the system namespaces come a moment
        # later, from a controller inside the apiserver.
        def bootstrapped() -> bool:
            for ns in ("default", "kube-system"):
                try:
                    url = f"{self.server}/api/v1/namespaces/{ns}"
                    with urllib.request.urlopen(url, timeout=5, context=tls):
                        pass
                except urllib.error.HTTPError:
                    return False
            return True

        _poll("the default namespaces", bootstrapped, deadline, self._processes)


def from_environment() -> KubeCluster:
    """An :class:`ExternalCluster` if ``$DASKFLOW_TEST_KUBECONFIG`` is set, else a
    (not yet started) :class:`ControlPlane`."""
    external = os.environ.get(ENV_KUBECONFIG)
    if external:
        return ExternalCluster(Path(external).expanduser())
    return ControlPlane()
