"""Every process a command starts ends with its task: after a normal exit, a timeout, a
cancel, and when its worker is killed with ``kill -9``. Checked with psutil."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil

from daskflow.engine.flow import FlowEngine
from harness.waiting import wait_for_async

from .helpers import Runner, command, flowrun, states

FAMILY_SIZE = 6


def family(pidfile: Path, then: str) -> list[str]:
    """A shell command that starts the processes that used to outlive their task, writes
    the pid of each (and of its own parent) to ``pidfile``, then runs ``then``."""
    script = (
        f"echo $$ >> {pidfile}; echo $PPID >> {pidfile}; "
        f"sleep 300 & echo $! >> {pidfile}; "  # a background job that keeps stdout open
        f"sleep 300 >/dev/null 2>&1 & echo $! >> {pidfile}; "  # one with redirected output
        # one that leaves the process group and session, with a child of its own
        f'setsid sh -c "sleep 300 & echo \\$! >> {pidfile}; echo \\$\\$ >> {pidfile}; wait"'
        " >/dev/null 2>&1 & "
        f"while [ $(wc -l < {pidfile}) -lt {FAMILY_SIZE} ]; do sleep 0.05; done; {then}"
    )
    return ["sh", "-c", script]


def pids(pidfile: Path) -> list[int]:
    return [int(line) for line in pidfile.read_text().split()] if pidfile.exists() else []


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


async def started(pidfile: Path) -> None:
    await wait_for_async(lambda: len(pids(pidfile)) >= FAMILY_SIZE, 60, "the whole family")


def test_a_command_that_exits_ends_its_task_and_leaves_nothing_running(
    run: Runner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    status, _ = run(flowrun(command("bg", *family(pidfile, "echo done"), timeoutSeconds=120)))
    assert states(status) == {"bg": "Succeeded"}
    assert status["tasks"]["bg"]["result"] == "done"
    assert len(pids(pidfile)) == FAMILY_SIZE
    assert alive(pids(pidfile)) == []  # already when the task ended


def test_a_timeout_leaves_nothing_running(run: Runner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    status, _ = run(flowrun(command("slow", *family(pidfile, "sleep 300"), timeoutSeconds=5)))
    assert states(status) == {"slow": "Failed"}
    assert "timeout" in status["tasks"]["slow"]["message"]
    assert len(pids(pidfile)) == FAMILY_SIZE
    assert alive(pids(pidfile)) == []


def test_a_cancel_leaves_nothing_running(run: Runner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"

    async def cancel(engine: FlowEngine) -> None:
        await started(pidfile)
        engine.cancel("stop")

    status, _ = run(flowrun(command("slow", *family(pidfile, "sleep 300"))), during=cancel)
    assert states(status) == {"slow": "Cancelled"}
    asyncio.run(wait_for_async(lambda: not alive(pids(pidfile)), 30, "no process left"))


def test_a_killed_worker_takes_its_command_down(run: Runner, tmp_path: Path) -> None:
    pidfile, flag = tmp_path / "pids", tmp_path / "flag"
    again = f"if [ -e {flag} ]; then echo again; exit 0; fi; touch {flag}; "

    async def kill_worker(engine: FlowEngine) -> None:
        await started(pidfile)
        reaper = psutil.Process(pids(pidfile)[1])  # the parent of the command
        reaper.parent().kill()  # the worker, kill -9

    argv = family(pidfile, "sleep 300")
    argv[-1] = again + argv[-1]
    status, _ = run(flowrun(command("victim", *argv)), during=kill_worker)
    asyncio.run(wait_for_async(lambda: not alive(pids(pidfile)), 30, "no process left"))
    # Dask ran it again on a live worker.
    assert states(status) == {"victim": "Succeeded"}
    assert status["tasks"]["victim"]["result"] == "again"
