"""The transition table: terminal states never move, whatever comes late."""

from __future__ import annotations

import itertools

import pytest

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
from daskflow.model.status import StatusBook


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
    book.tasks["t"].state = current
    version = book.version
    assert book.mark_task("t", new, message="late", attempts=9) is False
    assert book.tasks["t"].state == current
    assert book.version == version


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
    assert book.mark_phase(new, "late") is False
    assert book.phase == current


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
