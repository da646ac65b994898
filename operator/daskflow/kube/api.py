"""The only module that talks to the Kubernetes API: a small async facade over the
``kubernetes`` client, with dicts in and dicts out.

Every call runs in a worker thread (the client is synchronous), so kopf's event loop never
blocks on the network. Every resource daskflow writes lives under ``/apis/<group>``, so
the generic custom-objects client serves them all, Jobs and Events included; the one core
resource, Pods, is only ever listed (why a Pending run's pods cannot start). Every failed
call raises :class:`KubeApiError`, which names the verb, the resource and the object: a
log line must say what failed, not just "404".
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ..model.spec import API_GROUP, API_VERSION, PLURAL

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"

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


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster credentials inside a pod, else the kubeconfig (``$KUBECONFIG``)."""
    if (
        kubeconfig is None
        and os.environ.get("KUBERNETES_SERVICE_HOST")
        and not os.environ.get("KUBECONFIG")
    ):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, client_configuration=configuration
    )
    return client.ApiClient(configuration)


class KubeApiError(ApiException):
    """A failed API call that says what was attempted: verb, resource and object.

    An :class:`ApiException` (``status``, ``reason``, ``body`` as usual; ``status`` is None
    when the API server could not be reached).
    """

    def __init__(
        self, cause: Exception, verb: str, res: Resource, namespace: str | None, name: str
    ) -> None:
        if isinstance(cause, ApiException):
            super().__init__(status=cause.status, reason=cause.reason, body=cause.body)
            self.headers = cause.headers
        else:
            super().__init__(reason=f"{type(cause).__name__}: {cause}")
        self.verb = verb
        self.resource = res
        self.namespace = namespace
        self.name = name

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
    """Async, dict-based access to the few resources daskflow uses."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or load_api_client()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    async def _call(
        self,
        what: tuple[str, Resource, str | None, str],
        fn: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Call the client in a thread; ``what`` is (verb, resource, namespace, name)."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (ApiException, HTTPError) as err:
            raise KubeApiError(err, *what) from err

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist (``namespace`` None: cluster-scoped)."""
        args = (res.group, res.version, *((namespace,) if namespace else ()), res.plural, name)
        fn = (
            self.custom.get_namespaced_custom_object
            if namespace
            else self.custom.get_cluster_custom_object
        )
        try:
            obj: dict[str, Any] = await self._call(("get", res, namespace, name), fn, *args)
        except ApiException as err:
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
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return any(r.name == res.plural for r in found.resources or ())

    async def list(
        self, res: Resource, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        out = await self._call(
            ("list", res, namespace, "*"),
            self.custom.list_namespaced_custom_object,
            res.group,
            res.version,
            namespace,
            res.plural,
            label_selector=label_selector,
        )
        items: list[dict[str, Any]] = out.get("items", [])
        return items

    async def list_pods(self, namespace: str, label_selector: str) -> Any:
        """Pods as plain dicts, as the API sends them (camelCase keys)."""
        response = await self._call(
            ("list", PODS, namespace, "*"),
            self.core.list_namespaced_pod,
            namespace,
            label_selector=label_selector,
            _preload_content=False,
        )
        return json.loads(response.data)["items"]

    async def create(
        self, res: Resource, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create an object (``namespace`` None: cluster-scoped)."""
        meta = body.get("metadata") or {}
        name = meta.get("name") or f"{meta.get('generateName', '')}*"
        fn = (
            self.custom.create_namespaced_custom_object
            if namespace
            else self.custom.create_cluster_custom_object
        )
        args = (res.group, res.version, *((namespace,) if namespace else ()), res.plural, body)
        obj: dict[str, Any] = await self._call(("create", res, namespace, name), fn, *args)
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
        fn = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )
        obj: dict[str, Any] = await self._call(
            ("patch status" if status else "patch", res, namespace, name),
            fn,
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
        except ApiException as err:
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
        except ApiException as err:
            log.warning("could not post Event %s: %s", reason, err)

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]
