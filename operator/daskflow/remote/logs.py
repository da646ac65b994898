"""The logs of a FlowRun's pods: its runner and its Dask scheduler and workers, found by
the label every child of the run carries (its uid), read or followed.

Pods live as long as the run: the operator deletes them when it ends. A task's own output
is in the log of the pod that ran it, each line labelled ``[task] `` or ``[task ITEM] `` (see
:mod:`daskflow.engine.workerprocess`), which :func:`task_filter` picks out.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ..engine.workerprocess import labelled_by
from ..kube.builders import LABEL_COMPONENT, LABEL_UID
from .connection import REQUEST_TIMEOUT, Connection, RemoteError, status_of
from .runs import get

ROLES = ("runner", "scheduler", "worker")  # the order pods are shown in


class NoLogs(RemoteError):
    """A pod whose log cannot be read (yet): its container has not started, say."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 1)


@dataclass(frozen=True)
class Pod:
    name: str
    role: str  # runner, scheduler or worker
    phase: str
    container: str

    def __str__(self) -> str:
        return f"pod/{self.name}"


def pods(conn: Connection, name: str) -> list[Pod]:
    """The run's pods, runner first, then scheduler and workers."""
    uid = get(conn, name)["metadata"]["uid"]
    found = conn.call(
        lambda: conn.core.list_namespaced_pod(
            conn.namespace, label_selector=f"{LABEL_UID}={uid}", _request_timeout=REQUEST_TIMEOUT
        ),
        "list",
        "pods",
    )
    out = [_pod(item) for item in found.items]
    return sorted(out, key=lambda p: (ROLES.index(p.role) if p.role in ROLES else 9, p.name))


def _pod(item: Any) -> Pod:
    labels = item.metadata.labels or {}
    role = labels.get("dask.org/component") or labels.get(LABEL_COMPONENT) or "pod"
    containers = item.spec.containers or []
    return Pod(
        item.metadata.name,
        role,
        (item.status.phase if item.status else None) or "Unknown",
        containers[0].name if containers else "",
    )


def lines(conn: Connection, pod: Pod, *, follow: bool = False) -> Iterator[str]:
    """The lines of the pod's log; with ``follow``, until its container ends. Raises
    :class:`NoLogs` if the log cannot be read (yet)."""

    if pod.phase == "Pending":  # its container has not started: nothing to read
        raise NoLogs(f"{pod} is Pending: no log yet")

    def read() -> Any:
        try:
            return conn.core.read_namespaced_pod_log(
                pod.name,
                conn.namespace,
                container=pod.container or None,
                follow=follow,
                _preload_content=False,
                _request_timeout=None if follow else REQUEST_TIMEOUT,
            )
        except ApiException as err:
            if err.status in (400, 404):  # not started, no node yet; or gone meanwhile
                why = status_of(err).get("message") or err.reason
                raise NoLogs(f"{pod} is {pod.phase}: no log: {why}") from None
            raise

    response = conn.call(read, "get", "pods/log", pod.name)
    rest = b""
    try:
        for chunk in response.stream(amt=64 * 1024, decode_content=True):
            *complete, rest = (rest + chunk).split(b"\n")
            yield from (line.decode(errors="replace") for line in complete)
    except (HTTPError, OSError) as err:  # the pod went while its log was read
        raise NoLogs(f"{pod}: its log broke off: {err}") from None
    finally:
        response.release_conn()
    if rest:
        yield rest.decode(errors="replace")


def task_filter(task: str | None) -> Callable[[str], bool]:
    """Which lines to show: all, or those a task printed or logged."""
    if task is None:
        return lambda _line: True
    pattern = labelled_by(task)
    return lambda line: pattern.match(line) is not None


def read_all(
    conn: Connection, found: list[Pod], *, follow: bool = False
) -> Iterator[tuple[Pod, str | RemoteError]]:
    """The lines of every pod's log, pod by pod; with ``follow``, as they come until every
    pod's container has ended. A pod whose log cannot be read gives its error instead."""
    if not follow:
        for pod in found:
            try:
                for line in lines(conn, pod):
                    yield pod, line
            except RemoteError as err:
                yield pod, err
        return
    lines_q: queue.Queue[tuple[Pod, str | RemoteError] | None] = queue.Queue()

    def pump(pod: Pod) -> None:
        try:
            for line in lines(conn, pod, follow=True):
                lines_q.put((pod, line))
        except RemoteError as err:
            lines_q.put((pod, err))
        finally:
            lines_q.put(None)

    for pod in found:
        threading.Thread(target=pump, args=(pod,), daemon=True, name=f"logs {pod}").start()
    running = len(found)
    while running:
        item = lines_q.get()
        if item is None:
            running -= 1
        else:
            yield item
