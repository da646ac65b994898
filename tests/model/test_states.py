"""The transition table: terminal states never move, whatever comes late."""

from __future__ import annotations

import itertools

import pytest

from daskflow.model.events import NOTHING, RunEnded, RunStarted, TaskEnded, TaskStarted
from daskflow.model.runstate import RunState
from daskflow.model.states import (
    PHASE_TERMINAL,
    TASK_TERMINAL,
    IllegalTransition,
    Phase,
    TaskState,
    can_move_phase,
    can_move_task,
    check_phase_transition,
    check_task_transition,
)
from daskflow.model.status import StatusBook, TaskRecord

T = "2026-12-03T10:00:00Z"


def test_the_contract_names_states_and_phases() -> None:
    assert [s.value for s in TaskState] == [
        "Pending",
        "Running",
        "Retrying",
        "Succeeded",
        "Failed",
        "Skipped",
        "UpstreamFailed",
        "Cancelled",
    ]
    assert [p.value for p in Phase] == ["Pending", "Running", "Succeeded", "Failed", "Cancelled"]
    assert (
        {s for s in TaskState if s.terminal}
        == TASK_TERMINAL
        == {
            TaskState.SUCCEEDED,
            TaskState.FAILED,
            TaskState.SKIPPED,
            TaskState.UPSTREAM_FAILED,
            TaskState.CANCELLED,
        }
    )
    assert {p for p in Phase if p.terminal} == PHASE_TERMINAL


@pytest.mark.parametrize(
    ("current", "new"),
    [(c, n) for c, n in itertools.product(TaskState, TaskState) if c.terminal and c != n],
)
def test_a_terminal_task_never_moves(current: TaskState, new: TaskState) -> None:
    assert not can_move_task(current, new)
    with pytest.raises(IllegalTransition):
        check_task_transition("t", current, new)
    book = StatusBook(["t"])
    book.tasks["t"] = TaskRecord(current)
    state = RunState(book)
    version = state.version
    late = TaskEnded("t", new, T, "late", 9) if new.terminal else TaskStarted("t", 9, T)
    assert state.apply(late) == NOTHING  # a late event changes nothing
    assert state.tasks["t"].state == current
    assert state.version == version


@pytest.mark.parametrize(
    ("current", "new"),
    [(c, n) for c, n in itertools.product(Phase, Phase) if c.terminal and c != n],
)
def test_a_terminal_phase_never_moves(current: Phase, new: Phase) -> None:
    assert not can_move_phase(current, new)
    with pytest.raises(IllegalTransition):
        check_phase_transition(current, new)
    book = StatusBook(["t"])
    book.phase = current
    state = RunState(book)
    assert state.apply(RunStarted(T)) == state.apply(RunEnded(T)) == NOTHING
    assert state.phase == current


@pytest.mark.parametrize("state", list(TaskState))
def test_staying_put_is_always_allowed(state: TaskState) -> None:
    assert can_move_task(state, state)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (TaskState.PENDING, TaskState.RUNNING),
        (TaskState.RUNNING, TaskState.RETRYING),
        (TaskState.RETRYING, TaskState.RUNNING),
        (TaskState.RUNNING, TaskState.SUCCEEDED),
        (TaskState.RETRYING, TaskState.FAILED),
        (TaskState.PENDING, TaskState.UPSTREAM_FAILED),
        (TaskState.RUNNING, TaskState.UPSTREAM_FAILED),  # a mapped task fed by a mapped one
        (TaskState.PENDING, TaskState.SKIPPED),
        (TaskState.RUNNING, TaskState.CANCELLED),
        (TaskState.RETRYING, TaskState.CANCELLED),
    ],
)
def test_the_moves_a_run_makes(current: TaskState, new: TaskState) -> None:
    assert can_move_task(current, new)


def test_nothing_goes_back_to_pending() -> None:
    for state in TaskState:
        if state != TaskState.PENDING:
            assert not can_move_task(state, TaskState.PENDING)


def test_run_state_refuses_a_move_the_table_forbids() -> None:
    book = StatusBook(["t"])
    book.tasks["t"] = TaskRecord(TaskState.RETRYING)
    state = RunState(book)
    with pytest.raises(IllegalTransition, match="'t' cannot move from Retrying to Skipped"):
        state.apply(TaskEnded("t", TaskState.SKIPPED, T))
    assert state.tasks["t"].state == TaskState.RETRYING
