"""RunState: the phase rules as a table, the false Succeeded, and random event sequences."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskflow.model.events import (
    AttemptFailed,
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
from daskflow.model.runstate import RunState, end_run
from daskflow.model.states import IllegalTransition, Phase, TaskState, can_move_task
from daskflow.model.status import StatusBook, TaskRecord

T0, T1 = "2026-12-03T10:00:00Z", "2026-12-03T10:00:09Z"
S, F, SK, UF, C, P, R = (
    TaskState.SUCCEEDED,
    TaskState.FAILED,
    TaskState.SKIPPED,
    TaskState.UPSTREAM_FAILED,
    TaskState.CANCELLED,
    TaskState.PENDING,
    TaskState.RUNNING,
)
CANCEL = StopRequested("cancelled: spec.cancel is true")
DEADLINE = StopRequested("deadline of 60s exceeded", Phase.FAILED, "DeadlineExceeded")
ABANDON = StopRequested.internal("no task could be scheduled")


def ended(states: list[TaskState], stop: StopRequested | None) -> dict[str, Any]:
    book = StatusBook([])
    book.phase = Phase.RUNNING
    book.tasks = {f"t{i}": TaskRecord(state) for i, state in enumerate(states)}
    state = RunState(book)
    if stop is not None:
        state.apply(stop)
    state.apply(RunEnded(T1))
    return state.to_dict()


@pytest.mark.parametrize(
    ("states", "stop", "phase", "reason", "message"),
    [
        ([S, S], CANCEL, "Cancelled", "Cancelled", CANCEL.message),  # a stop decides
        ([S, F], CANCEL, "Cancelled", "Cancelled", CANCEL.message),
        ([S, R], DEADLINE, "Failed", "DeadlineExceeded", DEADLINE.message),
        (
            [S, P, R],
            ABANDON,
            "Failed",
            "InternalError",
            "no task could be scheduled (internal error)",
        ),
        ([S, R], None, "Failed", "InternalError", "1 of 2 tasks never ended: t1 (internal error)"),
        ([S, F, UF], None, "Failed", "TasksFailed", "1 of 3 tasks failed: t1"),
        ([S, UF], None, "Failed", "TasksFailed", "1 of 2 tasks failed: t1"),
        ([S, C, F], None, "Failed", "TasksFailed", "1 of 3 tasks failed: t2"),
        (
            [S, C],
            None,
            "Failed",
            "TasksCancelled",
            "1 of 2 tasks were cancelled by the cluster: t1",
        ),
        ([S, SK, S], None, "Succeeded", "Succeeded", "2 of 3 tasks succeeded (1 skipped)"),
        ([S, S], None, "Succeeded", "Succeeded", "2 of 2 tasks succeeded"),
        ([], None, "Succeeded", "Succeeded", "0 of 0 tasks succeeded"),
    ],
)
def test_the_phase_rules(
    states: list[TaskState], stop: StopRequested | None, phase: str, reason: str, message: str
) -> None:
    status = ended(states, stop)
    assert (status["phase"], status["reason"], status["message"]) == (phase, reason, message)
    for i, before in enumerate(states):  # what had not ended is Cancelled, with the why
        rec = status["tasks"][f"t{i}"]
        assert rec["state"] == (before if before.terminal else "Cancelled")
        if not before.terminal:
            assert rec["message"] == message
            assert rec["completionTime"] == T1


def test_a_run_the_engine_abandons_never_succeeds() -> None:
    """The engine's "no task could be scheduled" path cancelled every task, and the run
    then ended Succeeded (later: Failed "cancelled by the cluster"). It is an internal
    error, and says so."""
    state = RunState.new(["a", "b"])
    state.apply(RunStarted(T0))
    assert state.apply(ABANDON).stop
    effects = state.apply(RunEnded(T1))
    assert effects.run_ended and effects.ended == ("a", "b")
    status = state.to_dict()
    assert (status["phase"], status["reason"]) == ("Failed", "InternalError")
    assert {rec["state"] for rec in status["tasks"].values()} == {"Cancelled"}


def test_end_run_is_the_same_end() -> None:
    """Ending a run by force (operator, runner, daskflow run on a signal) is RunEnded."""
    never = end_run({}, Phase.CANCELLED, "Cancelled", "cancelled by SIGINT", ["a", "b"], now=T1)
    assert never["phase"] == "Cancelled"
    assert (never["startTime"], never["completionTime"], never["duration"]) == (T1, T1, "0s")
    assert never["tasks"] == {
        n: {
            "state": "Cancelled",
            "attempts": 0,
            "completionTime": T1,
            "message": "cancelled by SIGINT",
        }
        for n in ("a", "b")
    }
    done = {**never, "runner": {"restarts": 1}}
    assert end_run(done, Phase.FAILED, "DeadlineExceeded", "late") == done


def test_failfast_trips_once_on_the_first_failure() -> None:
    state = RunState.new(["a", "b", "c"], fail_fast=True)
    assert not state.apply(TaskEnded("a", UF, T0)).fail_fast  # not a failure of its own
    assert state.apply(TaskEnded("b", F, T0)).fail_fast
    assert state.fail_fast_tripped
    assert not state.apply(TaskEnded("c", F, T0)).fail_fast


# -- random event sequences ----------------------------------------------------------------
TASKS = ("a", "b", "m")
MAPPED = ("m",)
TERMINAL = sorted(s for s in TaskState if s.terminal)
times = st.sampled_from([f"2026-12-03T10:00:0{i}Z" for i in range(4)])
names = st.sampled_from(TASKS)
small = st.integers(0, 3)

task_ended = st.builds(
    TaskEnded,
    names,
    st.sampled_from(TERMINAL),
    times,
    st.none() | st.just("why"),
    st.none() | small,
    st.none() | st.just("WorkerDied"),
)
events: st.SearchStrategy[Event] = st.one_of(
    task_ended,
    task_ended,
    task_ended,
    st.builds(RunStarted, times),
    st.builds(TaskStarted, names, st.integers(1, 3), times),
    st.builds(AttemptFailed, names, st.integers(1, 3), st.just("OSError: busy"), times),
    st.builds(WorkerLost, names, st.none() | small, small, st.just("its worker died"), times),
    st.builds(
        TaskReported,
        names,
        st.none() | st.integers(1, 3),
        st.none() | times,
        st.none() | times,
        st.sampled_from([None, "1", '"x"', "[1,2]"]),
    ),
    st.builds(MapStarted, names, small, times),
    st.builds(
        ItemsEnded, names, small, small, small, small, st.lists(small, max_size=3).map(tuple)
    ),
    st.builds(ItemsRunning, names, small),
    st.builds(RunEnded, times),
)


def reachable(current: TaskState, new: TaskState) -> bool:
    """One event moves a task by at most two steps of the table (a retry heard before its
    start: Pending, Running, Retrying)."""
    return can_move_task(current, new) or any(
        can_move_task(current, mid) and can_move_task(mid, new) for mid in TaskState
    )


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(events, max_size=30),
    st.none() | st.sampled_from([CANCEL, DEADLINE, ABANDON]),
    st.integers(0, 30),
    st.booleans(),
)
def test_random_event_sequences_keep_every_rule(
    sequence: list[Event], stop: StopRequested | None, at: int, fail_fast: bool
) -> None:
    """Any events in any order (a stop maybe among them), then the run ends: no move the
    table forbids, a terminal state never moves, and a run is Succeeded only if every
    task is Succeeded or Skipped."""
    if stop is not None:
        sequence.insert(at, stop)
    state = RunState.new(TASKS, mapped=MAPPED, fail_fast=fail_fast)
    for event in [*sequence, RunEnded(T1)]:
        before = {n: r.state for n, r in state.tasks.items()}
        phase, snapshot, version = state.phase, copy.deepcopy(state.to_dict()), state.version
        try:
            effects = state.apply(event)
        except IllegalTransition:  # refused whole: nothing changed
            assert isinstance(event, TaskEnded)
            assert not before[event.task].terminal  # a late event is dropped, not refused
            assert state.version == version and state.to_dict() == snapshot
            continue
        after = {n: r.state for n, r in state.tasks.items()}
        for name in TASKS:
            if before[name].terminal:  # a terminal state never moves
                assert after[name] == before[name]
            assert reachable(before[name], after[name])
        assert set(effects.ended) == {
            n for n in TASKS if after[n] != before[n] and after[n].terminal
        }
        if phase.terminal:
            assert state.phase == phase and not effects.run_ended
        assert state.open == sum(not s.terminal for s in after.values())
        if state.phase.terminal:
            assert state.open == 0
        if state.phase == Phase.SUCCEEDED:
            assert set(after.values()) <= {S, SK}
        for rec in state.tasks.values():
            if rec.items is not None:
                assert rec.items.running <= max(rec.items.total - rec.items.done, 0)
