"""A task that kills its worker (``os._exit``, a segfault, the memory limit) is an attempt
that failed, within the task's retries, with a reason and a message that say the worker
died and how; a worker killed from outside is a lost attempt that Dask runs again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from distributed import LocalCluster

from daskflow.engine.flow import FlowEngine
from daskflow.engine.local import worker_pythonpath
from harness.waiting import wait_for_async

from .conftest import ROOT
from .helpers import Runner, call, flowrun, states


def test_a_task_that_kills_its_worker_fails_within_its_retries(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("crash", "die", 3, retries=1),
            call("child", "identity", "$(tasks.crash.result)"),
            call("other", "identity", 1),
        )
    )
    assert states(status) == {"crash": "Failed", "child": "UpstreamFailed", "other": "Succeeded"}
    tasks = status["tasks"]
    assert tasks["crash"]["attempts"] == 2  # the first attempt and one retry
    assert tasks["crash"]["lostAttempts"] == 2
    assert tasks["crash"]["reason"] == "WorkerDied"
    assert tasks["crash"]["message"] == "its worker died: exit code 3"
    assert "reason" not in tasks["other"] and "lostAttempts" not in tasks["other"]


def test_a_crash_says_how_and_a_retry_after_a_crash_can_succeed(
    run: Runner, tmp_path: Path
) -> None:
    status, _ = run(
        flowrun(
            call("crash-once", "die_unless", str(tmp_path / "flag"), 4, retries=1),
            call("segfault", "segfault"),
        )
    )
    assert states(status) == {"crash-once": "Succeeded", "segfault": "Failed"}
    tasks = status["tasks"]
    assert tasks["crash-once"]["attempts"] == 2
    assert tasks["crash-once"]["lostAttempts"] == 1
    assert tasks["crash-once"]["result"] == "survived"
    assert tasks["crash-once"]["message"] == (
        "succeeded on attempt 2 after its worker died: exit code 4"
    )
    assert tasks["segfault"]["attempts"] == 1
    assert tasks["segfault"]["reason"] == "WorkerDied"
    assert tasks["segfault"]["message"] == "its worker died: killed by signal 11 (SIGSEGV)"


def test_a_mapped_item_that_kills_its_worker_fails_alone(run: Runner) -> None:
    status, _ = run(flowrun(call("items", "die_on", "$(item)", 2, 5, map=[0, 1, 2, 3, 4, 5])))
    rec = status["tasks"]["items"]
    assert rec["state"] == "Failed"
    assert rec["failedItems"] == [2]
    assert rec["items"]["succeeded"] == 5
    assert rec["reason"] == "WorkerDied"
    assert rec["message"] == "1 of 6 items failed; item 2: its worker died: exit code 5"
    assert rec["lostAttempts"] == 1


def newest_pid(folder: Path) -> int:
    """The worker of the item that started last (it sleeps for seconds)."""
    return int(max(folder.iterdir(), key=lambda p: p.stat().st_mtime).read_text())


def test_a_worker_killed_from_outside_is_a_lost_attempt_run_again(
    run: Runner, tmp_path: Path
) -> None:
    items = list(range(6))

    async def kill_a_busy_worker(engine: FlowEngine) -> None:
        await wait_for_async(lambda: len(list(tmp_path.iterdir())) >= 3, 60, "three items started")
        psutil.Process(newest_pid(tmp_path)).kill()  # kill -9, mid-item

    status, _ = run(
        flowrun(call("items", "started_then_sleep", str(tmp_path), "$(item)", 3, map=items)),
        during=kill_a_busy_worker,
    )
    rec = status["tasks"]["items"]
    assert rec["state"] == "Succeeded"  # retries: 0, yet the killed item ran again
    assert rec["result"] == items
    assert rec["lostAttempts"] == 1
    assert status["phase"] == "Succeeded"


@pytest.fixture(scope="module")
def small_worker() -> Iterator[str]:
    """One worker with a 400 MB memory limit, which its nanny enforces."""
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        memory_limit="400MB",
        dashboard_address=":0",
        worker_dashboard_address=None,
        silence_logs=logging.CRITICAL,
        env={"PYTHONPATH": worker_pythonpath([ROOT])},
    ) as cluster:
        yield cluster.scheduler_address


def test_a_task_over_the_memory_limit_fails_out_of_memory(small_worker: str) -> None:
    status, _ = Runner(small_worker)(
        flowrun(call("hog", "hog", 40, 100, retries=1), call("small", "identity", 1))
    )
    rec = status["tasks"]["hog"]
    assert rec["state"] == "Failed"
    assert rec["attempts"] == 2
    assert rec["reason"] == "OutOfMemory"
    assert rec["message"] == "its worker died: out of memory (the worker's memory limit)"
    assert status["tasks"]["small"]["state"] == "Succeeded"
