"""The status object: its fields, and its size bound whatever the run's size."""

from __future__ import annotations

import json

from daskflow.model.states import Phase, TaskState
from daskflow.model.status import FAILED_ITEMS_LIMIT, ItemCounts, StatusBook, end_run, small_json

BOUND = 256 * 1024


def size(status: dict[str, object]) -> int:
    return len(json.dumps(status, separators=(",", ":")).encode())


def test_a_small_run_keeps_everything() -> None:
    book = StatusBook(["a", "b"])
    book.mark_phase(Phase.RUNNING)
    book.mark_task("a", TaskState.RUNNING, attempts=1)
    book.set_task_details("a", result=small_json({"rows": 3}))
    book.mark_task("a", TaskState.SUCCEEDED)
    book.mark_task("b", TaskState.FAILED, message="ValueError: boom", attempts=2)
    book.mark_phase(Phase.FAILED, "1 of 2 tasks failed: b", "TasksFailed")
    status = book.to_dict()
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
    assert small_json("x" * 1000) == (True, "x" * 1000)
    assert small_json("x" * 1023)[0] is False  # 1025 bytes with its quotes
    assert small_json(list(range(300)))[0] is False
    assert small_json({1, 2})[0] is False
    assert small_json(float("nan"))[0] is False
    assert small_json(object())[0] is False
    assert small_json(None) == (True, None)


def test_mapped_tasks_carry_item_counts_and_failed_items() -> None:
    book = StatusBook(["m"])
    counts = ItemCounts(total=10, succeeded=5, failed=3, running=1)
    book.set_items("m", counts, [9, 2, 4])
    rec = book.to_dict()["tasks"]["m"]
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
    book.set_items("m", counts, list(range(100, 0, -1)))
    assert book.to_dict()["tasks"]["m"]["failedItems"] == list(range(1, FAILED_ITEMS_LIMIT + 1))


def test_size_bound_500_tasks_100k_items() -> None:
    """Worst case of the contract: 500 tasks with long names, long messages and ~1 KiB
    results, and 100,000 mapped items in total, many of them failed."""
    names = [f"task-{i:03d}-" + "x" * 54 for i in range(500)]  # 63 characters, the maximum
    book = StatusBook(names)
    book.mark_phase(Phase.RUNNING)
    for i, name in enumerate(names):
        book.mark_task(name, TaskState.RUNNING, attempts=1)
        if i % 5 == 0:  # 100 mapped tasks of 1,000 items each: 100,000 items
            counts = ItemCounts(total=1000, succeeded=500, failed=500)
            book.set_items(name, counts, list(range(0, 1000, 2)))
            book.mark_task(name, TaskState.FAILED, message="E" * 10_000, attempts=101)
        elif i % 2:
            book.set_task_details(name, result=small_json("r" * 1000))
            book.mark_task(name, TaskState.SUCCEEDED, message="m" * 5000)
        else:
            book.mark_task(name, TaskState.UPSTREAM_FAILED, message="é" * 5000)
        book.tasks[name].retries = 100
    book.mark_phase(Phase.FAILED, "M" * 100_000, "TasksFailed")
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
    book.mark_phase(Phase.RUNNING)
    for i in range(500):
        book.mark_task(f"t{i}", TaskState.RETRYING, message="x" * 3000, attempts=50)
    assert size(book.to_dict()) < BOUND


def test_trimming_only_when_needed() -> None:
    book = StatusBook([f"t{i}" for i in range(50)])
    for i in range(50):
        book.set_task_details(f"t{i}", result=small_json("r" * 900))
        book.mark_task(f"t{i}", TaskState.SUCCEEDED, message="done")
    status = book.to_dict()
    assert "truncated" not in status
    assert all(rec["result"] == "r" * 900 for rec in status["tasks"].values())


def test_trimming_keeps_as_many_results_as_fit_next_to_long_messages() -> None:
    """250 results of 1 KB and 250 long error messages: the messages are shortened, and
    the results that fit next to them stay (before, the status kept none of them)."""
    ok = [f"ok-{i:03d}" for i in range(250)]
    bad = [f"bad-{i:03d}" for i in range(250)]
    book = StatusBook(ok + bad)
    book.mark_phase(Phase.RUNNING)
    for name in ok:
        book.set_task_details(name, result=small_json("r" * 1000))
        book.mark_task(name, TaskState.SUCCEEDED)
    for name in bad:
        book.mark_task(name, TaskState.FAILED, message="ValueError: " + "e" * 5000, attempts=1)
    status = book.to_dict()
    assert size(status) < BOUND
    assert status["truncated"] is True
    kept = [n for n in ok if "result" in status["tasks"][n]]
    assert len(kept) >= 100, len(kept)
    assert all(status["tasks"][n]["result"] == "r" * 1000 for n in kept)
    assert all(status["tasks"][n]["message"].startswith("ValueError: e") for n in bad)


def test_a_run_ended_by_force_counts_its_unfinished_items_as_cancelled() -> None:
    book = StatusBook(["m"])
    book.mark_phase(Phase.RUNNING)
    book.mark_task("m", TaskState.RUNNING)
    book.set_items("m", ItemCounts(total=5000, succeeded=11, failed=1, running=4), [3])
    status = end_run(book.to_dict(), Phase.CANCELLED, "Cancelled", "cancelled")
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
    book = StatusBook(["a", "b"])
    book.mark_task("a", TaskState.RUNNING, attempts=1)
    book.count_lost("a", 2)
    book.mark_task("a", TaskState.FAILED, message="its worker died", reason="WorkerDied")
    book.count_lost("b")
    book.mark_task("b", TaskState.SUCCEEDED, attempts=2)
    a, b = book.to_dict()["tasks"]["a"], book.to_dict()["tasks"]["b"]
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
