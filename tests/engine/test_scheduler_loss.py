"""A run whose Dask scheduler dies fails with reason SchedulerLost, in bounded time.

distributed cancels every future of a client that loses its scheduler, then reconnects
(on Kubernetes, to the scheduler pod its Deployment starts again, with nothing of the run
in it). Found on real pods (tests/e2e): the engine took those cancellations for task
outcomes and reported the run Succeeded.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daskflow.engine.flow import FlowEngine
from daskflow.model.states import TaskState
from harness.processes import Supervised
from harness.waiting import wait_for, wait_for_async

from .helpers import Runner, command, flowrun, states

BIN = Path(sys.executable).parent


def start(*args: str) -> Supervised:
    return Supervised([str(BIN / "dask"), *args], name=f"dask {args[0]}")


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[str, Supervised]]:
    """A scheduler and a worker of this test's own, as processes: the scheduler can die."""
    info = tmp_path / "scheduler.json"
    with start(
        "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
        "--scheduler-file", str(info),
    ) as scheduler:  # fmt: skip
        wait_for(info.exists, 60, "the scheduler's address file")
        address = json.loads(info.read_text())["address"]
        with start("worker", address, "--nthreads", "2", "--no-dashboard"):
            yield address, scheduler


def test_losing_the_scheduler_fails_the_run_with_scheduler_lost(
    own_cluster: tuple[str, Supervised],
) -> None:
    address, scheduler = own_cluster
    raw = flowrun(
        command("token", "echo", "t"),
        command("hold", "sleep", "120", dependsOn=["token"]),
        command("echo", "echo", "$(tasks.token.result)", dependsOn=["hold"]),
    )

    async def kill_the_scheduler(engine: FlowEngine) -> None:
        await wait_for_async(
            lambda: engine.state.tasks["hold"].state == TaskState.RUNNING, 60, "hold Running"
        )
        scheduler.kill()

    started = time.monotonic()
    status, _ = Runner(address)(raw, during=kill_the_scheduler)
    took = time.monotonic() - started
    assert (status["phase"], status["reason"]) == ("Failed", "SchedulerLost"), status
    assert "scheduler" in status["message"]
    assert states(status) == {"token": "Succeeded", "hold": "Cancelled", "echo": "Cancelled"}
    assert took < 60, took  # hold would have run for 120 s
