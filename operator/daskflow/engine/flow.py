"""The flow engine: runs one FlowRun's graph on a ``distributed`` client and keeps its status.

Tasks whose inputs are futures are submitted up front, with their upstream futures as
arguments, so values move worker to worker and never through this process. Only what the
client must decide on comes back here: the list a ``map`` fans out over (when it is the
result of a single task) and the ``when`` of a mapped task. A ``dependsOn`` that carries
no data is an ordering gate kept here, so no data moves for it either.

Outcomes travel as exceptions: a task that fails its last attempt raises
:class:`TaskFailed` naming itself, and Dask hands that same exception to every dependent,
which is how a dependent learns it is UpstreamFailed rather than Failed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Future, as_completed
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from ..model.graph import (
    REFERENCING_FIELDS,
    referenced_tasks,
    task_dependencies,
    topological_order,
)
from ..model.refs import Ref, iter_refs, substitute
from ..model.spec import FlowRun, TaskSpec
from ..model.states import Phase, TaskState
from ..model.status import FAILED_ITEMS_LIMIT, RESULT_LIMIT, ItemCounts, StatusBook
from .deaths import install as install_death_plugins
from .release import cancel_futures
from .sink import CoalescingSink, StatusCallback
from .worker import (
    TaskCancelled,
    TaskFailed,
    TaskRuntime,
    TaskSkipped,
    describe_error,
    kill_commands,
    result_json,
    run_item,
    run_task,
    truthy,
)

log = logging.getLogger(__name__)

DETAILS_GRACE = 2.0  # seconds to wait for the last worker events after the last future
KILL_TIMEOUT = 10.0  # seconds for the workers to kill the commands of a cancelled run
# A list of more items than this never fits the 1 KiB of a result in the status; and item
# values that take more memory than this on the workers are not fetched to check.
MAPPED_RESULT_ITEMS = RESULT_LIMIT // 2
MAPPED_RESULT_BYTES = 64 * RESULT_LIMIT

AnyFuture = Future[Any]
_LIVE = frozenset({"pending", "lost"})  # Future.status of a task that has not ended
# distributed cancels every future of a client that loses its scheduler, with this reason.
SCHEDULER_LOST = "scheduler-connection-lost"
SCHEDULER_LOST_MESSAGE = (
    "lost the Dask scheduler (its pod was deleted or crashed, or the network failed): "
    "the run's tasks and results on the cluster are gone"
)
# Mapped items are followed by looking at the status of their futures, not through
# ``as_completed`` (which costs several asyncio tasks per future): the front of each map's
# queue every SCAN_MIN..SCAN_MAX seconds, and the whole queue every FULL_SCAN(_SLOW) s, so
# that a failed item behind a slow one is seen soon too.
SCAN_MIN = 0.01
SCAN_MAX = 0.05
FULL_SCAN = 0.25  # with failFast, which must hear of a failure soon
FULL_SCAN_SLOW = 1.0


@dataclass
class _Node:
    spec: TaskSpec
    data_deps: list[str]  # referenced by the task's inputs: their futures are handed to it
    gate_deps: list[str]  # finished here before the task is submitted (values read here)
    feed_dep: str | None  # a mapped task this mapped task fans out over, item by item
    mapped: bool
    submitted: bool = False
    items: ItemCounts | None = None
    own_failed: list[int] = field(default_factory=list)  # lowest failed item indices
    failed_self: int = 0  # items that failed themselves (not because of an upstream)
    first_error: tuple[int, TaskFailed] | None = None  # the lowest item that failed itself
    upstream_error: BaseException | None = None  # why an item could not run, if not itself
    futures: list[AnyFuture] = field(default_factory=list)
    queue: deque[tuple[int, AnyFuture]] = field(default_factory=deque)  # items not yet seen


class FlowEngine:
    """Executes one FlowRun on ``client`` (an asynchronous ``distributed.Client``).

    ``on_status`` receives the status object, coalesced to at most one call per
    ``status_interval`` (phase changes at once, and always once at the end). ``values``
    holds results of tasks finished earlier (a resumed run): those tasks are not run again.
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
        self.keep_results = keep_results
        self._results: dict[str, Any] = {}
        self.client = client
        self._dask: Any = client  # distributed is untyped: calls on it go through here
        self.run_id = run_id or uuid.uuid4().hex[:10]
        self.topic = f"daskflow-{self.run_id}"
        self.book = StatusBook([t.name for t in flow.spec.tasks])
        self.publish_prefix = publish_prefix
        self.sink = CoalescingSink(
            self.book.to_dict,
            lambda: self.book.version,
            on_status,
            status_interval,
            on_error=self._on_status_error,
        )
        self.nodes: dict[str, _Node] = {}
        graph: dict[str, list[str]] = {}
        mapped_names = {t.name for t in flow.spec.tasks if t.map is not None}
        for task in flow.spec.tasks:
            mapped = task.map is not None
            data = referenced_tasks(task, ("args", "kwargs", "command", "env"))
            gate: list[str] = []
            feed = None
            if not mapped:
                data += referenced_tasks(task, ("when",))
            else:
                # A mapped task's `when` and the list it fans out over are decided here,
                # except a fan-out over a mapped task: that one goes item by item.
                gate += referenced_tasks(task, ("when",))
                map_refs = referenced_tasks(task, ("map",))
                if isinstance(task.map, str) and map_refs and map_refs[0] in mapped_names:
                    feed = map_refs[0]
                else:
                    gate += map_refs
            data = list(dict.fromkeys(data))
            # Values read here are gates even when the task takes them as inputs too; a
            # dependsOn on an input (or on the feed) needs no gate: Dask orders those.
            order_only = [d for d in task.depends_on if d not in data and d != feed]
            gate = list(dict.fromkeys([*gate, *order_only]))
            self.nodes[task.name] = _Node(task, data, gate, feed, mapped)
            graph[task.name] = task_dependencies(task)
        self.order = topological_order(graph)
        self._rank = {name: i for i, name in enumerate(self.order)}
        self._dependents: dict[str, list[str]] = {name: [] for name in self.nodes}
        for name, node in self.nodes.items():
            feeds = [node.feed_dep] if node.feed_dep else []
            for dep in dict.fromkeys([*node.gate_deps, *node.data_deps, *feeds]):
                self._dependents[dep].append(name)
        self.handles: dict[str, Any] = {}  # name -> Future | list[Future] | known value
        self.key_owner: dict[Any, tuple[str, int | None]] = {}
        self._ac: Any = None
        self._stop = asyncio.Event()
        self._stop_phase = Phase.CANCELLED
        self._stop_reason = "Cancelled"
        self._stop_message = "cancelled"
        self._fail_fast_tripped = False
        self._dirty = True  # a task finished (or a handle appeared): worth a _pump
        self._awaiting_details: set[str] = set()
        self._lost: dict[tuple[str, int | None], int] = {}  # (task, item) -> lost attempts
        self._details_seen: set[str] = set()
        self._details_done = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._result_tasks: set[asyncio.Task[Any]] = set()  # small mapped results to fetch
        self._maps: dict[str, _Node] = {}  # mapped tasks whose items are being followed
        # Small mapped results are fetched once the run has no task left, so that the
        # fetch does not compete with the tasks still running.
        self._deferred_results: list[tuple[str, list[AnyFuture]]] = []
        self._restore(previous_status or {}, values or {})
        # Tasks to look at in the next _pump (heap of topological ranks): at first all of
        # them, then the dependents of a task that ended or got a handle.
        self._candidates: list[int] = list(range(len(self.order)))
        self._queued: set[str] = set(self.order)
        self._open = len(self.book.unfinished())  # tasks not yet terminal

    # -- public --------------------------------------------------------------------------
    def cancel(
        self,
        message: str = "cancelled",
        *,
        phase: Phase = Phase.CANCELLED,
        reason: str = "Cancelled",
    ) -> None:
        """Stop the run: running tasks are cancelled, unfinished ones end Cancelled."""
        if not self._stop.is_set():
            self._stop_phase, self._stop_reason, self._stop_message = phase, reason, message
            self._stop.set()

    def status(self) -> dict[str, Any]:
        return self.book.to_dict()

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
        self.book.mark_phase(Phase.RUNNING)
        self.sink.poke(urgent=True)
        self._dask.subscribe_topic(self.topic, self._on_event)
        await install_death_plugins(self._dask)
        deadline = None
        if self.flow.spec.deadline_seconds is not None:
            deadline = loop.call_later(
                self.flow.spec.deadline_seconds,
                lambda: self.cancel(
                    f"deadline of {self.flow.spec.deadline_seconds:g}s exceeded",
                    phase=Phase.FAILED,
                    reason="DeadlineExceeded",
                ),
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
        return self.book.to_dict()

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
            while self._open > 0 and not self._stop.is_set():
                if nxt is None and not self._maps and self._ac.is_empty():
                    if not await self._pump():
                        self._abandon("no task could be scheduled (internal error)")
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

    async def _scan_maps(self, full: bool) -> int:
        """Count the mapped items that ended since the last scan; returns how many."""
        seen = 0
        for name, node in list(self._maps.items()):
            queue = node.queue
            ok = 0
            ended: list[tuple[int, AnyFuture]] = []
            while queue and queue[0][1].status not in _LIVE:
                item = queue.popleft()
                if item[1].status == "finished":
                    ok += 1
                else:
                    ended.append(item)
            if full and queue:
                rest: deque[tuple[int, AnyFuture]] = deque()
                for item in queue:
                    status = item[1].status
                    if status in _LIVE:
                        rest.append(item)
                    elif status == "finished":
                        ok += 1
                    else:
                        ended.append(item)
                node.queue = rest
            if not ok and not ended:
                continue
            seen += ok + len(ended)
            counts = node.items
            assert counts is not None
            counts.succeeded += ok
            for index, future in ended:
                await self._on_item(node, index, future)
            self._items_changed(node)
            if not node.queue:
                self._maps.pop(name, None)
        return seen

    def _static_refs(self, task: TaskSpec) -> dict[str, Any]:
        """The values of the ``$(params.X)`` and ``$(flowrun.X)`` references of a task."""
        out: dict[str, Any] = {}
        for name in REFERENCING_FIELDS:
            for ref in iter_refs(getattr(task, name)):
                if ref.kind in ("params", "flowrun"):
                    out[f"{ref.kind}.{ref.name}"] = self._static_value(ref)
        return out

    def _static_value(self, ref: Ref) -> Any:
        if ref.kind == "params":
            return self.flow.spec.parameters[ref.name]
        return self.flow.name if ref.name == "name" else self.flow.namespace

    def _spec_runtime(self, node: _Node) -> TaskRuntime:
        t = node.spec
        return TaskRuntime(
            name=t.name,
            topic=self.topic,
            call=t.call,
            command=tuple(t.command) if t.command is not None else None,
            args=tuple(t.args),
            kwargs=t.kwargs,
            env=t.env,
            when=None if node.mapped else t.when,
            retries=t.retries,
            retry_delay=t.retry_delay_seconds,
            retry_backoff=t.retry_backoff,
            retry_jitter=t.retry_jitter,
            timeout=t.timeout_seconds,
            report=not node.mapped,
            static=self._static_refs(t),
        )

    async def _pump(self) -> bool:
        """Submit every task that can go now; returns whether anything changed."""
        self._dirty = False
        progressed = False
        candidates = self._candidates
        while candidates:
            name = self.order[heapq.heappop(candidates)]
            self._queued.discard(name)
            node = self.nodes[name]
            if node.submitted or self.book.tasks[name].state.terminal:
                continue
            if self._fail_fast_tripped:
                progressed |= self._mark(name, TaskState.CANCELLED, "not started: failFast")
                continue
            blocked = self._blocked_by(node)
            if blocked is None:
                continue
            if blocked:
                state, upstream = blocked
                why = "failed" if state == TaskState.UPSTREAM_FAILED else state.lower()
                progressed |= self._mark(name, state, f"upstream task {upstream!r} {why}")
                continue
            await self._submit(node)
            progressed = True
        return progressed

    def _wake(self, names: list[str]) -> None:
        """Have the next _pump look at these tasks."""
        for name in names:
            if name not in self._queued:
                self._queued.add(name)
                heapq.heappush(self._candidates, self._rank[name])

    def _blocked_by(self, node: _Node) -> tuple[TaskState, str] | tuple[()] | None:
        """None: wait. (): ready. (state, task): will never run, because of ``task``."""
        feed = [node.feed_dep] if node.feed_dep else []
        for dep in [*node.gate_deps, *node.data_deps, *feed]:
            rec = self.book.tasks[dep]
            if rec.state in (TaskState.FAILED, TaskState.UPSTREAM_FAILED):
                return TaskState.UPSTREAM_FAILED, dep
            if rec.state == TaskState.SKIPPED:
                return TaskState.SKIPPED, dep
            if rec.state == TaskState.CANCELLED:
                return TaskState.CANCELLED, dep
        for dep in node.gate_deps:
            if not self.book.tasks[dep].state.terminal:
                return None
        for dep in [*node.data_deps, *feed]:
            if dep not in self.handles:
                return None
        return ()

    async def _submit(self, node: _Node) -> None:
        try:
            await self._submit_node(node)
        finally:
            self._wake(self._dependents[node.spec.name])

    async def _submit_node(self, node: _Node) -> None:
        name = node.spec.name
        node.submitted = True
        self._dirty = True
        rt = self._spec_runtime(node)
        upstream = {d: self.handles[d] for d in node.data_deps}
        if not node.mapped:
            fut = self._dask.submit(run_task, rt, upstream, key=f"{name}-{self.run_id}", pure=False)
            self.handles[name] = fut
            self._track([fut], name, mapped=False)
            return
        try:
            gathered = {dep: await self._value_of(dep) for dep in node.gate_deps}
            lookup = self._client_lookup(gathered)
            if node.spec.when is not None and not truthy(substitute(node.spec.when, lookup)):
                self._mark(name, TaskState.SKIPPED, "when is false")
                return
            items = self._map_items(node, lookup)
        except Exception as exc:
            self._mark(name, TaskState.FAILED, describe_error(exc), attempts=1)
            return
        node.items = ItemCounts(total=len(items))
        self.book.set_items(name, node.items, [])
        if not items:
            self.handles[name] = []
            self._mark(name, TaskState.SUCCEEDED, "map over an empty list", attempts=1)
            return
        futs = self._dask.map(
            run_item,
            items,
            range(len(items)),
            rt=rt,
            upstream=upstream,
            key=[(f"{name}-{self.run_id}", i) for i in range(len(items))],
            pure=False,
        )
        self.handles[name] = futs
        self._mark(name, TaskState.RUNNING)
        self._track(futs, name, mapped=True)

    def _client_lookup(self, gathered: Mapping[str, Any]) -> Any:
        def lookup(ref: Ref) -> Any:
            if ref.kind == "tasks":
                return gathered[ref.name]
            if ref.kind == "item":  # rejected by validation in map and when
                raise ValueError("$(item) is only defined inside a mapped task's inputs")
            return self._static_value(ref)

        return lookup

    def _map_items(self, node: _Node, lookup: Any) -> list[Any]:
        """The items a mapped task fans out over (futures, when a mapped task feeds it)."""
        if node.feed_dep is not None:
            return list(self.handles[node.feed_dep])
        source = node.spec.map
        value = substitute(source, lookup)
        if isinstance(value, list | tuple):
            return list(value)
        what = (
            f"result of task {referenced_tasks(node.spec, ('map',))[0]!r}"
            if referenced_tasks(node.spec, ("map",))
            else "value"
        )
        raise TypeError(f"map: the {what} is a {type(value).__name__}, not a list")

    async def _value_of(self, name: str) -> Any:
        handle = self.handles.get(name)
        if isinstance(handle, Future):
            return await handle
        if isinstance(handle, list) and handle and isinstance(handle[0], Future):
            return await self._dask.gather(handle)
        return handle

    def _track(self, futures: list[AnyFuture], name: str, mapped: bool) -> None:
        node = self.nodes[name]
        node.futures = futures
        if not mapped:
            for fut in futures:
                self.key_owner[fut.key] = (name, None)
            self._ac.update(futures)
            return
        for i, fut in enumerate(futures):
            self.key_owner[fut.key] = (name, i)
        node.queue = deque(enumerate(futures))
        self._maps[name] = node

    # -- outcomes ------------------------------------------------------------------------
    def _mark(
        self,
        name: str,
        state: TaskState,
        message: str | None = None,
        attempts: int | None = None,
        reason: str | None = None,
    ) -> bool:
        was_open = not self.book.tasks[name].state.terminal
        moved = self.book.mark_task(name, state, message=message, attempts=attempts, reason=reason)
        if was_open and self.book.tasks[name].state.terminal:
            self._open -= 1
        if moved and state == TaskState.SUCCEEDED and self.publish_prefix is not None:
            self._publish(name)
        if moved and state.terminal:
            self._dirty = True
            self._wake(self._dependents[name])
            self.sink.poke()
            if state == TaskState.FAILED and self.flow.spec.fail_fast:
                self._trip_fail_fast()
        return moved

    async def _on_done(self, future: AnyFuture) -> None:
        owner = self.key_owner.get(future.key)
        if owner is None:
            return
        name, index = owner
        node = self.nodes[name]
        state, message, attempts, exc = await self._outcome(future, node)
        if index is None:
            if state == TaskState.SUCCEEDED and name not in self._details_seen:
                self._awaiting_details.add(name)
                self._details_done.clear()
            self._mark(name, state, message, attempts, getattr(exc, "reason", None))
            return
        await self._on_item(node, index, future, (state, message, attempts, exc))
        self._items_changed(node)

    async def _on_item(
        self,
        node: _Node,
        index: int,
        future: AnyFuture,
        outcome: tuple[TaskState, str | None, int | None, BaseException | None] | None = None,
    ) -> None:
        """Count one mapped item that ended (the caller then calls _items_changed)."""
        name = node.spec.name
        state, _, _, exc = outcome or await self._outcome(future, node)
        counts = node.items
        assert counts is not None
        if state == TaskState.SUCCEEDED:
            counts.succeeded += 1
        elif state == TaskState.CANCELLED:
            counts.cancelled += 1
        elif state == TaskState.SKIPPED:
            counts.skipped += 1
            node.upstream_error = node.upstream_error or exc
        elif isinstance(exc, TaskFailed) and exc.task == name:
            counts.failed += 1
            node.failed_self += 1
            if len(node.own_failed) < FAILED_ITEMS_LIMIT or index < node.own_failed[-1]:
                bisect.insort(node.own_failed, index)
                del node.own_failed[FAILED_ITEMS_LIMIT:]
            if node.first_error is None or index < node.first_error[0]:
                node.first_error = (index, exc)
        else:
            counts.failed += 1
            node.upstream_error = node.upstream_error or exc

    def _items_changed(self, node: _Node) -> None:
        name, counts = node.spec.name, node.items
        assert counts is not None
        done = counts.succeeded + counts.failed + counts.cancelled + counts.skipped
        counts.running = min(counts.running, counts.total - done)
        self.book.set_items(name, counts, node.own_failed)
        if done == counts.total:
            counts.running = 0
            self._finish_mapped(node)

    def _finish_mapped(self, node: _Node) -> None:
        name, counts = node.spec.name, node.items
        assert counts is not None
        if node.first_error is not None:
            first, err = node.first_error
            self._mark(
                name,
                TaskState.FAILED,
                f"{node.failed_self} of {counts.total} items failed; item {first}: {err.message}",
                attempts=err.attempts,
                reason=err.reason,
            )
        elif node.upstream_error is not None:
            exc = node.upstream_error
            if isinstance(exc, TaskSkipped):
                self._mark(name, TaskState.SKIPPED, f"upstream task {exc.task!r} skipped")
            elif isinstance(exc, TaskFailed):
                self._mark(name, TaskState.UPSTREAM_FAILED, f"upstream task {exc.task!r} failed")
            else:
                self._mark(name, TaskState.FAILED, describe_error(exc), attempts=1)
        elif counts.cancelled:
            self._mark(name, TaskState.CANCELLED, f"{counts.cancelled} items cancelled")
        else:
            self._mark(name, TaskState.SUCCEEDED, attempts=max(1, self.book.tasks[name].attempts))
            if counts.total <= MAPPED_RESULT_ITEMS and node.futures:
                self._deferred_results.append((name, node.futures))
                if self._open == 0:
                    self._fetch_mapped_results()

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
                    self.book.set_task_details(name, result=(True, json.loads(text)))
                    self.sink.poke()

    async def _outcome(
        self, future: AnyFuture, node: _Node
    ) -> tuple[TaskState, str | None, int | None, BaseException | None]:
        name = node.spec.name
        if future.status == "finished":
            return TaskState.SUCCEEDED, None, None, None
        if future.status == "cancelled":
            if not self._stop.is_set() and await self._cancel_reason(future) == SCHEDULER_LOST:
                self.cancel(SCHEDULER_LOST_MESSAGE, phase=Phase.FAILED, reason="SchedulerLost")
            return TaskState.CANCELLED, "cancelled", None, None
        try:
            exc = await self._as_any(future).exception()
        except Exception as err:  # cancelled meanwhile, or the scheduler lost it
            return TaskState.CANCELLED, f"lost: {err}", None, None
        if exc is None:  # it finished, its value died with a worker, and Dask recomputed it
            return TaskState.SUCCEEDED, None, None, None
        if isinstance(exc, TaskFailed):
            if exc.task == name:
                return TaskState.FAILED, exc.message, exc.attempts, exc
            return TaskState.UPSTREAM_FAILED, f"upstream task {exc.task!r} failed", None, exc
        if isinstance(exc, TaskSkipped):
            why = "when is false" if exc.task == name else f"upstream task {exc.task!r} skipped"
            return TaskState.SKIPPED, why, None, exc
        if isinstance(exc, TaskCancelled | asyncio.CancelledError):
            return TaskState.CANCELLED, "cancelled", None, None
        # Anything else did not come from an attempt loop: a lost worker, say. If an
        # upstream future erred too, the error is the upstream's, handed on by Dask.
        for dep in [*node.data_deps, *([node.feed_dep] if node.feed_dep else [])]:
            handle = self.handles.get(dep)
            futs = handle if isinstance(handle, list) else [handle]
            if any(isinstance(f, Future) and f.status == "error" for f in futs):
                return TaskState.UPSTREAM_FAILED, f"upstream task {dep!r} failed", None, exc
        if isinstance(exc, KilledWorker):  # deaths that did not use the task's retries
            n = exc.allowed_failures + 1
            why = f"its worker died {n} times while running it; Dask gave up (KilledWorker)"
            return TaskState.FAILED, why, n, TaskFailed(name, why, n, reason="WorkerDied")
        return TaskState.FAILED, describe_error(exc), None, exc

    @staticmethod
    def _as_any(future: AnyFuture) -> Any:
        return future

    @staticmethod
    async def _cancel_reason(future: AnyFuture) -> str | None:
        """Why distributed cancelled a future (awaiting it raises that)."""
        try:
            await future
        except FutureCancelledError as err:
            return err.reason
        except BaseException:  # anything else: not a cancellation we can explain
            return None
        return None

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        name = msg.get("task")
        if name not in self.book.tasks:
            return
        kind = msg.get("event")
        rec = self.book.tasks[name]
        if kind == "start":
            self.book.mark_task(
                name, TaskState.RUNNING, attempts=msg["attempt"], start_time=msg["time"]
            )
        elif kind == "lost":  # a rerun, after attempts that their worker's death ended
            seen = self._lost.get((name, msg["item"]), 0)
            self._lost[(name, msg["item"])] = max(seen, msg["lost"])
            self.book.count_lost(name, max(msg["lost"] - seen, 0))
            if not self.nodes[name].mapped:
                self.book.mark_task(
                    name, TaskState.RUNNING, message=msg["message"], attempts=msg["lost"]
                )
        elif kind == "retry":
            rec.retries += 1
            if self.nodes[name].mapped:
                self.book.version += 1
            else:
                self.book.mark_task(
                    name, TaskState.RETRYING, message=msg["message"], attempts=msg["attempt"]
                )
        elif kind == "done" and name not in self._details_seen:  # not a recompute of a
            text = msg.get("result")  # value lost with its worker
            last_error = (rec.message or "").partition("\n")[0]
            self.book.set_task_details(
                name,
                attempts=msg["attempts"],
                start_time=msg["start"],
                completion_time=msg["end"],
                result=(True, json.loads(text)) if text is not None else None,
                message=f"succeeded on attempt {msg['attempts']} after {last_error}"
                if msg["attempts"] > 1 and last_error
                else None,
            )
            self._awaiting_details.discard(name)
            self._details_seen.add(name)
            if not self._awaiting_details:
                self._details_done.set()
        self.sink.poke()

    async def _poll_running(self) -> None:
        """Count running mapped items, about once a second (cheap: two scheduler calls).

        A worker holds more tasks than it has threads (Dask queues a few ahead), so only
        as many of a worker's tasks as it has threads count as running."""
        while True:
            await asyncio.sleep(1.0)
            active = {
                n
                for n, node in self.nodes.items()
                if node.mapped and node.items and not self.book.tasks[n].state.terminal
            }
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
            changed = False
            for n, count in running.items():
                items = self.nodes[n].items
                assert items is not None
                done = items.succeeded + items.failed + items.cancelled + items.skipped
                if items.running != min(count, items.total - done):
                    items.running = min(count, items.total - done)
                    self.book.set_items(n, items, self.nodes[n].own_failed)
                    changed = True
            if changed:
                self.sink.poke()

    # -- stopping ------------------------------------------------------------------------
    def _trip_fail_fast(self) -> None:
        """failFast: start nothing new. Tasks already running on a worker finish."""
        if self._fail_fast_tripped:
            return
        self._fail_fast_tripped = True
        doomed: list[AnyFuture] = []
        for name, node in self.nodes.items():
            rec = self.book.tasks[name]
            if rec.state.terminal or (
                rec.state in (TaskState.RUNNING, TaskState.RETRYING) and not node.mapped
            ):
                continue
            doomed.extend(f for f in node.futures if f.status in _LIVE)
        if doomed:
            cancel_futures(self.client, doomed, "failFast")

    def _background_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _publish(self, name: str) -> None:
        handle = self.handles.get(name)
        if not isinstance(handle, Future | list):
            return
        dataset = {f"{self.publish_prefix}{name}": handle}
        self._background_task(self._dask.publish_dataset(override=True, **dataset))

    def _on_status_error(self, exc: BaseException) -> None:
        log.error("flow %s: status delivery failed: %s", self.flow.name, exc)
        self.cancel(f"status delivery failed: {exc}", phase=Phase.FAILED, reason="StatusError")

    def _abandon(self, message: str) -> None:
        for name in self.book.unfinished():
            self.book.mark_task(name, TaskState.CANCELLED, message=message)

    async def _finish(self) -> None:
        stopped = self._stop.is_set()
        if stopped:
            live = [f for node in self.nodes.values() for f in node.futures if f.status in _LIVE]
            with contextlib.suppress(Exception):
                cancel_futures(self.client, live, self._stop_message)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._dask.run(kill_commands, self.topic), KILL_TIMEOUT)
            for name in self.book.unfinished():
                items = self.nodes[name].items
                if items is not None:
                    items.cancel_rest()
                    self.book.set_items(name, items, self.nodes[name].own_failed)
                self.book.mark_task(name, TaskState.CANCELLED, message=self._stop_message)
        elif self._awaiting_details:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._details_done.wait(), DETAILS_GRACE)
        self._fetch_mapped_results()
        if self._result_tasks:
            timeout = DETAILS_GRACE if stopped else KILL_TIMEOUT
            _, late = await asyncio.wait(self._result_tasks, timeout=timeout)
            for task in late:
                task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(Exception):
            self._dask.unsubscribe_topic(self.topic)
        counts = self.book.counts()
        failed = [n for n, r in self.book.tasks.items() if r.state == TaskState.FAILED]
        # Nobody asked for these: the cluster dropped them. The run did not succeed.
        dropped = [n for n, r in self.book.tasks.items() if r.state == TaskState.CANCELLED]
        total = len(self.book.tasks)
        if stopped:
            self.book.mark_phase(self._stop_phase, self._stop_message, self._stop_reason)
        elif failed:
            shown = ", ".join(failed[:5]) + (", …" if len(failed) > 5 else "")
            self.book.mark_phase(
                Phase.FAILED, f"{len(failed)} of {total} tasks failed: {shown}", "TasksFailed"
            )
        elif dropped:
            shown = ", ".join(dropped[:5]) + (", …" if len(dropped) > 5 else "")
            self.book.mark_phase(
                Phase.FAILED,
                f"{len(dropped)} of {total} tasks were cancelled by the cluster: {shown}",
                "TasksCancelled",
            )
        else:
            skipped = counts.get(TaskState.SKIPPED, 0)
            extra = f" ({skipped} skipped)" if skipped else ""
            self.book.mark_phase(
                Phase.SUCCEEDED,
                f"{total - skipped} of {total} tasks succeeded" + extra,
                "Succeeded",
            )
        await self.sink.close()
        if self.keep_results:
            await self._keep_results()
        for node in self.nodes.values():
            node.futures = []
        self.handles.clear()

    async def _keep_results(self) -> None:
        for name, rec in self.book.tasks.items():
            if rec.state == TaskState.SUCCEEDED and name in self.handles:
                with contextlib.suppress(Exception):  # its value died with the cluster
                    self._results[name] = await self._value_of(name)

    # -- resume --------------------------------------------------------------------------
    def _restore(self, previous: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        """Adopt the terminal tasks of an earlier attempt at this run."""
        for name, rec in (previous.get("tasks") or {}).items():
            if name not in self.book.tasks:
                continue
            state = TaskState(rec.get("state", "Pending"))
            if not state.terminal or state == TaskState.CANCELLED:
                continue
            if state == TaskState.SUCCEEDED:
                if name in values:
                    self.handles[name] = values[name]
                elif "result" in rec and not self.nodes[name].mapped:
                    self.handles[name] = rec["result"]
                else:
                    continue  # its value is gone: it runs again
            self.nodes[name].submitted = True
            target = self.book.tasks[name]
            target.state = state
            target.attempts = int(rec.get("attempts", 0))
            target.start_time = rec.get("startTime")
            target.completion_time = rec.get("completionTime")
            target.message = rec.get("message")
            if "result" in rec:
                target.result, target.has_result = rec["result"], True
            items = rec.get("items")
            if isinstance(items, Mapping) and self.nodes[name].mapped:
                target.items = ItemCounts(
                    total=int(items.get("total", 0)),
                    succeeded=int(items.get("succeeded", 0)),
                    failed=int(items.get("failed", 0)),
                )
                target.failed_items = list(rec.get("failedItems") or [])
