"""FlowRuns on a cluster: create one, read one or all, follow one to its end, cancel, delete.

What ``daskflow submit/get/cancel/delete`` and the SDK's ``flow.submit()`` do, with the
synchronous ``kubernetes`` client. A manifest is validated here first, with the messages
of ``daskflow validate``, so a bad flow never reaches the API server.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..model.states import PHASE_TERMINAL
from ..model.validate import parse_flowrun
from .connection import Connection, RemoteError, Target

POLL_INTERVAL = 1.0  # seconds between reads of a followed run (the status moves about as often)


@dataclass(frozen=True)
class Run:
    """A FlowRun as last read: its name (chosen by the server for a generateName), its
    namespace and its status (``{}`` until the operator writes one)."""

    name: str
    namespace: str
    status: dict[str, Any]

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")

    @property
    def finished(self) -> bool:
        return self.phase in PHASE_TERMINAL

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Run:
        meta = obj.get("metadata") or {}
        return cls(str(meta.get("name")), str(meta.get("namespace")), obj.get("status") or {})


def prepare(
    manifest: Mapping[str, Any],
    *,
    name: str | None = None,
    generate_name: str | None = None,
    source: str = "manifest",
) -> dict[str, Any]:
    """A copy of ``manifest`` to create: validated, named as asked (``name`` or a server-made
    name from ``generate_name``; else the manifest's own), without ``status``."""
    doc = copy.deepcopy(dict(manifest))
    meta = dict(doc.get("metadata") or {})
    if name or generate_name:
        meta.pop("name", None)
        meta.pop("generateName", None)
        meta.update({"name": name} if name else {"generateName": generate_name})
    if not meta.get("name") and not meta.get("generateName"):
        raise RemoteError(
            f"{source}: no metadata.name or metadata.generateName: give --name NAME or "
            "--generate-name PREFIX"
        )
    for field in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        meta.pop(field, None)
    doc["metadata"] = meta
    doc.pop("status", None)
    check = {**doc, "metadata": {**meta, "name": meta.get("name") or meta["generateName"]}}
    parse_flowrun(check, source)  # ManifestError: what `daskflow validate` says
    return doc


def create(conn: Connection, manifest: Mapping[str, Any]) -> Run:
    """Create a FlowRun from a prepared manifest, in the connection's namespace unless
    the manifest names one (as kubectl, a different one is an error)."""
    namespace = (manifest.get("metadata") or {}).get("namespace")
    if namespace and namespace != conn.namespace:
        raise RemoteError(
            f'the manifest\'s namespace "{namespace}" is not the namespace asked for, '
            f'"{conn.namespace}": pass -n {namespace}, or remove metadata.namespace'
        )
    return Run.of(conn.flowruns("create", body=dict(manifest)))


def get(conn: Connection, name: str) -> dict[str, Any]:
    """The FlowRun object, as the API server has it."""
    obj: dict[str, Any] = conn.flowruns("get", name)
    return obj


def list_runs(conn: Connection) -> list[dict[str, Any]]:
    """Every FlowRun of the namespace, oldest first."""
    items: list[dict[str, Any]] = conn.flowruns("list").get("items") or []
    return sorted(items, key=lambda o: (o["metadata"].get("creationTimestamp") or "", _name(o)))


def follow(
    conn: Connection,
    name: str,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    interval: float = POLL_INTERVAL,
) -> Run:
    """Read the run until it has finished, passing each new status to ``on_status``."""
    last: dict[str, Any] | None = None
    while True:
        run = Run.of(get(conn, name))
        if on_status is not None and run.status != last:
            on_status(run.status)
        last = run.status
        if run.finished:
            return run
        time.sleep(interval)


def cancel(conn: Connection, name: str) -> Run:
    """Set ``spec.cancel``: the operator stops the run within seconds."""
    body = {"spec": {"cancel": True}}
    return Run.of(conn.flowruns("patch", name, body=body))


def delete(conn: Connection, name: str) -> None:
    """Delete the FlowRun: its finalizer stops the run and removes its children first."""
    conn.flowruns("delete", name)


def submit(
    manifest: Mapping[str, Any],
    *,
    name: str | None = None,
    generate_name: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
    kubeconfig: str | None = None,
    wait: bool = False,
    on_status: Callable[[dict[str, Any]], None] | None = None,
) -> Run:
    """Create the FlowRun of ``manifest`` on the cluster kubectl would use (in
    ``namespace``, else the manifest's, else the context's); with ``wait``, follow it to its
    end. Raises :class:`~daskflow.model.validate.ManifestError` for an invalid manifest and
    :class:`RemoteError` for anything the cluster refuses."""
    doc = prepare(manifest, name=name, generate_name=generate_name)
    namespace = namespace or doc["metadata"].get("namespace")
    with Connection(Target(namespace, context, kubeconfig)) as conn:
        run = create(conn, doc)
        return follow(conn, run.name, on_status) if wait else run


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")
