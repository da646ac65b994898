"""Stopping a run (cancel, deadline), status delivery, and resuming a run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psutil
import pytest
from distributed import Client

from daskflow.engine.flow import FlowEngine
from daskflow.model.validate import parse_flowrun
from harness.waiting import wait_for_async

from .helpers import Runner, call, command, flowrun, states, wait_idle
from .tasks import executions


def pid_command(name: str, pidfile: Path, **fields: Any) -> dict[str, Any]:
    """A command that writes its pid to ``pidfile`` (one line per attempt), then sleeps."""
    return command(name, "sh", "-c", f"echo $$ >> {pidfile}; exec sleep 60", **fields)


def pids(pidfile: Path) -> list[int]:
    return [int(line) for line in pidfile.read_text().split()] if pidfile.exists() else []


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pid: int) -> None:
    await wait_for_async(lambda: gone(pid), 30, f"process {pid} to be gone")


def test_cancel_stops_running_commands_and_marks_tasks_cancelled(
    run: Runner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    marker = tmp_path / "after"

    async def cancel_once_running(engine: FlowEngine) -> None:
        await wait_for_async(lambda: pids(pidfile), 60, "the command's pid")
        await wait_for_async(
            lambda: engine.status()["tasks"]["nap"]["state"] == "Running", 60, "nap Running"
        )
        engine.cancel("stop it")

    status, _ = run(
        flowrun(
            pid_command("nap", pidfile, retries=3),
            call("after", "record", str(marker), "$(tasks.nap.result)"),
            call("gated", "record", str(marker), dependsOn=["nap"]),
            command("items", "sleep", "$(item)", map=[60, 60, 60, 60]),
        ),
        during=cancel_once_running,
    )
    assert status["phase"] == "Cancelled"
    assert status["reason"] == "Cancelled"
    assert status["message"] == "stop it"
    assert states(status) == dict.fromkeys(["nap", "after", "gated", "items"], "Cancelled")
    assert status["tasks"]["nap"]["message"] == "stop it"
    # The items that had not finished (running or pending) count as cancelled.
    assert status["tasks"]["items"]["items"] == {
        "total": 4,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 4,
        "skipped": 0,
        "running": 0,
        "pending": 0,
    }
    (pid,) = pids(pidfile)
    asyncio.run(wait_gone(pid))
    # The killed attempt is not retried: once nothing of the run is left on the cluster, no
    # second process has started.
    asyncio.run(wait_idle(run.address))
    assert pids(pidfile) == [pid]
    assert executions(marker) == 0


def test_deadline_fails_the_run_with_deadline_exceeded(run: Runner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    status, _ = run(
        flowrun(
            pid_command("forever", pidfile),
            call("quick", "identity", 1),
            deadlineSeconds=1.5,
        )
    )
    assert status["phase"] == "Failed"
    assert status["reason"] == "DeadlineExceeded"
    assert "deadline" in status["message"]
    assert status["tasks"]["forever"]["state"] == "Cancelled"
    assert status["tasks"]["forever"]["message"] == status["message"]
    for pid in pids(pidfile):
        asyncio.run(wait_gone(pid))


def test_cancelling_the_run_coroutine_cancels_the_run(dask_address: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    flow = parse_flowrun(flowrun(pid_command("nap", pidfile)))

    async def main() -> FlowEngine:
        async with Client(dask_address, asynchronous=True) as client:
            engine = FlowEngine(flow, client)
            task = asyncio.ensure_future(engine.run())
            await wait_for_async(lambda: pids(pidfile), 60, "the command's pid")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return engine

    engine = asyncio.run(main())
    assert engine.status()["phase"] == "Cancelled"
    assert states(engine.status()) == {"nap": "Cancelled"}
    for pid in pids(pidfile):
        asyncio.run(wait_gone(pid))


def test_status_callback_is_coalesced_and_the_final_status_always_delivered(
    run: Runner,
) -> None:
    delivered: list[dict[str, Any]] = []
    status, engine = run(
        flowrun(
            call("source", "make_list", 300),
            call("items", "sleep", 0.001, map="$(tasks.source.result)"),
            call("a", "identity", "$(tasks.items.result)"),
            call("b", "length", "$(tasks.a.result)"),
        ),
        on_status=delivered.append,
        status_interval=0.5,
    )
    changes = engine.state.version
    assert status["tasks"]["b"]["result"] == 300
    assert 2 <= len(delivered) < changes  # fewer deliveries than changes
    assert engine.sink.deliveries == len(delivered)
    assert delivered[0]["phase"] == "Running"
    assert delivered[-1] == status  # the final status, exactly
    assert [d["phase"] for d in delivered].count("Succeeded") == 1


def test_final_status_is_delivered_even_with_a_long_interval(run: Runner) -> None:
    delivered: list[dict[str, Any]] = []

    async def on_status(status: dict[str, Any]) -> None:  # an async callback works too
        await asyncio.sleep(0)
        delivered.append(status)

    status, _ = run(
        flowrun(call("a", "identity", 1), call("b", "identity", "$(tasks.a.result)")),
        on_status=on_status,
        status_interval=3600,
    )
    assert delivered[-1] == status
    assert delivered[-1]["phase"] == "Succeeded"
    assert len(delivered) <= 3


def test_a_run_succeeds_only_if_no_task_failed(run: Runner) -> None:
    ok, _ = run(flowrun(call("a", "identity", 1), call("s", "identity", 1, when=False)))
    assert ok["phase"] == "Succeeded"
    bad, _ = run(flowrun(call("a", "identity", 1), call("f", "fail")))
    assert bad["phase"] == "Failed"
    assert bad["reason"] == "TasksFailed"


def test_resume_does_not_rerun_a_task_that_succeeded(run: Runner, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    raw = flowrun(
        call("first", "record", str(marker), 41),
        call("second", "add", "$(tasks.first.result)", 1),
        call("third", "record", str(marker), "$(tasks.second.result)"),
    )
    previous, _ = run(raw)
    assert executions(marker) == 2
    # As an operator restart would see it: first done, the rest cut short.
    previous["tasks"]["second"] = {"state": "Cancelled", "attempts": 1}
    previous["tasks"]["third"] = {"state": "Pending", "attempts": 0}
    previous["phase"] = "Running"

    status, _ = run(raw, previous_status=previous, values={"first": 41})
    assert executions(marker) == 3  # only third ran again, not first
    assert states(status) == dict.fromkeys(["first", "second", "third"], "Succeeded")
    assert status["tasks"]["third"]["result"] == 42
    assert status["tasks"]["first"]["startTime"] == previous["tasks"]["first"]["startTime"]

    # Without the value, a small result kept in the status serves as well ...
    status, _ = run(raw, previous_status=previous)
    assert executions(marker) == 4
    assert status["tasks"]["third"]["result"] == 42


def test_resume_reruns_a_task_whose_value_is_lost(run: Runner, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    raw = flowrun(
        call("first", "record", str(marker), "x" * 5000),  # too big for the status
        call("second", "length", "$(tasks.first.result)"),
    )
    previous, _ = run(raw)
    assert "result" not in previous["tasks"]["first"]
    status, _ = run(raw, previous_status=previous)
    assert executions(marker) == 2
    assert status["tasks"]["second"]["result"] == 5000


def test_resume_keeps_mapped_values(run: Runner, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    raw = flowrun(
        call("items", "record", str(marker), "$(item)", map=[1, 2, 3]),
        call("sum", "identity", "$(tasks.items.result)"),
    )
    previous, _ = run(raw)
    assert executions(marker) == 3
    previous["tasks"]["sum"] = {"state": "Pending", "attempts": 0}
    status, _ = run(raw, previous_status=previous, values={"items": [1, 2, 3]})
    assert executions(marker) == 3
    assert status["tasks"]["sum"]["result"] == [1, 2, 3]
    assert status["tasks"]["items"]["items"]["total"] == 3


def test_published_values_let_a_later_engine_resume(
    run: Runner, dask_address: str, tmp_path: Path
) -> None:
    """The operator's resume path: values published on the cluster by one engine are
    taken as values by the next one, which then runs only what is left."""
    marker = tmp_path / "runs"
    raw = flowrun(
        call("single", "record", str(marker), "x" * 5000),
        call("items", "record", str(marker), "$(item)", map=[1, 2]),
        call("both", "sizes", "$(tasks.single.result)", "$(tasks.items.result)"),
    )
    prefix = f"test-{tmp_path.name}-"
    previous, _ = run(raw, publish_prefix=prefix)
    assert executions(marker) == 3
    previous["tasks"]["both"] = {"state": "Pending", "attempts": 0}

    async def fetch() -> dict[str, Any]:
        async with Client(dask_address, asynchronous=True) as client:
            values = {name: await client.get_dataset(prefix + name) for name in ("single", "items")}
            return values

    async def cleanup() -> None:
        async with Client(dask_address, asynchronous=True) as client:
            for name in ("single", "items", "both"):
                await client.unpublish_dataset(prefix + name)

    try:
        values = asyncio.run(fetch())
        status, _ = run(raw, previous_status=previous, values=values)
    finally:
        asyncio.run(cleanup())
    assert executions(marker) == 3
    assert status["phase"] == "Succeeded"
    assert status["tasks"]["both"]["result"] == [5000, 2]


def test_cancel_before_run_runs_nothing(dask_address: str, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    flow = parse_flowrun(flowrun(call("a", "record", str(marker)), call("b", "identity", 1)))

    async def main() -> dict[str, Any]:
        async with Client(dask_address, asynchronous=True) as client:
            engine = FlowEngine(flow, client)
            engine.cancel("not today")
            return await engine.run()

    status = asyncio.run(main())
    assert status["phase"] == "Cancelled"
    assert status["message"] == "not today"
    assert states(status) == {"a": "Cancelled", "b": "Cancelled"}
    assert executions(marker) == 0


def test_resume_keeps_every_field_of_a_finished_task(run: Runner, tmp_path: Path) -> None:
    """Resuming adopts a finished task's record whole: retries, message, times, result."""
    flag = tmp_path / "failed-once"
    raw = flowrun(
        command("flaky", "sh", "-c", f"test -e {flag} || {{ touch {flag}; exit 1; }}", retries=1),
        call("after", "identity", "$(tasks.flaky.result)"),
    )
    previous, _ = run(raw)
    assert previous["tasks"]["flaky"]["retries"] == 1
    previous["tasks"]["after"] = {"state": "Pending", "attempts": 0}
    previous["phase"] = "Running"
    status, _ = run(raw, previous_status=previous)
    assert status["phase"] == "Succeeded"
    assert status["tasks"]["flaky"] == previous["tasks"]["flaky"]
