"""The only module that talks to the Kubernetes API: a small async facade over the
official client's asyncio variant (``kubernetes.aio``), with dicts in and dicts out.

A process has one :class:`KubeApi`, built from one set of credentials (a kubeconfig or the
pod's ServiceAccount: :func:`load_configuration`) and closed when the process is done. Its
calls run on the caller's event loop, never in threads. The operator hands kopf the very
same credentials (:meth:`KubeApi.connection_info`), so kopf's watches and daskflow's own
calls act as one account.

Every resource daskflow writes lives under ``/apis/<group>``, so the generic custom-objects
API serves them all, Jobs and Events included; the one core resource, Pods, is only ever
listed (why a Pending run's pods cannot start). Every failed call raises
:class:`KubeApiError`, which names the verb, the resource and the object: a log line must
say what failed, not just "404".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp
from kubernetes.aio import config
from kubernetes.aio.client import ApiClient, Configuration, CoreV1Api, CustomObjectsApi
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config.incluster_config import InClusterConfigLoader

from ..model.spec import API_GROUP, API_VERSION, PLURAL

if TYPE_CHECKING:
    import kopf

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
RECONNECT_DELAYS = (0.2, 1.0, 3.0)  # seconds before each new try of a call that lost its connection
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# The API server stores JSON nested up to 10,000 levels and refuses deeper. Python's JSON
# decoder and copy.deepcopy recurse once or twice per level and stop at 1,000 frames by
# default, so one FlowRun nested that deep would make every list of FlowRuns fail, kopf's
# watch of its namespace included, until someone deletes it. Processes that read FlowRuns
# therefore allow that depth (validation then fails such a run with InvalidSpec), in thread
# stacks that fit it (8 MiB do; some platforms give threads far less).
API_MAX_DEPTH = 10_000


def allow_api_depth() -> None:
    """Let this process read any object the API server can store (call before threads)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5 * API_MAX_DEPTH))
    threading.stack_size(max(threading.stack_size(), 16 << 20))


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str

    def __str__(self) -> str:
        """kubectl's spelling: ``daskclusters.kubernetes.dask.org``, ``pods``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


FLOWRUNS = Resource(API_GROUP, API_VERSION, PLURAL)
DASKCLUSTERS = Resource("kubernetes.dask.org", "v1", "daskclusters")
DASKAUTOSCALERS = Resource("kubernetes.dask.org", "v1", "daskautoscalers")
JOBS = Resource("batch", "v1", "jobs")
EVENTS = Resource("events.k8s.io", "v1", "events")
PODS = Resource("", "v1", "pods")

KIND_RESOURCES = {
    "DaskCluster": DASKCLUSTERS,
    "DaskAutoscaler": DASKAUTOSCALERS,
    "Job": JOBS,
}


async def load_configuration(
    kubeconfig: str | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    service_account: Path = SERVICE_ACCOUNT,
) -> Configuration:
    """The credentials of this process: the ``kubeconfig`` given, else ``$KUBECONFIG``;
    without either, in a pod, the pod's ServiceAccount, elsewhere ``~/.kube/config``."""
    configuration = Configuration()
    if (
        kubeconfig is None
        and environ.get("KUBERNETES_SERVICE_HOST")
        and not environ.get("KUBECONFIG")
    ):
        # The token file is read again once a minute: the kubelet rotates bound tokens.
        loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
            token_filename=str(service_account / "token"),
            cert_filename=str(service_account / "ca.crt"),
            environ=environ,
        )
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    else:
        # One path or several (``a:b``, merged); the loader expands ``~`` in each.
        paths = kubeconfig or environ.get("KUBECONFIG") or "~/.kube/config"
        await config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=paths, client_configuration=configuration
        )
    return configuration


class KubeApiError(Exception):
    """A failed API call that says what was attempted: verb, resource and object.

    ``status`` is the HTTP status (None when the API server could not be reached), with
    ``reason`` and ``body`` as the server sent them.
    """

    def __init__(
        self, cause: BaseException, verb: str, res: Resource, namespace: str | None, name: str
    ) -> None:
        self.status: int | None = None
        self.reason = f"{type(cause).__name__}: {cause}"
        self.body: str | None = None
        if isinstance(cause, ApiException):
            self.status, self.reason, self.body = cause.status, cause.reason, cause.body
        self.verb = verb
        self.resource = res
        self.namespace = namespace
        self.name = name
        super().__init__(str(self))

    @property
    def target(self) -> str:
        """The object as ``namespace/name`` (a list: ``namespace/*``)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        what = f"{self.verb} {self.resource} {self.target}"
        if self.status is None:
            return f"{what}: cannot reach the API server ({self.reason})"
        detail = ""
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            detail = str(json.loads(self.body or "").get("message") or "")
        return f"{what}: {self.status} {self.reason}" + (f": {detail}" if detail else "")


class KubeApi:
    """Async, dict-based access to the few resources daskflow uses; one per process."""

    def __init__(self, configuration: Configuration) -> None:
        self.configuration = configuration
        self.api_client = ApiClient(configuration)
        self.custom = CustomObjectsApi(self.api_client)
        self.core = CoreV1Api(self.api_client)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> KubeApi:
        """A client with this process's credentials (see :func:`load_configuration`)."""
        return cls(await load_configuration(kubeconfig))

    async def close(self) -> None:
        await self.api_client.close()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connection_info(self) -> kopf.ConnectionInfo:
        """These credentials as kopf takes them from a login handler. Read anew on each
        call, so a rotated ServiceAccount token reaches kopf when it logs in again."""
        import kopf

        cfg = self.configuration
        header = await cfg.get_api_key_with_prefix("BearerToken")
        scheme, _, token = (header or "").rpartition(" ")
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            ca_data=None if cfg.ssl_ca_cert else cfg.ca_cert_data,
            insecure=not cfg.verify_ssl,
            username=cfg.username or None,
            password=cfg.password or None,
            scheme=scheme.capitalize() or None,
            token=token or None,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
            proxy_url=cfg.proxy,
        )

    async def _call(
        self,
        what: tuple[str, Resource, str | None, str],
        method: Callable[..., Awaitable[Any]],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """One API call; ``what`` is (verb, resource, namespace, name).

        A call that could not connect, or whose connection the server closed before it
        answered, is tried again: every call daskflow makes may be repeated (a GET, a merge
        patch, a delete or create whose 404 or 409 the caller expects).
        """
        delays = iter(RECONNECT_DELAYS)
        while True:
            try:
                return await method(*args, **kwargs)
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as err:
                delay = next(delays, None)
                if delay is None:
                    raise KubeApiError(err, *what) from err
                log.debug("%s %s: %s; trying again in %gs", what[0], what[1], err, delay)
                await asyncio.sleep(delay)
            except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as err:
                raise KubeApiError(err, *what) from err

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist (``namespace`` None: cluster-scoped)."""
        args = (res.group, res.version, *((namespace,) if namespace else ()), res.plural, name)
        method = (
            self.custom.get_namespaced_custom_object
            if namespace
            else self.custom.get_cluster_custom_object
        )
        try:
            obj: dict[str, Any] = await self._call(("get", res, namespace, name), method, *args)
        except KubeApiError as err:
            if err.status == 404:
                return None
            raise
        return obj

    async def served(self, res: Resource) -> bool:
        """Whether the API server serves ``res`` (for a custom resource: its CRD exists)."""
        try:
            found = await self._call(
                ("discover", res, None, f"/apis/{res.group}/{res.version}"),
                self.custom.get_api_resources,
                res.group,
                res.version,
            )
        except KubeApiError as err:
            if err.status == 404:
                return False
            raise
        return any(r.name == res.plural for r in found.resources or ())

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Pods as plain dicts, as the API sends them (camelCase keys)."""
        pods = await self._call(
            ("list", PODS, namespace, "*"),
            self.core.list_namespaced_pod,
            namespace,
            label_selector=label_selector,
        )
        items: list[dict[str, Any]] = self.api_client.sanitize_for_serialization(pods)[  # type: ignore[no-untyped-call]
            "items"
        ]
        return items

    async def create(
        self, res: Resource, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create an object (``namespace`` None: cluster-scoped)."""
        meta = body.get("metadata") or {}
        name = meta.get("name") or f"{meta.get('generateName', '')}*"
        args = (res.group, res.version, *((namespace,) if namespace else ()), res.plural, body)
        method = (
            self.custom.create_namespaced_custom_object
            if namespace
            else self.custom.create_cluster_custom_object
        )
        obj: dict[str, Any] = await self._call(("create", res, namespace, name), method, *args)
        return obj

    async def patch(
        self,
        res: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        status: bool = False,
    ) -> dict[str, Any]:
        method = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )
        obj: dict[str, Any] = await self._call(
            ("patch status" if status else "patch", res, namespace, name),
            method,
            res.group,
            res.version,
            namespace,
            res.plural,
            name,
            patch,
            _content_type=MERGE_PATCH,
        )
        return obj

    async def delete(self, res: Resource, namespace: str, name: str) -> bool:
        """Delete (children in the background); False if it was already gone."""
        try:
            await self._call(
                ("delete", res, namespace, name),
                self.custom.delete_namespaced_custom_object,
                res.group,
                res.version,
                namespace,
                res.plural,
                name,
                propagation_policy="Background",
            )
        except KubeApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    async def post_event(
        self,
        regarding: dict[str, Any],
        *,
        type_: str,
        reason: str,
        note: str,
        component: str,
    ) -> None:
        """Post an events.k8s.io Event about an object; failures never break a run."""
        meta = regarding["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name'][:200]}.{secrets.token_hex(8)}",
                "namespace": meta["namespace"],
            },
            "eventTime": now,
            "reportingController": f"daskflow.io/{component}",
            "reportingInstance": f"{component}-{os.environ.get('HOSTNAME', 'local')}"[:128],
            "action": reason,
            "reason": reason,
            "type": type_,
            "note": note[:1024],
            "regarding": {
                "apiVersion": regarding.get("apiVersion", f"{API_GROUP}/{API_VERSION}"),
                "kind": regarding.get("kind", "FlowRun"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
        }
        try:
            await self.create(EVENTS, meta["namespace"], body)
        except KubeApiError as err:
            log.warning("could not post Event %s: %s", reason, err)
