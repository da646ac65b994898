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
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from distributed import Client, Future, as_completed

from ..model.events import (
    Effects,
    Event,
    MapStarted,
    RunEnded,
    RunStarted,
    StopRequested,
    TaskEnded,
)
from ..model.runstate import RunState
from ..model.spec import FlowRun
from ..model.states import Phase, TaskState
from ..model.status import now_iso
from .deaths import install as install_death_plugins
from .items import MapTracker
from .outcome import LIVE, SCHEDULER_LOST_MESSAGE, AnyFuture, Outcome, outcome, worker_event
from .plan import ReadyQueue, TaskPlan, plan_flow, restore
from .release import cancel_futures
from .sink import CoalescingSink, StatusCallback
from .worker import describe_error, kill_commands, run_item, run_task

log = logging.getLogger(__name__)

DETAILS_GRACE = 2.0  # seconds to wait for the last worker events after the last future
KILL_TIMEOUT = 10.0  # seconds for the workers to kill the commands of a cancelled run
# Mapped items are followed by looking at the status of their futures (daskflow.engine.items):
# the front of each map's queue every SCAN_MIN..SCAN_MAX seconds, and the whole queue every
# FULL_SCAN(_SLOW) seconds, so that a failed item behind a slow one is seen soon too.
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
        # name -> Future | list[Future] | known value; the tasks submitted (or done before)
        self.handles, self.submitted, rerun = restore(
            self.plan, previous_status or {}, values or {}
        )
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
        self.items = MapTracker(self._dask, self._apply, self._outcome)
        self.ready = ReadyQueue(self.plan)  # what the next _pump looks at

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
        version = self.state.version
        effects = self.state.apply(event)
        if self.state.version != version:
            self.sink.poke()
        for name in effects.ended:
            self.ready.wake(self.plan.dependents[name])
            succeeded = self.state.tasks[name].state == TaskState.SUCCEEDED
            if succeeded and self.publish_prefix is not None:
                self._publish(name)
        if effects.fail_fast:
            self._trip_fail_fast()
        if effects.stop:
            self._stop.set()
        return effects

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
                if nxt is None and not self.items.followers and self._ac.is_empty():
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
                    timeout=tick if self.items.followers else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stop_wait in done:
                    break
                if nxt is not None and nxt in done:
                    first, nxt = nxt, None
                    batch = [] if first.exception() is not None else [first.result()]
                    batch += self._ac.next_batch(block=False)
                    for future in batch:
                        await self._on_done(future)
                if self.items.followers:
                    now = time.monotonic()
                    full = now >= next_full
                    if full:
                        next_full = now + full_every
                    seen = await self.items.scan(full)
                    tick = SCAN_MIN if seen else min(tick * 2, SCAN_MAX)
                    if self.state.open == 0:
                        self.items.fetch_results()
                if self.ready:
                    await self._pump()
        finally:
            stop_wait.cancel()
            if nxt is not None:
                nxt.cancel()

    async def _pump(self) -> bool:
        """Submit every task that can go now; returns whether anything changed."""
        progressed = False
        while self.ready:
            name = self.ready.pop()
            if name in self.submitted or self.state.tasks[name].state.terminal:
                continue
            if self.state.fail_fast_tripped:
                why = "not started: failFast"
                self._apply(TaskEnded(name, TaskState.CANCELLED, now_iso(), why))
                progressed = True
                continue
            task = self.plan.tasks[name]
            blocked = task.blocked_by(self.state.tasks, self.handles)
            if blocked is None:
                continue
            progressed = True
            if blocked:
                state, upstream = blocked
                why = "failed" if state == TaskState.UPSTREAM_FAILED else state.lower()
                self._apply(TaskEnded(name, state, now_iso(), f"upstream task {upstream!r} {why}"))
            else:
                try:
                    await self._submit(task)
                finally:
                    self.ready.wake(self.plan.dependents[name])
        return progressed

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
            feed = self.handles[task.feed_dep] if task.feed_dep else None
            items = self.plan.fan_out(task, gathered, feed)
        except Exception as exc:
            end = TaskEnded(name, TaskState.FAILED, now_iso(), describe_error(exc), attempts=1)
            self._apply(end)
            return
        if items is None:
            self._apply(TaskEnded(name, TaskState.SKIPPED, now_iso(), "when is false"))
            return
        futs: list[AnyFuture] = []
        if items:
            futs = self._dask.map(
                run_item,
                items,
                range(len(items)),
                rt=task.runtime,
                upstream=upstream,
                key=[(f"{name}-{self.run_id}", i) for i in range(len(items))],
                pure=False,
            )
            self.items.follow(task, futs)
        self.handles[name] = self._futures[name] = futs
        for i, fut in enumerate(futs):
            self.key_owner[fut.key] = (name, i)
        self._apply(MapStarted(name, len(items), now_iso()))

    async def _value_of(self, name: str) -> Any:
        handle = self.handles.get(name)
        if isinstance(handle, Future):
            return await handle
        if isinstance(handle, list) and handle and isinstance(handle[0], Future):
            return await self._dask.gather(handle)
        return handle

    # -- outcomes ------------------------------------------------------------------------
    async def _outcome(self, future: AnyFuture, task: TaskPlan) -> Outcome:
        result = await outcome(future, task, self.handles, self._stop.is_set())
        if result.scheduler_lost:
            self.cancel(SCHEDULER_LOST_MESSAGE, phase=Phase.FAILED, reason="SchedulerLost")
        return result

    async def _on_done(self, future: AnyFuture) -> None:
        """A single task's future ended (the items of a map are followed by self.items)."""
        owner = self.key_owner.get(future.key)
        if owner is not None:
            task = self.plan.tasks[owner[0]]
            end = await self._outcome(future, task)
            reason = getattr(end.error, "reason", None)
            self._apply(
                TaskEnded(task.name, end.state, now_iso(), end.message, end.attempts, reason)
            )

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A worker event of this run."""
        change = worker_event(event[1], self.plan.tasks, now_iso())
        if change is not None:
            self._apply(change)
            if not self.state.awaiting_reports:
                self._reports_in.set()

    async def _poll_running(self) -> None:
        """Count the running items of mapped tasks, about once a second."""
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):  # the scheduler went away: _drive will see
                await self.items.count_running(self.key_owner)

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
        await self.items.finish(DETAILS_GRACE if stop is not None else KILL_TIMEOUT)
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
