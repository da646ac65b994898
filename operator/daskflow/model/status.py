"""The FlowRun status: the one object the CLI prints and the operator writes to Kubernetes.

:class:`StatusBook` holds the state of a run and is the only place that changes it. Every
change goes through the transition table of :mod:`daskflow.model.states`, so a terminal
task or phase never moves. :meth:`StatusBook.to_dict` renders the status as JSON, trimmed
to stay under the size bound whatever the flow's size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .states import Phase, TaskState, can_move_phase, can_move_task

RESULT_LIMIT = 1024  # serialized bytes of a result kept in status
MESSAGE_LIMIT = 2048
FAILED_ITEMS_LIMIT = 20
STATUS_BUDGET = 240 * 1024  # under the 256 KiB bound, with room for metadata


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def small_json(value: Any, limit: int = RESULT_LIMIT) -> tuple[bool, Any]:
    """``(True, value)`` if the value is JSON and at most ``limit`` bytes serialized."""
    if isinstance(value, str | bytes | list | dict | tuple) and len(value) > limit:
        return False, None
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return False, None
    return (len(text.encode()) <= limit, value)


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
        done = self.succeeded + self.failed + self.cancelled + self.skipped
        return max(self.total - done - self.running, 0)

    def cancel_rest(self) -> None:
        """The run stopped: items not finished (running or pending) count as cancelled.
        Counts read in the middle of an update may have an item both done and running."""
        done = self.succeeded + self.failed + self.cancelled + self.skipped
        self.cancelled += self.pending + min(self.running, max(self.total - done, 0))
        self.running = 0

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ITEM_COUNTS}


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


class StatusBook:
    """The live status of one run. Mutated only through its ``mark_*`` methods."""

    def __init__(self, task_names: list[str]) -> None:
        self.phase = Phase.PENDING
        self.start_time: str | None = None
        self.completion_time: str | None = None
        self.message: str | None = None
        self.reason: str | None = None
        self.tasks: dict[str, TaskRecord] = {name: TaskRecord() for name in task_names}
        self.version = 0  # bumped on every change, so sinks can tell what is new

    # -- run phase -------------------------------------------------------------------------
    def mark_phase(
        self, phase: Phase, message: str | None = None, reason: str | None = None
    ) -> bool:
        if not can_move_phase(self.phase, phase) or self.phase == phase:
            return False
        self.phase = phase
        if phase == Phase.RUNNING and self.start_time is None:
            self.start_time = now_iso()
        if phase.terminal:
            self.start_time = self.start_time or now_iso()
            self.completion_time = now_iso()
        if message is not None:
            self.message = message
        if reason is not None:
            self.reason = reason
        self.version += 1
        return True

    # -- tasks -----------------------------------------------------------------------------
    def mark_task(
        self,
        name: str,
        state: TaskState,
        *,
        message: str | None = None,
        attempts: int | None = None,
        start_time: str | None = None,
        completion_time: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """Move a task to ``state`` if the table allows it; returns whether it moved."""
        rec = self.tasks[name]
        if not can_move_task(rec.state, state):
            return False
        changed = rec.state != state
        rec.state = state
        if state in (TaskState.RUNNING, TaskState.RETRYING) or state == TaskState.SUCCEEDED:
            rec.start_time = rec.start_time or start_time or now_iso()
        if start_time and (rec.start_time is None or start_time < rec.start_time):
            rec.start_time = start_time
        if state.terminal:
            rec.completion_time = completion_time or rec.completion_time or now_iso()
        if message is not None:
            rec.message = message
            changed = True
        if reason is not None:
            rec.reason = reason
        if attempts is not None and attempts > rec.attempts:
            rec.attempts = attempts
            changed = True
        if changed:
            self.version += 1
        return changed

    def set_task_details(
        self,
        name: str,
        *,
        attempts: int | None = None,
        start_time: str | None = None,
        completion_time: str | None = None,
        result: tuple[bool, Any] | None = None,
        message: str | None = None,
    ) -> None:
        """Late details of a task (from a worker event), whatever its state."""
        rec = self.tasks[name]
        if attempts is not None:
            rec.attempts = max(rec.attempts, attempts)
        if start_time:
            rec.start_time = start_time
        if completion_time:
            rec.completion_time = completion_time
        if result is not None and result[0]:
            rec.result, rec.has_result = result[1], True
        if message is not None:
            rec.message = message
        self.version += 1

    def count_lost(self, name: str, more: int = 1) -> None:
        """``more`` attempts of the task ended because their worker died."""
        self.tasks[name].lost += more
        self.version += 1

    def set_items(self, name: str, counts: ItemCounts, failed_items: list[int]) -> None:
        rec = self.tasks[name]
        rec.items = counts
        rec.failed_items = sorted(failed_items)[:FAILED_ITEMS_LIMIT]
        self.version += 1

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


def end_run(
    status: dict[str, Any],
    phase: Phase,
    reason: str,
    message: str,
    task_names: Iterable[str] = (),
) -> dict[str, Any]:
    """A copy of ``status`` ended by force (cancel, deadline, lost cluster): every unfinished
    task becomes Cancelled and the run takes ``phase``. A finished run is returned as is."""
    current = Phase(status.get("phase") or Phase.PENDING)
    if current.terminal:
        return dict(status)
    stamp = now_iso()
    tasks = {}
    known = {name: {"state": str(TaskState.PENDING), "attempts": 0} for name in task_names}
    for name, rec in {**known, **(status.get("tasks") or {})}.items():
        state = TaskState(rec.get("state", TaskState.PENDING))
        if not state.terminal:
            rec = {
                **rec,
                "state": str(TaskState.CANCELLED),
                "completionTime": stamp,
                "message": message,
            }
            if isinstance(rec.get("items"), dict):
                counts = ItemCounts(
                    **{k: int(v) for k, v in rec["items"].items() if k in ITEM_COUNTS[:-1]}
                )
                counts.cancel_rest()
                rec["items"] = counts.to_dict()
        tasks[name] = rec
    out = {
        **status,
        "phase": str(phase),
        "reason": reason,
        "message": message,
        "completionTime": stamp,
        "tasks": tasks,
    }
    out.setdefault("startTime", stamp)
    out["duration"] = format_duration(out["startTime"], stamp)
    return out
