"""The items of mapped tasks: following them, counting those running, fetching small results.

A map of 10,000 items must not cost 10,000 of anything in this process: the items are
followed through the status of their futures (not ``as_completed``, which costs several
asyncio tasks per future), counted in batches into
:class:`~daskflow.model.runstate.RunState` events, and their values are fetched only when
the scheduler knows them to be small.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model.events import Effects, Event, ItemsEnded, ItemsRunning, TaskEnded, TaskReported
from ..model.states import TaskState
from ..model.status import RESULT_LIMIT, now_iso, result_json
from .outcome import LIVE, AnyFuture, Outcome
from .plan import TaskPlan
from .worker import TaskFailed, TaskSkipped, describe_error

# A list of more items than this never fits the 1 KiB of a result in the status; and item
# values that take more memory than this on the workers are not fetched to check.
MAPPED_RESULT_ITEMS = RESULT_LIMIT // 2
MAPPED_RESULT_BYTES = 64 * RESULT_LIMIT


@dataclass
class MapFollower:
    """The items of one mapped task on the cluster, followed by the status of their futures
    (cheaper than ``as_completed``, which costs several asyncio tasks per future)."""

    task: TaskPlan
    futures: list[AnyFuture]
    queue: deque[tuple[int, AnyFuture]] = field(default_factory=deque)  # items not yet seen
    failed_self: int = 0  # items that failed themselves (not because of an upstream)
    cancelled: int = 0
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
                self.cancelled += 1
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

    def ended(self, time: str) -> TaskEnded:
        """How the mapped task ends, once all its items have."""
        name, total = self.task.name, len(self.futures)
        if self.first_error is not None:
            first, err = self.first_error
            how = f"{self.failed_self} of {total} items failed; item {first}: {err.message}"
            return TaskEnded(name, TaskState.FAILED, time, how, err.attempts, err.reason)
        exc = self.upstream_error
        if isinstance(exc, TaskSkipped):
            return TaskEnded(name, TaskState.SKIPPED, time, f"upstream task {exc.task!r} skipped")
        if isinstance(exc, TaskFailed):
            why = f"upstream task {exc.task!r} failed"
            return TaskEnded(name, TaskState.UPSTREAM_FAILED, time, why)
        if exc is not None:
            return TaskEnded(name, TaskState.FAILED, time, describe_error(exc), attempts=1)
        if self.cancelled:
            return TaskEnded(name, TaskState.CANCELLED, time, f"{self.cancelled} items cancelled")
        return TaskEnded(name, TaskState.SUCCEEDED, time, attempts=1)


class MapTracker:
    """The mapped tasks of one run whose items are on the cluster: it looks at their
    futures and hands what it saw to ``apply`` as events (``outcome_of`` reads how one
    item ended)."""

    def __init__(
        self,
        dask: Any,
        apply: Callable[[Event], Effects],
        outcome_of: Callable[[AnyFuture, TaskPlan], Awaitable[Outcome]],
    ) -> None:
        self._dask, self._apply, self._outcome_of = dask, apply, outcome_of
        self.followers: dict[str, MapFollower] = {}
        # The small results of maps that succeeded are fetched once the run has no task
        # left, so that the fetch does not compete with the tasks still running.
        self._succeeded: list[MapFollower] = []
        self._fetching: set[asyncio.Task[None]] = set()

    def follow(self, task: TaskPlan, futures: list[AnyFuture]) -> None:
        self.followers[task.name] = MapFollower(task, futures)

    async def scan(self, full: bool) -> int:
        """Count the items that ended since the last scan; returns how many."""
        seen = 0
        for name, follower in list(self.followers.items()):
            ok, ended = follower.take_ended(full)
            if not ok and not ended:
                continue
            seen += ok + len(ended)
            outcomes = [(i, await self._outcome_of(f, follower.task)) for i, f in ended]
            self._apply(follower.tally(ok, outcomes))
            if not follower.queue:  # all its items ended
                del self.followers[name]
                end = follower.ended(now_iso())
                if self._apply(end).ended and end.state == TaskState.SUCCEEDED:
                    self._succeeded.append(follower)
        return seen

    async def count_running(self, key_owner: Mapping[Any, tuple[str, int | None]]) -> None:
        if self.followers:
            running = await running_items(self._dask, list(self.followers), key_owner)
            for name, count in running.items():
                self._apply(ItemsRunning(name, count))

    def fetch_results(self) -> None:
        """Start fetching the small results of the maps that succeeded."""
        for follower in self._succeeded:
            task = asyncio.ensure_future(self._fetch(follower))
            self._fetching.add(task)
            task.add_done_callback(self._fetching.discard)
        self._succeeded = []

    async def _fetch(self, follower: MapFollower) -> None:
        with contextlib.suppress(Exception):
            text = await small_result(self._dask, follower.futures)
            if text is not None:
                self._apply(TaskReported(follower.task.name, result=text))

    async def finish(self, within: float) -> None:
        """Fetch the small results still to fetch, within ``within`` seconds."""
        self.fetch_results()
        if self._fetching:
            _, late = await asyncio.wait(self._fetching, timeout=within)
            for task in late:
                task.cancel()


async def small_result(dask: Any, futures: list[AnyFuture]) -> str | None:
    """The JSON text of a mapped task's result, if it is small: only item values that the
    scheduler knows to be small are fetched, so a map over big values (data frames, say)
    moves nothing here."""
    if len(futures) > MAPPED_RESULT_ITEMS:
        return None
    sizes = await dask.nbytes(keys=[f.key for f in futures], summary=False)
    if any(n < 0 for n in sizes.values()) or sum(sizes.values()) > MAPPED_RESULT_BYTES:
        return None
    return result_json(list(await dask.gather(futures)))


async def running_items(
    dask: Any, tasks: Collection[str], key_owner: Mapping[Any, tuple[str, int | None]]
) -> dict[str, int]:
    """How many items of each of ``tasks`` (mapped) run now (two scheduler calls).

    A worker holds more tasks than it has threads (Dask queues a few ahead), so only as
    many of a worker's tasks as it has threads count as running."""
    processing = await dask.processing()
    threads = await dask.nthreads()
    running: dict[str, int] = dict.fromkeys(tasks, 0)
    for worker, keys in processing.items():
        for key in list(keys)[: threads.get(worker, len(keys))]:
            owner = key_owner.get(tuple(key) if isinstance(key, list) else key)
            if owner and owner[0] in running:
                running[owner[0]] += 1
    return running
