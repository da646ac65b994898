"""Task states and run phases, with the one table of transitions allowed between them.

Every state change in daskflow goes through :func:`check_task_transition` or
:func:`check_phase_transition`, so a terminal state can never move again: not after a
late event from a worker, not after a runner or operator restart.
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    UPSTREAM_FAILED = "UpstreamFailed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in TASK_TERMINAL


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in PHASE_TERMINAL


TASK_TERMINAL = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.SKIPPED,
        TaskState.UPSTREAM_FAILED,
        TaskState.CANCELLED,
    }
)
PHASE_TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})

_T = TaskState
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _T.PENDING: frozenset(
        {_T.RUNNING, _T.SUCCEEDED, _T.FAILED, _T.SKIPPED, _T.UPSTREAM_FAILED, _T.CANCELLED}
    ),
    # A mapped task is Running from its submission on, so a mapped upstream can still fail it.
    _T.RUNNING: frozenset(
        {_T.RETRYING, _T.SUCCEEDED, _T.FAILED, _T.SKIPPED, _T.UPSTREAM_FAILED, _T.CANCELLED}
    ),
    _T.RETRYING: frozenset({_T.RUNNING, _T.SUCCEEDED, _T.FAILED, _T.CANCELLED}),
    **{state: frozenset() for state in TASK_TERMINAL},
}

_P = Phase
PHASE_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    _P.PENDING: frozenset({_P.RUNNING, _P.SUCCEEDED, _P.FAILED, _P.CANCELLED}),
    _P.RUNNING: frozenset({_P.SUCCEEDED, _P.FAILED, _P.CANCELLED}),
    **{phase: frozenset() for phase in PHASE_TERMINAL},
}


class IllegalTransition(ValueError):
    """A state change that the transition table does not allow."""


def can_move_task(current: TaskState, new: TaskState) -> bool:
    return current == new or new in TASK_TRANSITIONS[current]


def can_move_phase(current: Phase, new: Phase) -> bool:
    return current == new or new in PHASE_TRANSITIONS[current]


def check_task_transition(task: str, current: TaskState, new: TaskState) -> None:
    if not can_move_task(current, new):
        raise IllegalTransition(f"task {task!r} cannot move from {current} to {new}")


def check_phase_transition(current: Phase, new: Phase) -> None:
    if not can_move_phase(current, new):
        raise IllegalTransition(f"run cannot move from {current} to {new}")
