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
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Future, as_completed

from ..model.graph import referenced_tasks, task_dependencies, topological_order
from ..model.refs import Ref, substitute
from ..model.spec import FlowRun, TaskSpec
from ..model.states import Phase, TaskState
from ..model.status import ItemCounts, StatusBook
from .sink import CoalescingSink, StatusCallback
from .worker import (
    TaskFailed,
    TaskRuntime,
    TaskSkipped,
    describe_error,
    kill_commands,
    run_item,
    run_task,
    truthy,
)

log = logging.getLogger(__name__)

STATIC_REFS = frozenset({"params", "flowrun"})
DETAILS_GRACE = 2.0  # seconds to wait for the last worker events after the last future


@dataclass
class _Node:
    spec: TaskSpec
    data_deps: list[str]  # referenced: their futures are handed to the task
    gate_deps: list[str]  # must be finished here before the task is submitted
    mapped: bool
    submitted: bool = False
    items: ItemCounts | None = None
    item_errors: dict[int, BaseException] = field(default_factory=dict)
    futures: list[Future] = field(default_factory=list)


class FlowEngine:
    """Executes one FlowRun on ``client`` (an asynchronous ``distributed.Client``).

    ``on_status`` receives the status object, coalesced to at most one call per
    ``status_interval`` (phase changes at once, and always once at the end). ``values``
    holds results of tasks finished earlier (a resumed run): those tasks are not run again.
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
    ) -> None:
        self.flow = flow
        self.client = client
        self.run_id = run_id or uuid.uuid4().hex[:10]
        self.topic = f"daskflow-{self.run_id}"
        self.book = StatusBook([t.name for t in flow.spec.tasks])
        self.sink = CoalescingSink(self.book.to_dict, lambda: self.book.version, on_status,
                                   status_interval)
        self.nodes: dict[str, _Node] = {}
        graph: dict[str, list[str]] = {}
        mapped_names = {t.name for t in flow.spec.tasks if t.map is not None}
        for task in flow.spec.tasks:
            mapped = task.map is not None
            data = referenced_tasks(task, ("args", "kwargs", "command", "env"))
            gate: list[str] = []
            if not mapped:
                data += referenced_tasks(task, ("when",))
            else:
                # A mapped task's `when` and a single task's list are decided here.
                gate += referenced_tasks(task, ("when",))
                for dep in referenced_tasks(task, ("map",)):
                    (data if dep in mapped_names else gate).append(dep)
            gate += [d for d in task.depends_on if d not in data and d not in gate]
            self.nodes[task.name] = _Node(task, list(dict.fromkeys(data)), gate, mapped)
            graph[task.name] = task_dependencies(task)
        self.order = topological_order(graph)
        self.handles: dict[str, Any] = {}  # name -> Future | list[Future] | known value
        self.key_owner: dict[Any, tuple[str, int | None]] = {}
        self._ac: as_completed | None = None
        self._stop = asyncio.Event()
        self._stop_phase = Phase.CANCELLED
        self._stop_reason = "Cancelled"
        self._stop_message = "cancelled"
        self._fail_fast_tripped = False
        self._awaiting_details: set[str] = set()
        self._details_seen: set[str] = set()
        self._restore(previous_status or {}, values or {})

    # -- public --------------------------------------------------------------------------
    def cancel(self, message: str = "cancelled", *, phase: Phase = Phase.CANCELLED,
               reason: str = "Cancelled") -> None:
        """Stop the run: running tasks are cancelled, unfinished ones end Cancelled."""
        if not self._stop.is_set():
            self._stop_phase, self._stop_reason, self._stop_message = phase, reason, message
            self._stop.set()

    def status(self) -> dict[str, Any]:
        return self.book.to_dict()

    async def run(self) -> dict[str, Any]:
        """Run the flow to a terminal phase and return the final status."""
        loop = asyncio.get_running_loop()
        self.sink.start()
        self.book.mark_phase(Phase.RUNNING)
        self.sink.poke(urgent=True)
        self.client.subscribe_topic(self.topic, self._on_event)
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
        finally:
            poller.cancel()
            if deadline is not None:
                deadline.cancel()
        await self._finish()
        return self.book.to_dict()

    # -- driving -------------------------------------------------------------------------
    async def _drive(self) -> None:
        self._ac = as_completed(with_results=False, raise_errors=False)
        await self._pump()
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            while self.book.unfinished() and not self._stop.is_set():
                if self._ac.is_empty():
                    if not await self._pump():
                        self._abandon("no task could be scheduled (internal error)")
                        break
                    continue
                nxt = asyncio.ensure_future(self._ac.__anext__())
                done, _ = await asyncio.wait({nxt, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    break
                batch = [nxt.result(), *self._ac.next_batch(block=False)]
                for future in batch:
                    await self._on_done(future)
                await self._pump()
                self.sink.poke()
        finally:
            stop_wait.cancel()

    def _spec_runtime(self, node: _Node) -> TaskRuntime:
        t = node.spec
        fill = self._static
        return TaskRuntime(
            name=t.name,
            topic=self.topic,
            call=t.call,
            command=tuple(fill(t.command)) if t.command is not None else None,
            args=tuple(fill(t.args)),
            kwargs=fill(t.kwargs),
            env=fill(t.env),
            when=None if node.mapped else fill(t.when),
            retries=t.retries,
            retry_delay=t.retry_delay_seconds,
            retry_backoff=t.retry_backoff,
            retry_jitter=t.retry_jitter,
            timeout=t.timeout_seconds,
            report=not node.mapped,
        )

    async def _pump(self) -> bool:
        """Submit every task that can go now; returns whether anything changed."""
        progressed = False
        for name in self.order:
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
                progressed |= self._mark(name, state, f"upstream task {upstream!r} is {state.lower()}"
                                         if state != TaskState.UPSTREAM_FAILED
                                         else f"upstream task {upstream!r} failed")
                continue
            await self._submit(node)
            progressed = True
        return progressed

    def _blocked_by(self, node: _Node) -> tuple[TaskState, str] | tuple[()] | None:
        """None: wait. (): ready. (state, task): will never run, because of ``task``."""
        for dep in [*node.gate_deps, *node.data_deps]:
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
        for dep in node.data_deps:
            if dep not in self.handles:
                return None
        return ()

    async def _submit(self, node: _Node) -> None:
        name = node.spec.name
        node.submitted = True
        rt = self._spec_runtime(node)
        upstream = {d: self.handles[d] for d in node.data_deps}
        if not node.mapped:
            fut = self.client.submit(run_task, rt, upstream, key=f"{name}-{self.run_id}",
                                     pure=False)
            self.handles[name] = fut
            self._track([fut], name, mapped=False)
            return
        try:
            items = await self._map_items(node)
            if node.spec.when is not None:
                cond = substitute(self._static(node.spec.when), self._value_lookup)
                if not truthy(await _maybe_await(cond)):
                    self._mark(name, TaskState.SKIPPED, "when is false")
                    return
        except Exception as exc:
            self._mark(name, TaskState.FAILED, describe_error(exc), attempts=1)
            return
        node.items = ItemCounts(total=len(items))
        self.book.set_items(name, node.items, [])
        if not items:
            self._mark(name, TaskState.SUCCEEDED, "map over an empty list")
            self.handles[name] = []
            return
        futs = self.client.map(
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

    def _static(self, value: Any) -> Any:
        meta = self.flow.metadata

        def static(ref: Ref) -> Any:
            if ref.kind == "params":
                return self.flow.spec.parameters[ref.name]
            return meta.name if ref.name == "name" else (meta.namespace or "default")

        return substitute(value, static, STATIC_REFS)

    def _value_lookup(self, ref: Ref) -> Any:
        return self._gathered[ref.name]

    async def _map_items(self, node: _Node) -> list[Any]:
        """The items a mapped task fans out over (futures, when a mapped task feeds it)."""
        when_deps = referenced_tasks(node.spec, ("when",))
        self._gathered: dict[str, Any] = {}
        for dep in when_deps:
            self._gathered[dep] = await self._value_of(dep)
        source = node.spec.map
        if isinstance(source, list):
            return list(self._static(source))
        value = self._static(source)
        if isinstance(value, list):
            return value
        dep = referenced_tasks(node.spec, ("map",))[0]
        if self.nodes[dep].mapped:
            return list(self.handles[dep])
        value = await self._value_of(dep)
        if not isinstance(value, list | tuple):
            raise TypeError(f"map: result of task {dep!r} is a {type(value).__name__}, not a list")
        return list(value)

    async def _value_of(self, name: str) -> Any:
        handle = self.handles[name]
        if isinstance(handle, Future):
            return await handle
        if isinstance(handle, list) and handle and isinstance(handle[0], Future):
            return await self.client.gather(handle)
        return handle

    def _track(self, futures: list[Future], name: str, mapped: bool) -> None:
        node = self.nodes[name]
        node.futures = futures
        for i, fut in enumerate(futures):
            self.key_owner[fut.key] = (name, i if mapped else None)
        assert self._ac is not None
        self._ac.update(futures)

    # -- outcomes ------------------------------------------------------------------------
    def _mark(self, name: str, state: TaskState, message: str | None = None,
              attempts: int | None = None) -> bool:
        moved = self.book.mark_task(name, state, message=message, attempts=attempts)
        if moved and state.terminal:
            self.sink.poke()
            if state == TaskState.FAILED and self.flow.spec.fail_fast:
                self._trip_fail_fast()
        return moved

    async def _on_done(self, future: Future) -> None:
        owner = self.key_owner.get(future.key)
        if owner is None:
            return
        name, index = owner
        node = self.nodes[name]
        state, message, attempts, exc = await self._outcome(future, name)
        if index is None:
            if state == TaskState.SUCCEEDED and name not in self._details_seen:
                self._awaiting_details.add(name)
            self._mark(name, state, message, attempts)
            return
        counts = node.items
        assert counts is not None
        if state == TaskState.SUCCEEDED:
            counts.succeeded += 1
        elif state == TaskState.CANCELLED:
            counts.cancelled += 1
        elif state == TaskState.SKIPPED:
            counts.skipped += 1
        else:
            counts.failed += 1
            if exc is not None:
                node.item_errors[index] = exc
        counts.running = max(0, min(counts.running, counts.pending + counts.running))
        failed_idx = [i for i, e in node.item_errors.items() if isinstance(e, TaskFailed)
                      and e.task == name]
        self.book.set_items(name, counts, failed_idx)
        if counts.pending + counts.running == 0 or (
            counts.succeeded + counts.failed + counts.cancelled + counts.skipped == counts.total
        ):
            counts.running = 0
            self.book.set_items(name, counts, failed_idx)
            self._finish_mapped(node)

    def _finish_mapped(self, node: _Node) -> None:
        name, counts = node.spec.name, node.items
        assert counts is not None
        own = {i: e for i, e in node.item_errors.items()
               if isinstance(e, TaskFailed) and e.task == name}
        if own:
            first = min(own)
            err = own[first]
            assert isinstance(err, TaskFailed)
            self._mark(name, TaskState.FAILED,
                       f"{len(own)} of {counts.total} items failed; item {first}: {err.message}",
                       attempts=err.attempts)
        elif node.item_errors:
            exc = next(iter(node.item_errors.values()))
            if isinstance(exc, TaskSkipped):
                self._mark(name, TaskState.SKIPPED, f"upstream task {exc.task!r} is skipped")
            elif isinstance(exc, TaskFailed):
                self._mark(name, TaskState.UPSTREAM_FAILED, f"upstream task {exc.task!r} failed")
            else:
                self._mark(name, TaskState.FAILED, describe_error(exc), attempts=1)
        elif counts.cancelled or counts.skipped:
            self._mark(name, TaskState.CANCELLED, f"{counts.cancelled} items cancelled")
        else:
            self._mark(name, TaskState.SUCCEEDED, attempts=max(1, self.book.tasks[name].attempts))

    async def _outcome(
        self, future: Future, name: str
    ) -> tuple[TaskState, str | None, int | None, BaseException | None]:
        if future.status == "finished":
            return TaskState.SUCCEEDED, None, None, None
        if future.status == "cancelled":
            return TaskState.CANCELLED, "cancelled", None, None
        try:
            exc = await future.exception()
        except Exception as err:  # cancelled meanwhile, or the scheduler lost it
            return TaskState.CANCELLED, f"lost: {err}", None, None
        if isinstance(exc, TaskFailed):
            if exc.task == name:
                return TaskState.FAILED, exc.message, exc.attempts, exc
            return TaskState.UPSTREAM_FAILED, f"upstream task {exc.task!r} failed", None, exc
        if isinstance(exc, TaskSkipped):
            why = "when is false" if exc.task == name else f"upstream task {exc.task!r} is skipped"
            return TaskState.SKIPPED, why, None, exc
        if isinstance(exc, asyncio.CancelledError):
            return TaskState.CANCELLED, "cancelled", None, None
        # Anything else did not come from our attempt loop: a lost worker, say.
        return TaskState.FAILED, describe_error(exc), None, exc

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        name = msg.get("task")
        if name not in self.book.tasks:
            return
        kind = msg.get("event")
        rec = self.book.tasks[name]
        if kind == "start":
            self.book.mark_task(name, TaskState.RUNNING, attempts=msg["attempt"],
                                start_time=msg["time"])
        elif kind == "retry":
            rec.retries += 1
            if self.nodes[name].mapped:
                self.book.version += 1
            else:
                self.book.mark_task(name, TaskState.RETRYING, message=msg["message"],
                                    attempts=msg["attempt"])
        elif kind == "done":
            self.book.set_task_details(name, attempts=msg["attempts"], start_time=msg["start"],
                                       completion_time=msg["end"],
                                       result=tuple(msg["result"]))  # type: ignore[arg-type]
            self._awaiting_details.discard(name)
            self._details_seen.add(name)
        self.sink.poke()

    async def _poll_running(self) -> None:
        """Count running mapped items, about once a second (cheap: one scheduler call)."""
        while True:
            await asyncio.sleep(1.0)
            active = {n for n, node in self.nodes.items()
                      if node.mapped and node.items and not self.book.tasks[n].state.terminal}
            if not active:
                continue
            try:
                processing = await self.client.processing()
            except Exception:  # the scheduler went away; the main loop will notice
                continue
            running: dict[str, int] = dict.fromkeys(active, 0)
            for keys in processing.values():
                for key in keys:
                    owner = self.key_owner.get(key if not isinstance(key, list) else tuple(key))
                    if owner and owner[0] in running:
                        running[owner[0]] += 1
            for n, count in running.items():
                items = self.nodes[n].items
                assert items is not None
                items.running = min(count, items.pending + items.running)
                self.book.set_items(n, items, self.book.tasks[n].failed_items)
            self.sink.poke()

    # -- stopping ------------------------------------------------------------------------
    def _trip_fail_fast(self) -> None:
        if self._fail_fast_tripped:
            return
        self._fail_fast_tripped = True
        doomed = []
        for name, node in self.nodes.items():
            rec = self.book.tasks[name]
            if rec.state.terminal or rec.state in (TaskState.RUNNING, TaskState.RETRYING) and not node.mapped:
                continue
            doomed.extend(f for f in node.futures if not f.done())
        if doomed:
            self.client.cancel(doomed)

    def _abandon(self, message: str) -> None:
        for name in self.book.unfinished():
            self.book.mark_task(name, TaskState.CANCELLED, message=message)

    async def _finish(self) -> None:
        stopped = self._stop.is_set()
        if stopped:
            live = [f for node in self.nodes.values() for f in node.futures if not f.done()]
            if live:
                with contextlib.suppress(Exception):
                    await self.client.cancel(live)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.run(kill_commands, self.topic), 10)
            for name in self.book.unfinished():
                self.book.mark_task(name, TaskState.CANCELLED, message=self._stop_message)
        else:
            loop = asyncio.get_running_loop()
            until = loop.time() + DETAILS_GRACE
            while self._awaiting_details and loop.time() < until:
                await asyncio.sleep(0.02)
        with contextlib.suppress(Exception):
            self.client.unsubscribe_topic(self.topic)
        counts = self.book.counts()
        failed = [n for n, r in self.book.tasks.items() if r.state == TaskState.FAILED]
        total = len(self.book.tasks)
        if stopped:
            self.book.mark_phase(self._stop_phase, self._stop_message, self._stop_reason)
        elif failed:
            shown = ", ".join(failed[:5]) + (", …" if len(failed) > 5 else "")
            self.book.mark_phase(Phase.FAILED, f"{len(failed)} of {total} tasks failed: {shown}",
                                 "TasksFailed")
        else:
            skipped = counts.get(TaskState.SKIPPED, 0)
            extra = f" ({skipped} skipped)" if skipped else ""
            self.book.mark_phase(Phase.SUCCEEDED, f"{total - skipped} of {total} tasks succeeded"
                                 + extra, "Succeeded")
        await self.sink.close()
        for node in self.nodes.values():
            node.futures = []
        self.handles.clear()

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


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value
