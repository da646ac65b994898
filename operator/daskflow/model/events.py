"""The events that change a run's state, and what follows from one.

Each event is a small frozen fact, with the time it happened when it moves a record:
:class:`~daskflow.model.runstate.RunState` takes them one by one and answers with
:class:`Effects`. The engine turns Dask futures and worker events into these; whoever ends
a run by force (the operator, ``daskflow run`` on a signal) uses :class:`StopRequested`
and :class:`RunEnded`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .states import Phase, TaskState


@dataclass(frozen=True, slots=True)
class RunStarted:
    time: str


@dataclass(frozen=True, slots=True)
class TaskStarted:
    """An attempt (counted from 1) of a task started on a worker."""

    task: str
    attempt: int
    time: str


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """An attempt of a task (or of one of its items) failed, and another one follows."""

    task: str
    attempt: int
    message: str
    time: str


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """``lost`` attempts in all of a task (of its item ``item``) ended with their worker;
    Dask runs it again."""

    task: str
    item: int | None
    lost: int
    message: str
    time: str


@dataclass(frozen=True, slots=True)
class TaskReported:
    """The details a task's worker sends when it succeeded (only the first report counts),
    or a mapped task's result fetched at the end. ``result`` is JSON text."""

    task: str
    attempts: int | None = None
    start: str | None = None
    end: str | None = None
    result: str | None = None


@dataclass(frozen=True, slots=True)
class MapStarted:
    """A mapped task fans out over ``total`` items."""

    task: str
    total: int
    time: str


@dataclass(frozen=True, slots=True)
class ItemsEnded:
    """Items of a mapped task ended; ``failed_items``: indices of those that failed
    themselves (not because of an upstream)."""

    task: str
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    failed_items: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ItemsRunning:
    """About this many items of a mapped task run now."""

    task: str
    running: int


@dataclass(frozen=True, slots=True)
class TaskEnded:
    """A task reached a terminal state."""

    task: str
    state: TaskState
    time: str
    message: str | None = None
    attempts: int | None = None
    reason: str | None = None  # why it failed when not an error of its own (WorkerDied)

    def __post_init__(self) -> None:
        if not self.state.terminal:
            raise ValueError(f"TaskEnded with {self.state}, which is not a terminal state")


@dataclass(frozen=True, slots=True)
class StopRequested:
    """Stop the run (the first request wins): a cancel, a deadline, a lost scheduler, an
    internal error. Unfinished tasks end Cancelled, and the run takes ``phase``."""

    message: str
    phase: Phase = Phase.CANCELLED
    reason: str = "Cancelled"

    @classmethod
    def internal(cls, message: str) -> StopRequested:
        return cls(f"{message} (internal error)", Phase.FAILED, "InternalError")


@dataclass(frozen=True, slots=True)
class RunEnded:
    """The run is over (the engine has nothing left to do, or it is ended by force)."""

    time: str


Event = (
    RunStarted
    | TaskStarted
    | AttemptFailed
    | WorkerLost
    | TaskReported
    | MapStarted
    | ItemsEnded
    | ItemsRunning
    | TaskEnded
    | StopRequested
    | RunEnded
)


@dataclass(frozen=True, slots=True)
class Effects:
    """What follows from an event, for the engine to act on."""

    ended: tuple[str, ...] = ()  # tasks that just ended: their dependents may be ready now
    fail_fast: bool = False  # failFast tripped: start no new task, cancel what has not started
    stop: bool = False  # a stop was accepted: stop the run now
    run_ended: bool = False


NOTHING = Effects()
