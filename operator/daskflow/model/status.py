"""The FlowRun status: the one object the CLI prints and the operator writes to Kubernetes.

:class:`StatusBook` holds the records of a run (:class:`~daskflow.model.runstate.RunState`
is the only thing that changes them), reads them back from a status object and renders
them: :meth:`StatusBook.to_dict` trims the status to stay under the size bound whatever
the flow's size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .states import Phase, TaskState

RESULT_LIMIT = 1024  # serialized bytes of a result kept in status
MESSAGE_LIMIT = 2048
FAILED_ITEMS_LIMIT = 20
STATUS_BUDGET = 240 * 1024  # under the 256 KiB bound, with room for metadata


def now_iso() -> str:
    """The time stamp of the status (UTC, whole seconds), as Kubernetes writes them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_json(value: Any, limit: int = RESULT_LIMIT) -> str | None:
    """The value as JSON text if it is JSON and at most ``limit`` bytes, else None.

    Results travel from the workers as text: Dask's own messages would turn lists into
    tuples, and the status must hold exactly what the JSON of the value says.
    """
    if isinstance(value, str | bytes | list | dict | tuple) and len(value) > limit:
        return None
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return text if len(text.encode()) <= limit else None


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit // 2 - 3] + " … " + text[-limit // 2 :]


def parse_time(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def format_duration(start: str, end: str | None) -> str:
    """``1h2m3s`` style, as kubectl prints durations."""
    stop = parse_time(end) if end else datetime.now(UTC)
    seconds = max(int((stop - parse_time(start)).total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


# The item counts of a mapped task in the status; they add up to ``total``.
ITEM_COUNTS = ("total", "succeeded", "failed", "cancelled", "skipped", "running", "pending")


@dataclass
class ItemCounts:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    cancelled: int = 0
    skipped: int = 0

    @property
    def pending(self) -> int:
        return max(self.total - self.done - self.running, 0)

    def cancel_rest(self) -> None:
        """The run stopped: items not finished (running or pending) count as cancelled.
        Counts read in the middle of an update may have an item both done and running."""
        self.cancelled += self.pending + min(self.running, max(self.total - self.done, 0))
        self.running = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled + self.skipped

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ITEM_COUNTS}

    @classmethod
    def from_dict(cls, counts: Mapping[str, Any]) -> ItemCounts:
        return cls(**{k: int(v) for k, v in counts.items() if k in ITEM_COUNTS[:-1]})


@dataclass
class TaskRecord:
    state: TaskState = TaskState.PENDING
    attempts: int = 0
    retries: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    message: str | None = None
    result: Any = None
    has_result: bool = False
    items: ItemCounts | None = None
    failed_items: list[int] = field(default_factory=list)
    reason: str | None = None  # why it failed, when not an error of its own (WorkerDied)
    lost: int = 0  # attempts (of its items) that ended because their worker died

    def to_dict(self, message_limit: int = MESSAGE_LIMIT) -> dict[str, Any]:
        out: dict[str, Any] = {"state": str(self.state), "attempts": self.attempts}
        if self.retries:
            out["retries"] = self.retries
        if self.start_time:
            out["startTime"] = self.start_time
        if self.completion_time and self.state.terminal:
            out["completionTime"] = self.completion_time
        if self.message and message_limit > 0:
            out["message"] = clip(self.message, message_limit)
        if self.has_result and self.state == TaskState.SUCCEEDED:
            out["result"] = self.result
        if self.reason and self.state == TaskState.FAILED:
            out["reason"] = self.reason
        if self.lost:
            out["lostAttempts"] = self.lost
        if self.items is not None:
            out["items"] = self.items.to_dict()
            if self.failed_items:
                out["failedItems"] = self.failed_items
        return out

    @classmethod
    def from_dict(cls, rec: Mapping[str, Any]) -> TaskRecord:
        """The record :meth:`to_dict` wrote: every field comes back."""
        items = rec.get("items")
        return cls(
            state=TaskState(rec.get("state") or TaskState.PENDING),
            attempts=int(rec.get("attempts", 0)),
            retries=int(rec.get("retries", 0)),
            start_time=rec.get("startTime"),
            completion_time=rec.get("completionTime"),
            message=rec.get("message"),
            result=rec.get("result"),
            has_result="result" in rec,
            items=ItemCounts.from_dict(items) if isinstance(items, Mapping) else None,
            failed_items=list(rec.get("failedItems") or []),
            reason=rec.get("reason"),
            lost=int(rec.get("lostAttempts", 0)),
        )


class StatusBook:
    """The records of one run, as :class:`~daskflow.model.runstate.RunState` keeps them.

    Only ``RunState`` changes them (it checks every move against the transition table);
    this class holds them, reads them back from a status object and renders them."""

    def __init__(self, task_names: Iterable[str]) -> None:
        self.phase = Phase.PENDING
        self.start_time: str | None = None
        self.completion_time: str | None = None
        self.message: str | None = None
        self.reason: str | None = None
        self.tasks: dict[str, TaskRecord] = {name: TaskRecord() for name in task_names}
        self.version = 0  # bumped on every change, so sinks can tell what is new

    @classmethod
    def from_dict(cls, status: Mapping[str, Any], task_names: Iterable[str] = ()) -> StatusBook:
        """The records of a status object (as :meth:`to_dict` wrote it), with a Pending
        record for every name in ``task_names`` that it lacks."""
        book = cls(task_names)
        book.phase = Phase(status.get("phase") or Phase.PENDING)
        book.start_time = status.get("startTime")
        book.completion_time = status.get("completionTime")
        book.message = status.get("message")
        book.reason = status.get("reason")
        for name, rec in (status.get("tasks") or {}).items():
            book.tasks[name] = TaskRecord.from_dict(rec)
        return book

    def unfinished(self) -> list[str]:
        return [n for n, r in self.tasks.items() if not r.state.terminal]

    def counts(self) -> dict[TaskState, int]:
        out: dict[TaskState, int] = {}
        for rec in self.tasks.values():
            out[rec.state] = out.get(rec.state, 0) + 1
        return out

    # -- rendering -------------------------------------------------------------------------
    def to_dict(self, budget: int = STATUS_BUDGET) -> dict[str, Any]:
        """The status object, trimmed so that its JSON stays within ``budget`` bytes."""
        head: dict[str, Any] = {"phase": str(self.phase)}
        if self.start_time:
            head["startTime"] = self.start_time
        if self.completion_time:
            head["completionTime"] = self.completion_time
        if self.message:
            head["message"] = clip(self.message)
        if self.reason:
            head["reason"] = self.reason
        if self.start_time:
            head["duration"] = format_duration(self.start_time, self.completion_time)
        counts = self.counts()
        if self.tasks:  # none: a run whose tasks are unknown (its spec is invalid)
            head["summary"] = {
                "total": len(self.tasks),
                "succeeded": counts.get(TaskState.SUCCEEDED, 0),
                "failed": counts.get(TaskState.FAILED, 0),
                "progress": f"{counts.get(TaskState.SUCCEEDED, 0)}/{len(self.tasks)}",
            }
        # Trim in steps until the whole fits: shorter messages, then no failed items; at
        # each step, as many results as fit stay (the largest go first).
        out: dict[str, Any] = {}
        for level, (message_limit, failed_items) in enumerate(_TRIM_STEPS):
            tasks = {n: r.to_dict(message_limit=message_limit) for n, r in self.tasks.items()}
            if not failed_items:
                for t in tasks.values():
                    t.pop("failedItems", None)
            out = {**head, "tasks": tasks}
            if level:
                out["truncated"] = True
            excess = len(json.dumps(out, separators=(",", ":"))) - budget
            if excess <= 0:
                break
            if _drop_largest_results(tasks, excess):
                out["truncated"] = True
                break
        return out


def _drop_largest_results(tasks: dict[str, dict[str, Any]], excess: int) -> bool:
    """Drop results, largest first, until ``excess`` bytes are gone; False if that is not
    enough. Keeps as many results as fit, rather than all or none."""
    sizes = sorted(
        (
            (len(json.dumps(t["result"], separators=(",", ":"))) + 10, n)
            for n, t in tasks.items()
            if "result" in t
        ),
        reverse=True,
    )
    if sum(size for size, _ in sizes) < excess:
        return False
    for size, name in sizes:
        if excess <= 0:
            break
        del tasks[name]["result"]
        excess -= size
    return True


# (longest message, keep failedItems) per trimming step of StatusBook.to_dict.
_TRIM_STEPS = ((MESSAGE_LIMIT, True), (256, True), (0, True), (0, False))
