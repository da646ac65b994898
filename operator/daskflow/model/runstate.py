"""The state of one run, and the one place where it changes.

:class:`RunState` owns the :class:`~daskflow.model.status.StatusBook` of a run. Nothing
else changes it: the engine (and whoever ends a run by force) hands it events, small
frozen facts such as "task a started its attempt 1 at 12:00:01", and :meth:`RunState.apply`
moves the records. Every task move goes through the transition table of
:mod:`daskflow.model.states` and raises :class:`IllegalTransition` when the table forbids
it, before anything changed; an event about a task that has already ended (a late worker
event) changes nothing. The run's phase is decided by the ordered rules of
:func:`decide_end`, and nowhere else.

``apply`` returns what follows from the event (:class:`Effects`) for the engine to act
on. ``RunState`` knows nothing of Dask, never calls back, and has no clock: every time
comes in with an event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .events import (
    NOTHING,
    AttemptFailed,
    Effects,
    Event,
    ItemsEnded,
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
from .states import Phase, TaskState, check_phase_transition, check_task_transition
from .status import FAILED_ITEMS_LIMIT, ItemCounts, StatusBook, TaskRecord, now_iso


def decide_end(book: StatusBook, stop: StopRequested | None) -> tuple[Phase, str, str]:
    """The phase, reason and message a run ends with, by the first rule that applies:
    a stop decides; a task that never ended is an internal error; a task that failed
    fails the run, and so does one that the cluster cancelled; otherwise every task
    Succeeded or was Skipped, and so does the run."""
    total = len(book.tasks)

    def shown(names: list[str]) -> str:
        return ", ".join(names[:5]) + (", …" if len(names) > 5 else "")

    def named(state: TaskState) -> list[str]:
        return [n for n, r in book.tasks.items() if r.state == state]

    if stop is not None:
        return stop.phase, stop.reason, stop.message
    unfinished = book.unfinished()
    if unfinished:
        how = f"{len(unfinished)} of {total} tasks never ended: {shown(unfinished)}"
        return Phase.FAILED, "InternalError", f"{how} (internal error)"
    if failed := named(TaskState.FAILED) or named(TaskState.UPSTREAM_FAILED):
        how = f"{len(failed)} of {total} tasks failed"
        return Phase.FAILED, "TasksFailed", f"{how}: {shown(failed)}"
    if dropped := named(TaskState.CANCELLED):  # nobody asked: the cluster dropped them
        how = f"{len(dropped)} of {total} tasks were cancelled by the cluster"
        return Phase.FAILED, "TasksCancelled", f"{how}: {shown(dropped)}"
    skipped = len(named(TaskState.SKIPPED))
    extra = f" ({skipped} skipped)" if skipped else ""
    return Phase.SUCCEEDED, "Succeeded", f"{total - skipped} of {total} tasks succeeded{extra}"


class RunState:
    """The state of one run; it changes only through :meth:`apply`."""

    def __init__(
        self, book: StatusBook, *, mapped: Collection[str] = (), fail_fast: bool = False
    ) -> None:
        self._book = book
        self._mapped = frozenset(mapped)
        self._fail_fast = fail_fast
        self.fail_fast_tripped = False
        self.stop: StopRequested | None = None
        self.open = len(book.unfinished())  # tasks not yet terminal
        self._lost: dict[tuple[str, int | None], int] = {}  # (task, item) -> lost attempts
        self._reported: set[str] = set()
        self._awaiting: set[str] = set()  # succeeded here, their worker's report not yet in
        self.tasks: Mapping[str, TaskRecord] = MappingProxyType(book.tasks)
        self._handlers: dict[type[Any], Callable[[Any], Effects]] = {
            RunStarted: self._run_started,
            TaskStarted: self._task_started,
            AttemptFailed: self._attempt_failed,
            WorkerLost: self._worker_lost,
            TaskReported: self._task_reported,
            MapStarted: self._map_started,
            ItemsEnded: self._items_ended,
            ItemsRunning: self._items_running,
            TaskEnded: self._task_ended,
            StopRequested: self._stop_requested,
            RunEnded: self._run_ended,
        }

    @classmethod
    def new(
        cls, tasks: Iterable[str], *, mapped: Collection[str] = (), fail_fast: bool = False
    ) -> RunState:
        return cls(StatusBook(tasks), mapped=mapped, fail_fast=fail_fast)

    @classmethod
    def from_dict(
        cls,
        status: Mapping[str, Any],
        tasks: Iterable[str] = (),
        *,
        mapped: Collection[str] = (),
        fail_fast: bool = False,
        rerun: Collection[str] | None = None,
    ) -> RunState:
        """The state a status object describes: the one way to take a run over.

        With ``rerun`` None, every record comes back as it is (to end the run by force;
        a task of ``tasks`` the status lacks is Pending). Otherwise the run resumes with
        the tasks ``tasks``: finished ones keep their whole record, except Cancelled ones
        and those in ``rerun`` (their value is gone), which start afresh, as do the
        unfinished ones.
        """
        names = list(tasks)
        book = StatusBook.from_dict(status, names)
        if rerun is not None:
            kept = {n: book.tasks[n] for n in names}
            book.tasks = {
                n: rec
                if rec.state.terminal and rec.state != TaskState.CANCELLED and n not in rerun
                else TaskRecord()
                for n, rec in kept.items()
            }
        return cls(book, mapped=mapped, fail_fast=fail_fast)

    # -- reading -----------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        return self._book.phase

    @property
    def version(self) -> int:
        """Bumped on every change, so that a sink can tell what is new."""
        return self._book.version

    @property
    def awaiting_reports(self) -> bool:
        """Some task succeeded here and its worker's report (times, result) is not in yet."""
        return bool(self._awaiting)

    def to_dict(self) -> dict[str, Any]:
        return self._book.to_dict()

    # -- changing ----------------------------------------------------------------------------
    def apply(self, event: Event) -> Effects:
        """Change the state by one event; returns what follows from it."""
        return self._handlers[type(event)](event)

    def _record(self, name: str) -> TaskRecord | None:
        """The record of a task an event is about; None if the task has ended."""
        rec = self._book.tasks[name]
        return None if rec.state.terminal else rec

    def _changed(self) -> None:
        self._book.version += 1

    def _move(
        self,
        name: str,
        state: TaskState,
        time: str,
        *,
        message: str | None = None,
        attempts: int | None = None,
        reason: str | None = None,
    ) -> bool:
        """Move a task through the transition table; returns whether it just ended."""
        rec = self._book.tasks[name]
        check_task_transition(name, rec.state, state)
        ended = state.terminal and not rec.state.terminal
        changed = rec.state != state
        rec.state = state
        if state in (TaskState.RUNNING, TaskState.RETRYING, TaskState.SUCCEEDED):
            rec.start_time = rec.start_time or time
        if state.terminal:
            rec.completion_time = rec.completion_time or time
        if message is not None:
            rec.message = message
            changed = True
        if reason is not None:
            rec.reason = reason
        if attempts is not None and attempts > rec.attempts:
            rec.attempts = attempts
            changed = True
        if changed:
            self._changed()
        if ended:
            self.open -= 1
        return ended

    def _run_started(self, event: RunStarted) -> Effects:
        book = self._book
        if book.phase == Phase.PENDING:
            check_phase_transition(book.phase, Phase.RUNNING)
            book.phase = Phase.RUNNING
            book.start_time = book.start_time or event.time
            self._changed()
        return NOTHING

    def _task_started(self, event: TaskStarted) -> Effects:
        rec = self._record(event.task)
        if rec is not None:
            self._move(event.task, TaskState.RUNNING, event.time, attempts=event.attempt)
            if event.time < (rec.start_time or event.time):  # the first attempt's start
                rec.start_time = event.time
        return NOTHING

    def _attempt_failed(self, event: AttemptFailed) -> Effects:
        name = event.task
        rec = self._record(name)
        if rec is None:
            return NOTHING
        rec.retries += 1
        self._changed()
        if name not in self._mapped:  # a mapped task stays Running while items retry
            if rec.state == TaskState.PENDING:  # its start was not heard of: it ran
                self._move(name, TaskState.RUNNING, event.time)
            self._move(
                name, TaskState.RETRYING, event.time, message=event.message, attempts=event.attempt
            )
        return NOTHING

    def _worker_lost(self, event: WorkerLost) -> Effects:
        name = event.task
        rec = self._record(name)
        if rec is None:
            return NOTHING
        seen = self._lost.get((name, event.item), 0)
        self._lost[(name, event.item)] = max(seen, event.lost)
        rec.lost += max(event.lost - seen, 0)
        self._changed()
        if name not in self._mapped:
            self._move(
                name, TaskState.RUNNING, event.time, message=event.message, attempts=event.lost
            )
        return NOTHING

    def _task_reported(self, event: TaskReported) -> Effects:
        name = event.task
        rec = self._book.tasks[name]
        ended_badly = rec.state.terminal and rec.state != TaskState.SUCCEEDED
        if name in self._reported or ended_badly:
            return NOTHING  # a recompute of a value lost with its worker, or too late
        self._reported.add(name)
        self._awaiting.discard(name)
        last_error = (rec.message or "").partition("\n")[0]
        if event.attempts is not None:
            rec.attempts = max(rec.attempts, event.attempts)
            if event.attempts > 1 and last_error:
                rec.message = f"succeeded on attempt {event.attempts} after {last_error}"
        rec.start_time = event.start or rec.start_time
        rec.completion_time = event.end or rec.completion_time
        if event.result is not None:
            rec.result, rec.has_result = json.loads(event.result), True
        self._changed()
        return NOTHING

    def _map_started(self, event: MapStarted) -> Effects:
        rec = self._record(event.task)
        if rec is None or rec.items is not None:
            return NOTHING
        rec.items = ItemCounts(total=event.total)
        self._changed()
        if event.total == 0:
            self._move(
                event.task,
                TaskState.SUCCEEDED,
                event.time,
                message="map over an empty list",
                attempts=1,
            )
            return Effects(ended=(event.task,))
        self._move(event.task, TaskState.RUNNING, event.time)
        return NOTHING

    def _items_ended(self, event: ItemsEnded) -> Effects:
        rec = self._record(event.task)
        if rec is None or rec.items is None:
            return NOTHING
        counts = rec.items
        counts.succeeded += event.succeeded
        counts.failed += event.failed
        counts.cancelled += event.cancelled
        counts.skipped += event.skipped
        counts.running = min(counts.running, max(counts.total - counts.done, 0))
        if event.failed_items:
            lowest = sorted({*rec.failed_items, *event.failed_items})
            rec.failed_items = lowest[:FAILED_ITEMS_LIMIT]
        self._changed()
        return NOTHING

    def _items_running(self, event: ItemsRunning) -> Effects:
        rec = self._record(event.task)
        if rec is None or rec.items is None:
            return NOTHING
        running = min(event.running, max(rec.items.total - rec.items.done, 0))
        if running != rec.items.running:
            rec.items.running = running
            self._changed()
        return NOTHING

    def _task_ended(self, event: TaskEnded) -> Effects:
        name = event.task
        if self._record(name) is None:
            return NOTHING
        self._move(
            name,
            event.state,
            event.time,
            message=event.message,
            attempts=event.attempts,
            reason=event.reason,
        )
        if event.state == TaskState.SUCCEEDED and name not in self._mapped | self._reported:
            self._awaiting.add(name)
        trip = event.state == TaskState.FAILED and self._fail_fast and not self.fail_fast_tripped
        self.fail_fast_tripped |= trip
        return Effects(ended=(name,), fail_fast=trip)

    def _stop_requested(self, event: StopRequested) -> Effects:
        if self.stop is not None or self._book.phase.terminal:
            return NOTHING
        self.stop = event
        return Effects(stop=True)

    def _run_ended(self, event: RunEnded) -> Effects:
        book = self._book
        if book.phase.terminal:
            return NOTHING  # a finished run stays as it is
        phase, reason, message = decide_end(book, self.stop)
        ended = book.unfinished()
        for name in ended:
            items = book.tasks[name].items
            if items is not None:
                items.cancel_rest()
            self._move(name, TaskState.CANCELLED, event.time, message=message)
        check_phase_transition(book.phase, phase)
        book.phase, book.reason, book.message = phase, reason, message
        book.start_time = book.start_time or event.time
        book.completion_time = event.time
        self._changed()
        return Effects(ended=tuple(ended), run_ended=True)


def end_run(
    status: dict[str, Any],
    phase: Phase,
    reason: str,
    message: str,
    task_names: Iterable[str] = (),
    *,
    now: str | None = None,
) -> dict[str, Any]:
    """A copy of ``status`` ended by force (cancel, deadline, lost cluster, a run that
    never started): every unfinished task becomes Cancelled and the run takes ``phase``.
    A finished run is returned as is."""
    state = RunState.from_dict(status, task_names)
    if state.phase.terminal:
        return dict(status)
    state.apply(StopRequested(message, phase, reason))
    state.apply(RunEnded(now or now_iso()))
    return {**status, **state.to_dict()}
