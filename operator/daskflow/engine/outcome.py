"""What Dask tells the engine, read as the run's events: how a future ended, and what a
worker event says.

Outcomes travel as exceptions: a task that fails its last attempt raises
:class:`~daskflow.engine.worker.TaskFailed` naming itself, and Dask hands that same
exception to every dependent, which is how a dependent learns it is UpstreamFailed rather
than Failed. :func:`outcome` reads that back. The details (attempts, retries, times, a
small result) come as worker events (see :func:`daskflow.engine.worker.run_task`), which
:func:`worker_event` turns into :mod:`daskflow.model.events`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from distributed import Future
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from ..model.events import AttemptFailed, Event, TaskReported, TaskStarted, WorkerLost
from ..model.states import TaskState
from .plan import TaskPlan
from .worker import TaskCancelled, TaskFailed, TaskSkipped, describe_error

AnyFuture = Future[Any]
LIVE = frozenset({"pending", "lost"})  # Future.status of a task that has not ended
# distributed cancels every future of a client that loses its scheduler, with this reason.
SCHEDULER_LOST = "scheduler-connection-lost"
SCHEDULER_LOST_MESSAGE = (
    "lost the Dask scheduler (its pod was deleted or crashed, or the network failed): "
    "the run's tasks and results on the cluster are gone"
)


class Outcome(NamedTuple):
    state: TaskState
    message: str | None = None
    attempts: int | None = None
    error: BaseException | None = None
    scheduler_lost: bool = False  # cancelled because the client lost its scheduler


async def outcome(
    future: AnyFuture, task: TaskPlan, handles: Mapping[str, Any], stopped: bool
) -> Outcome:
    """How the task (or mapped item) of ``future`` ended. ``handles``: the engine's
    futures (or values) by task name; ``stopped``: the run is being stopped."""
    name = task.name
    if future.status == "finished":
        return Outcome(TaskState.SUCCEEDED)
    if future.status == "cancelled":
        lost = not stopped and await _cancel_reason(future) == SCHEDULER_LOST
        return Outcome(TaskState.CANCELLED, "cancelled", scheduler_lost=lost)
    try:
        exc = await _as_any(future).exception()
    except Exception as err:  # cancelled meanwhile, or the scheduler lost it
        return Outcome(TaskState.CANCELLED, f"lost: {err}")
    if exc is None:  # it finished, its value died with a worker, and Dask recomputed it
        return Outcome(TaskState.SUCCEEDED)
    if isinstance(exc, TaskFailed):
        if exc.task == name:
            return Outcome(TaskState.FAILED, exc.message, exc.attempts, exc)
        return Outcome(TaskState.UPSTREAM_FAILED, f"upstream task {exc.task!r} failed", None, exc)
    if isinstance(exc, TaskSkipped):
        why = "when is false" if exc.task == name else f"upstream task {exc.task!r} skipped"
        return Outcome(TaskState.SKIPPED, why, None, exc)
    if isinstance(exc, TaskCancelled | asyncio.CancelledError):
        return Outcome(TaskState.CANCELLED, "cancelled")
    # Anything else did not come from an attempt loop: a lost worker, say. If an
    # upstream future erred too, the error is the upstream's, handed on by Dask.
    for dep in (*task.data_deps, *((task.feed_dep,) if task.feed_dep else ())):
        handle = handles.get(dep)
        futs = handle if isinstance(handle, list) else [handle]
        if any(isinstance(f, Future) and f.status == "error" for f in futs):
            return Outcome(TaskState.UPSTREAM_FAILED, f"upstream task {dep!r} failed", None, exc)
    if isinstance(exc, KilledWorker):  # deaths that did not use the task's retries
        n = exc.allowed_failures + 1
        why = f"its worker died {n} times while running it; Dask gave up (KilledWorker)"
        return Outcome(TaskState.FAILED, why, n, TaskFailed(name, why, n, reason="WorkerDied"))
    return Outcome(TaskState.FAILED, describe_error(exc), None, exc)


def _as_any(future: AnyFuture) -> Any:
    return future  # distributed is untyped: calls on it go through here


async def _cancel_reason(future: AnyFuture) -> str | None:
    """Why distributed cancelled a future (awaiting it raises that)."""
    try:
        await future
    except FutureCancelledError as err:
        return err.reason
    except BaseException:  # anything else: not a cancellation we can explain
        return None
    return None


def worker_event(msg: Mapping[str, Any], tasks: Collection[str], now: str) -> Event | None:
    """The event a worker event of this run stands for (None: not about a task of it)."""
    name = msg.get("task")
    if not isinstance(name, str) or name not in tasks:
        return None
    kind = msg.get("event")
    if kind == "start":
        return TaskStarted(name, msg["attempt"], msg["time"])
    if kind == "lost":  # a rerun, after attempts that their worker's death ended
        return WorkerLost(name, msg["item"], msg["lost"], msg["message"], now)
    if kind == "retry":
        return AttemptFailed(name, msg["attempt"], msg["message"], now)
    if kind == "done":
        return TaskReported(name, msg["attempts"], msg["start"], msg["end"], msg["result"])
    return None
