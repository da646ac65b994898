"""Reaching a cluster as kubectl does, and saying in one line why a call failed.

The kubeconfig is ``--kubeconfig``, else the files of ``$KUBECONFIG``, else
``~/.kube/config``, else, inside a pod, the pod's own account. The namespace is the one
asked for, else the context's, else the pod's (in a pod), else ``default``. Every failed
API call becomes a :class:`RemoteError` whose message names the verb and the resource, and
says what to do when that is clear (no CRD: install the chart).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from ..model.spec import API_GROUP, API_VERSION, PLURAL

FLOWRUNS = f"{PLURAL}.{API_GROUP}"
DEFAULT_NAMESPACE = "default"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT = 30.0  # seconds, for every call but a followed log


class RemoteError(Exception):
    """A failure to show as one line; ``exit_code`` as the README's contract says."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Target:
    """Which cluster and namespace: what ``--kubeconfig``, ``--context`` and ``-n`` say."""

    namespace: str | None = None
    context: str | None = None
    kubeconfig: str | None = None


class Connection:
    """An API client for ``target`` and the namespace it resolves to; close it when done."""

    def __init__(self, target: Target = Target()) -> None:
        self.api, default_namespace = _load(target)
        self.namespace = target.namespace or default_namespace
        self.objects = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flowruns(self, verb: str, name: str | None = None, **kwargs: Any) -> Any:
        """``verb`` (get, list, create, patch, delete) on the FlowRuns of the namespace."""
        method = getattr(self.objects, f"{verb}_namespaced_custom_object")
        args = (API_GROUP, API_VERSION, self.namespace, PLURAL, *([name] if name else []))
        return self.call(
            lambda: method(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs), verb, FLOWRUNS, name
        )

    def call(self, fn: Any, verb: str, resource: str, name: str | None = None) -> Any:
        """``fn()``, its failure told as a :class:`RemoteError` about ``verb resource name``."""
        try:
            return fn()
        except ApiException as err:
            raise api_error(err, verb, resource, self.namespace, name) from None
        except (HTTPError, OSError) as err:
            host = self.api.configuration.host
            raise RemoteError(f"cannot reach the API server at {host}: {err}", 1) from None


def api_error(
    err: ApiException, verb: str, resource: str, namespace: str, name: str | None
) -> RemoteError:
    """One line for a failed call: what was asked, and what to do about it when clear."""
    body = status_of(err)
    what = f"{verb} {resource}" + (f' "{name}"' if name else "")
    where = f'in namespace "{namespace}"'
    message = str(body.get("message") or err.reason or "").strip()
    details = body.get("details") or {}
    if err.status == 404 and details.get("kind") == "namespaces":
        return RemoteError(f'cannot {what}: namespace "{namespace}" not found')
    if err.status == 404 and body.get("reason") == "NotFound":
        kind = "FlowRun" if resource == FLOWRUNS else resource
        return RemoteError(f'{kind} "{name}" not found {where}')
    if err.status == 404:  # no Status at all: the API server does not serve the resource
        return RemoteError(
            f"this cluster does not serve {resource}: is the daskflow chart installed? "
            "(it installs the FlowRun CRD)"
        )
    if err.status == 403:
        user = re.search(r'User "[^"]*"', message)
        return RemoteError(f"forbidden: {user.group(0) if user else 'you'} cannot {what} {where}")
    if err.status == 401:
        return RemoteError(f"cannot {what}: the API server rejected the credentials: {message}")
    if err.status == 409 and body.get("reason") == "AlreadyExists":
        return RemoteError(
            f"{message}: pick another name with --name, or let the server pick one "
            "with --generate-name PREFIX"
        )
    if err.status == 422:
        causes = details.get("causes") or []
        lines = [f"{c.get('field', '')}: {c.get('message', '')}".strip(": ") for c in causes]
        detail = "\n".join(f"  - {line}" for line in lines) if lines else message
        return RemoteError(f"the API server rejected the FlowRun:\n{detail}")
    code = 1 if err.status and err.status >= 500 else 2
    return RemoteError(f"cannot {what} {where}: {err.status} {message}", code)


def status_of(err: ApiException) -> dict[str, Any]:
    """The Status object in an error's body, if any (a missing resource has none)."""
    try:
        body = json.loads(err.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}


def _kubeconfig_files(target: Target) -> str | None:
    """kubectl's choice of kubeconfig files (``os.pathsep``-separated), None if none exist."""
    if target.kubeconfig:
        if not Path(target.kubeconfig).expanduser().is_file():
            raise RemoteError(f"--kubeconfig {target.kubeconfig}: no such file")
        return target.kubeconfig
    paths = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config"))
    existing = [p for p in paths.split(os.pathsep) if p and Path(p).expanduser().is_file()]
    return os.pathsep.join(existing) or None


def _load(target: Target) -> tuple[client.ApiClient, str]:
    """The API client, and the namespace to use when none is asked for."""
    files = _kubeconfig_files(target)
    if files is None and os.environ.get("KUBERNETES_SERVICE_HOST") and not target.context:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as err:
            raise RemoteError(f"cannot use this pod's service account: {err}") from None
        try:
            namespace = IN_CLUSTER_NAMESPACE.read_text().strip() or DEFAULT_NAMESPACE
        except OSError:
            namespace = DEFAULT_NAMESPACE
        return client.ApiClient(configuration), namespace
    if files is None:
        where = f"$KUBECONFIG ({os.environ['KUBECONFIG']})" if "KUBECONFIG" in os.environ else ""
        raise RemoteError(
            f"no kubeconfig found{' in ' + where if where else ''}: set KUBECONFIG, pass "
            "--kubeconfig FILE, or create ~/.kube/config (kubectl's, e.g. from your "
            "cluster's provider)"
        )
    try:
        contexts, current = config.list_kube_config_contexts(files)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError) as err:
        raise RemoteError(f"cannot read kubeconfig {files}: {err}") from None
    name = target.context or (current or {}).get("name")
    chosen = next((c for c in contexts or [] if c.get("name") == name), None)
    if chosen is None:
        known = ", ".join(str(c.get("name")) for c in contexts or []) or "none"
        why = f"no context {name!r}" if name else "no current context"
        raise RemoteError(f"kubeconfig {files}: {why} (its contexts: {known}); use --context")
    try:
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=files, context=name, persist_config=False
        )
    except (ConfigException, OSError, ValueError) as err:
        raise RemoteError(f"kubeconfig {files}, context {name!r}: {err}") from None
    namespace = (chosen.get("context") or {}).get("namespace") or DEFAULT_NAMESPACE
    return api, str(namespace)
