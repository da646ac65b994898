"""What a Dask future that ended means for its task, and how a mapped task's items add up.

Outcomes travel as exceptions: a task that fails its last attempt raises
:class:`~daskflow.engine.worker.TaskFailed` naming itself, and Dask hands that same
exception to every dependent, which is how a dependent learns it is UpstreamFailed rather
than Failed. :func:`outcome` reads that back; :class:`MapFollower` follows the items of
one mapped task and turns them into :class:`~daskflow.model.runstate.RunState` events.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from distributed import Future
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from ..model.events import ItemsEnded, TaskEnded
from ..model.states import TaskState
from ..model.status import ItemCounts
from .plan import TaskPlan
from .worker import TaskCancelled, TaskFailed, TaskSkipped, describe_error

AnyFuture = Future[Any]
LIVE = frozenset({"pending", "lost"})  # Future.status of a task that has not ended
# distributed cancels every future of a client that loses its scheduler, with this reason.
SCHEDULER_LOST = "scheduler-connection-lost"


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


@dataclass
class MapFollower:
    """The items of one mapped task on the cluster, followed by the status of their futures
    (cheaper than ``as_completed``, which costs several asyncio tasks per future)."""

    task: TaskPlan
    futures: list[AnyFuture]
    queue: deque[tuple[int, AnyFuture]] = field(default_factory=deque)  # items not yet seen
    failed_self: int = 0  # items that failed themselves (not because of an upstream)
    first_error: tuple[int, TaskFailed] | None = None  # the lowest item that failed itself
    upstream_error: BaseException | None = None  # why an item could not run, if not itself

    def __post_init__(self) -> None:
        self.queue = deque(enumerate(self.futures))

    def take_ended(self, full: bool) -> tuple[int, list[tuple[int, AnyFuture]]]:
        """Items that ended since the last look: how many finished, and the others. Looks
        at the front of the queue, or at all of it when ``full``."""
        queue = self.queue
        ok = 0
        ended: list[tuple[int, AnyFuture]] = []
        while queue and queue[0][1].status not in LIVE:
            item = queue.popleft()
            if item[1].status == "finished":
                ok += 1
            else:
                ended.append(item)
        if full and queue:
            rest: deque[tuple[int, AnyFuture]] = deque()
            for item in queue:
                status = item[1].status
                if status in LIVE:
                    rest.append(item)
                elif status == "finished":
                    ok += 1
                else:
                    ended.append(item)
            self.queue = rest
        return ok, ended

    def tally(self, ok: int, ended: list[tuple[int, Outcome]]) -> ItemsEnded:
        """The event that counts ``ok`` finished items and those of ``ended``."""
        name = self.task.name
        counts = dict.fromkeys(("succeeded", "failed", "cancelled", "skipped"), 0)
        counts["succeeded"] = ok
        own: list[int] = []
        for index, (state, _, _, exc, _) in ended:
            if state == TaskState.SUCCEEDED:
                counts["succeeded"] += 1
            elif state == TaskState.CANCELLED:
                counts["cancelled"] += 1
            elif state == TaskState.SKIPPED:
                counts["skipped"] += 1
                self.upstream_error = self.upstream_error or exc
            elif isinstance(exc, TaskFailed) and exc.task == name:
                counts["failed"] += 1
                self.failed_self += 1
                own.append(index)
                if self.first_error is None or index < self.first_error[0]:
                    self.first_error = (index, exc)
            else:
                counts["failed"] += 1
                self.upstream_error = self.upstream_error or exc
        return ItemsEnded(name, failed_items=tuple(own), **counts)

    def ended(self, counts: ItemCounts, attempts: int, time: str) -> TaskEnded:
        """How the mapped task ends, once all its items have."""
        name = self.task.name
        if self.first_error is not None:
            first, err = self.first_error
            how = f"{self.failed_self} of {counts.total} items failed; item {first}: {err.message}"
            return TaskEnded(name, TaskState.FAILED, time, how, err.attempts, err.reason)
        exc = self.upstream_error
        if isinstance(exc, TaskSkipped):
            return TaskEnded(name, TaskState.SKIPPED, time, f"upstream task {exc.task!r} skipped")
        if isinstance(exc, TaskFailed):
            why = f"upstream task {exc.task!r} failed"
            return TaskEnded(name, TaskState.UPSTREAM_FAILED, time, why)
        if exc is not None:
            return TaskEnded(name, TaskState.FAILED, time, describe_error(exc), attempts=1)
        if counts.cancelled:
            return TaskEnded(name, TaskState.CANCELLED, time, f"{counts.cancelled} items cancelled")
        return TaskEnded(name, TaskState.SUCCEEDED, time, attempts=max(1, attempts))
