"""The flow engine: runs one FlowRun's graph on a ``distributed`` client.

Tasks whose inputs are futures are submitted up front, with their upstream futures as
arguments, so values move worker to worker and never through this process. Only what the
client must decide on comes back here: the list a ``map`` fans out over (when it is the
result of a single task) and the ``when`` of a mapped task. A ``dependsOn`` that carries
no data is an ordering gate kept here, so no data moves for it either.

:class:`FlowEngine` is a Dask adapter and nothing else: the frozen plan
(:mod:`daskflow.engine.plan`) says what waits for what; the engine turns futures and
worker events into :mod:`daskflow.model.runstate` events, and acts on what the
:class:`~daskflow.model.runstate.RunState` answers (tasks that ended, failFast, a stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from distributed import Client, Future, as_completed

from ..model.events import (
    AttemptFailed,
    Effects,
    Event,
    ItemsRunning,
    MapStarted,
    RunEnded,
    RunStarted,
    StopRequested,
    TaskEnded,
    TaskReported,
    TaskStarted,
    WorkerLost,
)
from ..model.refs import substitute
from ..model.runstate import RunState
from ..model.spec import FlowRun
from ..model.states import Phase, TaskState
from ..model.status import RESULT_LIMIT, now_iso, result_json
from .deaths import install as install_death_plugins
from .outcome import LIVE, AnyFuture, MapFollower, Outcome, outcome
from .plan import TaskPlan, plan_flow
from .release import cancel_futures
from .sink import CoalescingSink, StatusCallback
from .worker import describe_error, kill_commands, run_item, run_task, truthy

log = logging.getLogger(__name__)

DETAILS_GRACE = 2.0  # seconds to wait for the last worker events after the last future
KILL_TIMEOUT = 10.0  # seconds for the workers to kill the commands of a cancelled run
# A list of more items than this never fits the 1 KiB of a result in the status; and item
# values that take more memory than this on the workers are not fetched to check.
MAPPED_RESULT_ITEMS = RESULT_LIMIT // 2
MAPPED_RESULT_BYTES = 64 * RESULT_LIMIT
SCHEDULER_LOST_MESSAGE = (
    "lost the Dask scheduler (its pod was deleted or crashed, or the network failed): "
    "the run's tasks and results on the cluster are gone"
)
# Mapped items are followed by looking at the status of their futures: the front of each
# map's queue every SCAN_MIN..SCAN_MAX seconds, and the whole queue every FULL_SCAN(_SLOW)
# seconds, so that a failed item behind a slow one is seen soon too.
SCAN_MIN = 0.01
SCAN_MAX = 0.05
FULL_SCAN = 0.25  # with failFast, which must hear of a failure soon
FULL_SCAN_SLOW = 1.0


class FlowEngine:
    """Executes one FlowRun on ``client`` (an asynchronous ``distributed.Client``).

    ``on_status`` receives the status object, coalesced to at most one call per
    ``status_interval`` (phase changes at once, and always once at the end).
    ``previous_status`` is the status of an earlier attempt at this run, and ``values``
    holds results of tasks it finished: those tasks are not run again.
    With ``publish_prefix``, the value of every task that succeeds is published on the
    cluster as the Dask dataset ``publish_prefix + name`` (a future, or a list of futures for
    a mapped task), so that a later engine on the same cluster can take it as a value.
    With ``keep_results``, the full value of every task that succeeded is fetched here at
    the end of the run, for :meth:`results`.
    """

    def __init__(
        self,
        flow: FlowRun,
        client: Client,
        *,
        on_status: StatusCallback | None = None,
        status_interval: float = 1.0,
        run_id: str | None = None,
        previous_status: Mapping[str, Any] | None = None,
        values: Mapping[str, Any] | None = None,
        publish_prefix: str | None = None,
        keep_results: bool = False,
    ) -> None:
        self.flow = flow
        self.client = client
        self._dask: Any = client  # distributed is untyped: calls on it go through here
        self.plan = plan_flow(flow, run_id or uuid.uuid4().hex[:10])
        self.run_id, self.topic = self.plan.run_id, self.plan.topic
        self.publish_prefix = publish_prefix
        self.keep_results = keep_results
        self._results: dict[str, Any] = {}
        self.handles: dict[str, Any] = {}  # name -> Future | list[Future] | known value
        self.submitted: set[str] = set()
        rerun = self._restore(previous_status or {}, values or {})
        self.state = RunState.from_dict(
            previous_status or {},
            [t.name for t in flow.spec.tasks],
            mapped=self.plan.mapped,
            fail_fast=flow.spec.fail_fast,
            rerun=rerun,
        )
        self.sink = CoalescingSink(
            self.state.to_dict,
            lambda: self.state.version,
            on_status,
            status_interval,
            on_error=self._on_status_error,
        )
        self.key_owner: dict[Any, tuple[str, int | None]] = {}
        self._futures: dict[str, list[AnyFuture]] = {}  # of each task submitted
        self._ac: Any = None
        self._stop = asyncio.Event()
        self._reports_in = asyncio.Event()  # no task awaits its worker's report
        self._background: set[asyncio.Task[Any]] = set()
        self._result_tasks: set[asyncio.Task[Any]] = set()  # small mapped results to fetch
        self._maps: dict[str, MapFollower] = {}  # mapped tasks whose items are followed
        # Small mapped results are fetched once the run has no task left, so that the
        # fetch does not compete with the tasks still running.
        self._deferred_results: list[tuple[str, list[AnyFuture]]] = []
        # Tasks to look at in the next _pump (heap of topological ranks): at first all of
        # them, then the dependents of a task that ended or got a handle.
        self._candidates: list[int] = list(range(len(self.plan.order)))
        self._queued: set[str] = set(self.plan.order)

    # -- public --------------------------------------------------------------------------
    def cancel(
        self,
        message: str = "cancelled",
        *,
        phase: Phase = Phase.CANCELLED,
        reason: str = "Cancelled",
    ) -> None:
        """Stop the run: running tasks are cancelled, unfinished ones end Cancelled."""
        self._apply(StopRequested(message, phase, reason))

    def status(self) -> dict[str, Any]:
        return self.state.to_dict()

    def results(self) -> dict[str, Any]:
        """After :meth:`run`, task name -> full value (not the status's 1 KiB copy) of every
        task that succeeded; a mapped task's value is the list of its item results, in
        order. Needs ``keep_results=True``: values otherwise stay on the cluster."""
        if not self.keep_results:
            raise RuntimeError("FlowEngine.results() needs FlowEngine(..., keep_results=True)")
        return dict(self._results)

    async def run(self) -> dict[str, Any]:
        """Run the flow to a terminal phase and return the final status."""
        loop = asyncio.get_running_loop()
        self.sink.start()
        self._apply(RunStarted(now_iso()))
        self.sink.poke(urgent=True)
        self._dask.subscribe_topic(self.topic, self._on_event)
        await install_death_plugins(self._dask)
        seconds = self.flow.spec.deadline_seconds
        deadline = None
        if seconds is not None:
            message = f"deadline of {seconds:g}s exceeded"
            deadline = loop.call_later(
                seconds, lambda: self.cancel(message, phase=Phase.FAILED, reason="DeadlineExceeded")
            )
        poller = loop.create_task(self._poll_running())
        try:
            await self._drive()
        except asyncio.CancelledError:
            self.cancel("cancelled")
            await asyncio.shield(self._finish())
            raise
        except Exception as exc:  # the cluster went away, say: end the run, never hang
            log.exception("flow %s: engine error", self.flow.name)
            self.cancel(f"engine error: {exc}", phase=Phase.FAILED, reason="EngineError")
        finally:
            poller.cancel()
            if deadline is not None:
                deadline.cancel()
        await self._finish()
        return self.state.to_dict()

    # -- state -----------------------------------------------------------------------------
    def _apply(self, event: Event) -> Effects:
        """Apply an event to the run's state and act on what follows from it."""
        effects = self.state.apply(event)
        for name in effects.ended:
            self._wake(self.plan.dependents[name])
            succeeded = self.state.tasks[name].state == TaskState.SUCCEEDED
            if succeeded and self.publish_prefix is not None:
                self._publish(name)
        if effects.ended:
            self.sink.poke()
        if effects.fail_fast:
            self._trip_fail_fast()
        if effects.stop:
            self._stop.set()
        return effects

    def _end_task(self, name: str, result: Outcome) -> None:
        if result.scheduler_lost:
            self.cancel(SCHEDULER_LOST_MESSAGE, phase=Phase.FAILED, reason="SchedulerLost")
        reason = getattr(result.error, "reason", None)
        self._apply(
            TaskEnded(name, result.state, now_iso(), result.message, result.attempts, reason)
        )

    # -- driving -------------------------------------------------------------------------
    async def _drive(self) -> None:
        make_ac: Any = as_completed
        self._ac = make_ac(loop=self._dask.loop, with_results=False, raise_errors=False)
        if self._stop.is_set():  # cancelled before it started: submit nothing
            return
        await self._pump()
        stop_wait = asyncio.ensure_future(self._stop.wait())
        nxt: asyncio.Future[Any] | None = None  # one pending read of as_completed
        tick = SCAN_MIN
        full_every = FULL_SCAN if self.flow.spec.fail_fast else FULL_SCAN_SLOW
        next_full = time.monotonic() + full_every
        try:
            while self.state.open > 0 and not self._stop.is_set():
                if nxt is None and not self._maps and self._ac.is_empty():
                    if not await self._pump():
                        self._apply(StopRequested.internal("no task could be scheduled"))
                        break
                    continue
                if nxt is None and not self._ac.is_empty():
                    nxt = asyncio.ensure_future(self._ac.__anext__())
                waiting: set[asyncio.Future[Any]] = {stop_wait}
                if nxt is not None:
                    waiting.add(nxt)
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=tick if self._maps else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stop_wait in done:
                    break
                changed = False
                if nxt is not None and nxt in done:
                    first, nxt = nxt, None
                    batch = [] if first.exception() is not None else [first.result()]
                    batch += self._ac.next_batch(block=False)
                    for future in batch:
                        await self._on_done(future)
                    changed = bool(batch)
                if self._maps:
                    now = time.monotonic()
                    full = now >= next_full
                    if full:
                        next_full = now + full_every
                    seen = await self._scan_maps(full)
                    tick = SCAN_MIN if seen else min(tick * 2, SCAN_MAX)
                    changed |= seen > 0
                if self._candidates:
                    await self._pump()
                if changed:
                    self.sink.poke()
        finally:
            stop_wait.cancel()
            if nxt is not None:
                nxt.cancel()

    async def _pump(self) -> bool:
        """Submit every task that can go now; returns whether anything changed."""
        progressed = False
        candidates = self._candidates
        while candidates:
            name = self.plan.order[heapq.heappop(candidates)]
            self._queued.discard(name)
            if name in self.submitted or self.state.tasks[name].state.terminal:
                continue
            task = self.plan.tasks[name]
            blocked = () if self.state.fail_fast_tripped else self._blocked_by(task)
            if blocked is None:
                continue
            progressed = True
            if self.state.fail_fast_tripped:
                self._apply(
                    TaskEnded(name, TaskState.CANCELLED, now_iso(), "not started: failFast")
                )
            elif blocked:
                state, upstream = blocked
                why = "failed" if state == TaskState.UPSTREAM_FAILED else state.lower()
                self._apply(TaskEnded(name, state, now_iso(), f"upstream task {upstream!r} {why}"))
            else:
                try:
                    await self._submit(task)
                finally:
                    self._wake(self.plan.dependents[name])
        return progressed

    def _wake(self, names: tuple[str, ...]) -> None:
        """Have the next _pump look at these tasks."""
        for name in names:
            if name not in self._queued:
                self._queued.add(name)
                heapq.heappush(self._candidates, self.plan.rank[name])

    def _blocked_by(self, task: TaskPlan) -> tuple[TaskState, str] | tuple[()] | None:
        """None: wait. (): ready. (state, task): will never run, because of ``task``."""
        tasks = self.state.tasks
        for dep in task.upstream:
            state = tasks[dep].state
            if state in (TaskState.FAILED, TaskState.UPSTREAM_FAILED):
                return TaskState.UPSTREAM_FAILED, dep
            if state in (TaskState.SKIPPED, TaskState.CANCELLED):
                return state, dep
        if not all(tasks[dep].state.terminal for dep in task.gate_deps):
            return None
        feed = (task.feed_dep,) if task.feed_dep else ()
        if not all(dep in self.handles for dep in (*task.data_deps, *feed)):
            return None
        return ()

    async def _submit(self, task: TaskPlan) -> None:
        name = task.name
        self.submitted.add(name)
        upstream = {d: self.handles[d] for d in task.data_deps}
        if not task.mapped:
            fut = self._dask.submit(
                run_task, task.runtime, upstream, key=f"{name}-{self.run_id}", pure=False
            )
            self.handles[name] = fut
            self._futures[name] = [fut]
            self.key_owner[fut.key] = (name, None)
            self._ac.update([fut])
            return
        try:
            gathered = {dep: await self._value_of(dep) for dep in task.gate_deps}
            lookup = self.plan.client_lookup(gathered)
            if task.spec.when is not None and not truthy(substitute(task.spec.when, lookup)):
                self._apply(TaskEnded(name, TaskState.SKIPPED, now_iso(), "when is false"))
                return
            if task.feed_dep is not None:  # futures of the items of a mapped task
                items = list(self.handles[task.feed_dep])
            else:
                items = self.plan.map_items(task, lookup)
        except Exception as exc:
            self._apply(
                TaskEnded(name, TaskState.FAILED, now_iso(), describe_error(exc), attempts=1)
            )
            return
        if not items:
            self.handles[name] = []
            self._apply(MapStarted(name, 0, now_iso()))
            return
        futs = self._dask.map(
            run_item,
            items,
            range(len(items)),
            rt=task.runtime,
            upstream=upstream,
            key=[(f"{name}-{self.run_id}", i) for i in range(len(items))],
            pure=False,
        )
        self.handles[name] = futs
        self._futures[name] = futs
        for i, fut in enumerate(futs):
            self.key_owner[fut.key] = (name, i)
        self._maps[name] = MapFollower(task, futs)
        self._apply(MapStarted(name, len(items), now_iso()))

    async def _value_of(self, name: str) -> Any:
        handle = self.handles.get(name)
        if isinstance(handle, Future):
            return await handle
        if isinstance(handle, list) and handle and isinstance(handle[0], Future):
            return await self._dask.gather(handle)
        return handle

    # -- outcomes ------------------------------------------------------------------------
    async def _on_done(self, future: AnyFuture) -> None:
        """A single task's future ended (mapped items are followed by _scan_maps)."""
        owner = self.key_owner.get(future.key)
        if owner is not None:
            task = self.plan.tasks[owner[0]]
            self._end_task(
                task.name, await outcome(future, task, self.handles, self._stop.is_set())
            )

    async def _scan_maps(self, full: bool) -> int:
        """Count the mapped items that ended since the last scan; returns how many."""
        seen = 0
        for name, follower in list(self._maps.items()):
            ok, ended = follower.take_ended(full)
            if not ok and not ended:
                continue
            seen += ok + len(ended)
            stopped = self._stop.is_set()
            outcomes = [
                (index, await outcome(fut, follower.task, self.handles, stopped))
                for index, fut in ended
            ]
            if any(o.scheduler_lost for _, o in outcomes):
                self.cancel(SCHEDULER_LOST_MESSAGE, phase=Phase.FAILED, reason="SchedulerLost")
            self._apply(follower.tally(ok, outcomes))
            rec = self.state.tasks[name]
            if rec.items is not None and rec.items.done >= rec.items.total:
                effects = self._apply(follower.ended(rec.items, rec.attempts, now_iso()))
                small = rec.items.total <= MAPPED_RESULT_ITEMS
                if effects.ended and rec.state == TaskState.SUCCEEDED and small:
                    self._deferred_results.append((name, follower.futures))
                    if self.state.open == 0:
                        self._fetch_mapped_results()
            if not follower.queue:
                self._maps.pop(name, None)
        return seen

    def _fetch_mapped_results(self) -> None:
        for name, futures in self._deferred_results:
            task = asyncio.ensure_future(self._mapped_result(name, futures))
            self._result_tasks.add(task)
            task.add_done_callback(self._result_tasks.discard)
        self._deferred_results = []

    async def _mapped_result(self, name: str, futures: list[AnyFuture]) -> None:
        """Put a small mapped result into the status, as for any task. Only item values
        that the scheduler knows to be small are fetched, so a map over big values (data
        frames, say) moves nothing here."""
        with contextlib.suppress(Exception):
            sizes = await self._dask.nbytes(keys=[f.key for f in futures], summary=False)
            if all(n >= 0 for n in sizes.values()) and sum(sizes.values()) <= MAPPED_RESULT_BYTES:
                text = result_json(list(await self._dask.gather(futures)))
                if text is not None:
                    self._apply(TaskReported(name, result=text))
                    self.sink.poke()

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A worker event of this run (see daskflow.engine.worker.run_task)."""
        msg = event[1]
        name = msg.get("task")
        if not isinstance(name, str) or name not in self.plan.tasks:
            return
        kind = msg.get("event")
        if kind == "start":
            self._apply(TaskStarted(name, msg["attempt"], msg["time"]))
        elif kind == "lost":  # a rerun, after attempts that their worker's death ended
            self._apply(WorkerLost(name, msg["item"], msg["lost"], msg["message"], now_iso()))
        elif kind == "retry":
            self._apply(AttemptFailed(name, msg["attempt"], msg["message"], now_iso()))
        elif kind == "done":
            self._apply(
                TaskReported(name, msg["attempts"], msg["start"], msg["end"], msg["result"])
            )
            if not self.state.awaiting_reports:
                self._reports_in.set()
        self.sink.poke()

    async def _poll_running(self) -> None:
        """Count running mapped items, about once a second (cheap: two scheduler calls).

        A worker holds more tasks than it has threads (Dask queues a few ahead), so only
        as many of a worker's tasks as it has threads count as running."""
        while True:
            await asyncio.sleep(1.0)
            active = [n for n, r in self.state.tasks.items() if r.items and not r.state.terminal]
            if not active:
                continue
            try:
                processing = await self._dask.processing()
                threads = await self._dask.nthreads()
            except Exception:  # the scheduler went away; the main loop will notice
                continue
            running: dict[str, int] = dict.fromkeys(active, 0)
            for worker, keys in processing.items():
                for key in list(keys)[: threads.get(worker, len(keys))]:
                    owner = self.key_owner.get(tuple(key) if isinstance(key, list) else key)
                    if owner and owner[0] in running:
                        running[owner[0]] += 1
            version = self.state.version
            for name, count in running.items():
                self._apply(ItemsRunning(name, count))
            if self.state.version != version:
                self.sink.poke()

    # -- stopping ------------------------------------------------------------------------
    def _trip_fail_fast(self) -> None:
        """failFast: start nothing new. Single tasks already running on a worker finish."""
        doomed: list[AnyFuture] = []
        for name, futures in self._futures.items():
            state = self.state.tasks[name].state
            if state.terminal or (
                state in (TaskState.RUNNING, TaskState.RETRYING)
                and not self.plan.tasks[name].mapped
            ):
                continue
            doomed.extend(f for f in futures if f.status in LIVE)
        if doomed:
            cancel_futures(self.client, doomed, "failFast")

    def _publish(self, name: str) -> None:
        handle = self.handles.get(name)
        if not isinstance(handle, Future | list):
            return
        dataset = {f"{self.publish_prefix}{name}": handle}
        task = asyncio.ensure_future(self._dask.publish_dataset(override=True, **dataset))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_status_error(self, exc: BaseException) -> None:
        log.error("flow %s: status delivery failed: %s", self.flow.name, exc)
        self.cancel(f"status delivery failed: {exc}", phase=Phase.FAILED, reason="StatusError")

    async def _finish(self) -> None:
        stop = self.state.stop
        if stop is not None:
            live = [f for futs in self._futures.values() for f in futs if f.status in LIVE]
            with contextlib.suppress(Exception):
                cancel_futures(self.client, live, stop.message)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._dask.run(kill_commands, self.topic), KILL_TIMEOUT)
        elif self.state.awaiting_reports:
            self._reports_in.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reports_in.wait(), DETAILS_GRACE)
        self._fetch_mapped_results()
        if self._result_tasks:
            timeout = DETAILS_GRACE if stop is not None else KILL_TIMEOUT
            _, late = await asyncio.wait(self._result_tasks, timeout=timeout)
            for task in late:
                task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(Exception):
            self._dask.unsubscribe_topic(self.topic)
        self._apply(RunEnded(now_iso()))
        await self.sink.close()
        if self.keep_results:
            for name, rec in self.state.tasks.items():
                if rec.state == TaskState.SUCCEEDED and name in self.handles:
                    with contextlib.suppress(Exception):  # its value died with the cluster
                        self._results[name] = await self._value_of(name)
        self._futures.clear()
        self.handles.clear()

    # -- resume --------------------------------------------------------------------------
    def _restore(self, previous: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
        """Take the values of the tasks an earlier attempt at this run finished; returns
        the tasks that succeeded but whose value is gone: they run again."""
        rerun: list[str] = []
        for name, rec in (previous.get("tasks") or {}).items():
            state = TaskState(rec.get("state") or TaskState.PENDING)
            if name not in self.plan.tasks or not state.terminal or state == TaskState.CANCELLED:
                continue
            if state == TaskState.SUCCEEDED:
                if name in values:
                    self.handles[name] = values[name]
                elif "result" in rec and not self.plan.tasks[name].mapped:
                    self.handles[name] = rec["result"]
                else:
                    rerun.append(name)
                    continue
            self.submitted.add(name)
        return rerun
