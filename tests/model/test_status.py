"""The status object: its fields, and its size bound whatever the run's size."""

from __future__ import annotations

import json

from daskflow.model.events import (
    AttemptFailed,
    ItemsEnded,
    ItemsRunning,
    MapStarted,
    RunEnded,
    RunStarted,
    TaskEnded,
    TaskReported,
    TaskStarted,
    WorkerLost,
)
from daskflow.model.runstate import RunState, end_run
from daskflow.model.states import Phase, TaskState
from daskflow.model.status import (
    FAILED_ITEMS_LIMIT,
    ItemCounts,
    StatusBook,
    TaskRecord,
    result_json,
)

BOUND = 256 * 1024
T0, T1 = "2026-12-03T10:00:00Z", "2026-12-03T10:00:05Z"


def ended_book(names: list[str], message: str) -> StatusBook:
    book = StatusBook(names)
    book.phase, book.message, book.reason = Phase.FAILED, message, "TasksFailed"
    book.start_time = book.completion_time = T0
    return book


def succeeded_with(result: object, message: str | None = None) -> TaskRecord:
    return TaskRecord(TaskState.SUCCEEDED, 1, message=message, result=result, has_result=True)


def size(status: dict[str, object]) -> int:
    return len(json.dumps(status, separators=(",", ":")).encode())


def test_a_small_run_keeps_everything() -> None:
    state = RunState.new(["a", "b"])
    state.apply(RunStarted(T0))
    state.apply(TaskStarted("a", 1, T0))
    state.apply(TaskReported("a", 1, T0, T1, result_json({"rows": 3})))
    state.apply(TaskEnded("a", TaskState.SUCCEEDED, T1))
    state.apply(TaskEnded("b", TaskState.FAILED, T1, "ValueError: boom", attempts=2))
    state.apply(RunEnded(T1))
    status = state.to_dict()
    assert status["phase"] == "Failed"
    assert status["message"] == "1 of 2 tasks failed: b"
    assert {"startTime", "completionTime"} <= status.keys()
    assert "truncated" not in status
    a, b = status["tasks"]["a"], status["tasks"]["b"]
    assert a["state"] == "Succeeded"
    assert a["result"] == {"rows": 3}
    assert a["attempts"] == 1
    assert {"startTime", "completionTime"} <= a.keys()
    assert b == {
        "state": "Failed",
        "attempts": 2,
        "completionTime": b["completionTime"],
        "message": "ValueError: boom",
    }


def test_results_are_kept_only_when_json_and_at_most_1_kib() -> None:
    assert result_json("x" * 1000) == '"' + "x" * 1000 + '"'
    assert result_json("x" * 1023) is None  # 1025 bytes with its quotes
    assert result_json(list(range(300))) is None
    assert result_json({1, 2}) is None
    assert result_json(float("nan")) is None
    assert result_json(object()) is None
    assert result_json(None) == "null"


def test_mapped_tasks_carry_item_counts_and_failed_items() -> None:
    state = RunState.new(["m"], mapped=["m"])
    state.apply(MapStarted("m", 10, T0))
    state.apply(ItemsRunning("m", 1))
    state.apply(ItemsEnded("m", succeeded=5, failed=3, failed_items=(9, 2, 4)))
    rec = state.to_dict()["tasks"]["m"]
    assert rec["items"] == {
        "total": 10,
        "succeeded": 5,
        "failed": 3,
        "cancelled": 0,
        "skipped": 0,
        "running": 1,
        "pending": 1,
    }
    assert rec["failedItems"] == [2, 4, 9]
    state.apply(ItemsEnded("m", failed=1, failed_items=tuple(range(100, 0, -1))))
    assert state.to_dict()["tasks"]["m"]["failedItems"] == list(range(1, FAILED_ITEMS_LIMIT + 1))


def test_size_bound_500_tasks_100k_items() -> None:
    """Worst case of the contract: 500 tasks with long names, long messages and ~1 KiB
    results, and 100,000 mapped items in total, many of them failed."""
    names = [f"task-{i:03d}-" + "x" * 54 for i in range(500)]  # 63 characters, the maximum
    book = ended_book(names, "M" * 100_000)
    for i, name in enumerate(names):
        if i % 5 == 0:  # 100 mapped tasks of 1,000 items each: 100,000 items
            book.tasks[name] = TaskRecord(
                TaskState.FAILED,
                attempts=101,
                message="E" * 10_000,
                items=ItemCounts(total=1000, succeeded=500, failed=500),
                failed_items=list(range(0, 1000, 2))[:FAILED_ITEMS_LIMIT],
            )
        elif i % 2:
            book.tasks[name] = TaskRecord(
                TaskState.SUCCEEDED, 1, message="m" * 5000, result="r" * 1000, has_result=True
            )
        else:
            book.tasks[name] = TaskRecord(TaskState.UPSTREAM_FAILED, 1, message="é" * 5000)
        book.tasks[name].retries = 100
    status = book.to_dict()
    assert size(status) < BOUND
    assert len(status["tasks"]) == 500  # every task is still there, with its state
    assert all(rec["state"] for rec in status["tasks"].values())
    assert status["truncated"] is True
    mapped = status["tasks"][names[0]]
    assert mapped["items"]["total"] == 1000
    assert sum(r.get("items", {}).get("total", 0) for r in status["tasks"].values()) == 100_000


def test_size_bound_holds_while_running_and_for_the_yaml_output() -> None:
    book = StatusBook([f"t{i}" for i in range(500)])
    book.phase = Phase.RUNNING
    for rec in book.tasks.values():
        rec.state, rec.message, rec.attempts = TaskState.RETRYING, "x" * 3000, 50
    assert size(book.to_dict()) < BOUND


def test_trimming_only_when_needed() -> None:
    book = StatusBook([f"t{i}" for i in range(50)])
    for name in book.tasks:
        book.tasks[name] = succeeded_with("r" * 900, message="done")
    status = book.to_dict()
    assert "truncated" not in status
    assert all(rec["result"] == "r" * 900 for rec in status["tasks"].values())


def test_trimming_keeps_as_many_results_as_fit_next_to_long_messages() -> None:
    """250 results of 1 KB and 250 long error messages: the messages are shortened, and
    the results that fit next to them stay (before, the status kept none of them)."""
    ok = [f"ok-{i:03d}" for i in range(250)]
    bad = [f"bad-{i:03d}" for i in range(250)]
    book = StatusBook(ok + bad)
    for name in ok:
        book.tasks[name] = succeeded_with("r" * 1000)
    for name in bad:
        book.tasks[name] = TaskRecord(TaskState.FAILED, 1, message="ValueError: " + "e" * 5000)
    status = book.to_dict()
    assert size(status) < BOUND
    assert status["truncated"] is True
    kept = [n for n in ok if "result" in status["tasks"][n]]
    assert len(kept) >= 100, len(kept)
    assert all(status["tasks"][n]["result"] == "r" * 1000 for n in kept)
    assert all(status["tasks"][n]["message"].startswith("ValueError: e") for n in bad)


def test_a_run_ended_by_force_counts_its_unfinished_items_as_cancelled() -> None:
    state = RunState.new(["m"], mapped=["m"])
    state.apply(RunStarted(T0))
    state.apply(MapStarted("m", 5000, T0))
    state.apply(ItemsRunning("m", 4))
    state.apply(ItemsEnded("m", succeeded=11, failed=1, failed_items=(3,)))
    status = end_run(state.to_dict(), Phase.CANCELLED, "Cancelled", "cancelled")
    items = status["tasks"]["m"]["items"]
    assert items == {
        "total": 5000,
        "succeeded": 11,
        "failed": 1,
        "cancelled": 4988,
        "skipped": 0,
        "running": 0,
        "pending": 0,
    }


def test_a_task_whose_worker_died_says_so() -> None:
    state = RunState.new(["a", "b"])
    state.apply(TaskStarted("a", 1, T0))
    state.apply(WorkerLost("a", None, 2, "its worker died", T0))
    state.apply(TaskEnded("a", TaskState.FAILED, T1, "its worker died", reason="WorkerDied"))
    state.apply(WorkerLost("b", None, 1, "its worker died", T0))
    state.apply(TaskEnded("b", TaskState.SUCCEEDED, T1, attempts=2))
    a, b = state.to_dict()["tasks"]["a"], state.to_dict()["tasks"]["b"]
    assert (a["reason"], a["lostAttempts"]) == ("WorkerDied", 2)
    assert "reason" not in b  # a reason says why a task failed
    assert b["lostAttempts"] == 1


def test_end_run_adds_up_items_read_in_the_middle_of_an_update() -> None:
    """An exit at once reads the status from another thread: an item may count as
    succeeded already and as running still."""
    status = {"phase": "Running", "tasks": {"work": {"state": "Running", "items": {}}}}
    status["tasks"]["work"]["items"] = {"total": 10, "succeeded": 6, "running": 5}
    items = end_run(status, Phase.CANCELLED, "Cancelled", "cancelled")["tasks"]["work"]["items"]
    assert items == {
        "total": 10,
        "succeeded": 6,
        "failed": 0,
        "cancelled": 4,
        "skipped": 0,
        "running": 0,
        "pending": 0,
    }


def test_a_status_reads_back_as_it_was_written() -> None:
    """from_dict is the one way to take a run over: every field of a record survives."""
    state = RunState.new(["a", "m"], mapped=["m"])
    state.apply(RunStarted(T0))
    state.apply(TaskStarted("a", 1, T0))
    state.apply(AttemptFailed("a", 1, "OSError: busy", T0))
    state.apply(WorkerLost("a", None, 1, "its worker died", T0))
    state.apply(TaskReported("a", 3, T0, T1, result_json([1, "x"])))
    state.apply(TaskEnded("a", TaskState.SUCCEEDED, T1))
    state.apply(MapStarted("m", 4, T0))
    state.apply(ItemsRunning("m", 1))
    state.apply(ItemsEnded("m", succeeded=2, failed=1, failed_items=(3,)))
    status = state.to_dict()
    assert status["tasks"]["a"]["retries"] == 1
    assert status["tasks"]["a"]["lostAttempts"] == 1
    assert RunState.from_dict(status).to_dict() == status
