"""``sys.exit()``, KeyboardInterrupt and other BaseExceptions are ordinary task outcomes:
they never kill a Dask worker (four dead workers make Dask fail unrelated tasks)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from distributed import Client

from .helpers import Runner, call, flowrun, states


def worker_pids(address: str) -> dict[str, int]:
    async def main() -> dict[str, int]:
        async with Client(address, asynchronous=True) as client:
            pids: dict[str, int] = await client.run(os.getpid)
            return pids

    return asyncio.run(main())


def test_sys_exit_zero_succeeds_with_none_and_nonzero_fails_with_its_code(
    run: Runner, dask_address: str
) -> None:
    before = worker_pids(dask_address)
    status, _ = run(
        flowrun(
            call("zero", "exit_with", 0),
            call("none", "exit_with", None),
            call("three", "exit_with", 3, retries=2),
            call("text", "exit_with", "no input files"),
            call("after", "identity", "$(tasks.zero.result)"),
            call("timed", "exit_with", 4, timeoutSeconds=30),
            call("timed-zero", "exit_with", 0, timeoutSeconds=30),
        )
    )
    assert states(status) == {
        "zero": "Succeeded",
        "none": "Succeeded",
        "three": "Failed",
        "text": "Failed",
        "after": "Succeeded",
        "timed": "Failed",
        "timed-zero": "Succeeded",
    }
    tasks = status["tasks"]
    assert tasks["zero"]["result"] is None
    assert tasks["after"]["result"] is None
    assert tasks["three"]["attempts"] == 3  # retries apply as for any failure
    assert tasks["three"]["message"].startswith("SystemExit: exit code 3\n")
    assert "in exit_with" in tasks["three"]["message"]
    assert tasks["text"]["message"].startswith("SystemExit: no input files")
    assert tasks["timed"]["message"].startswith("SystemExit: exit code 4")
    assert worker_pids(dask_address) == before  # no worker died


def test_keyboard_interrupt_and_other_base_exceptions_fail_the_task_not_the_worker(
    run: Runner, dask_address: str
) -> None:
    before = worker_pids(dask_address)
    kinds: dict[str, Any] = {"interrupt": "KeyboardInterrupt", "own": "Interrupted"}
    status, _ = run(
        flowrun(
            *[call(k, "raise_base", k, retries=1) for k in kinds],
            call("generator", "raise_base", "generator", timeoutSeconds=30),
            # More failing items than Dask tolerates dead workers for one task (4).
            call("items", "exit_with", "$(item)", map=[1, 0, 2, 3, 4, 5, 6, 7]),
            call("other", "identity", 1),
        )
    )
    tasks = status["tasks"]
    for kind, name in kinds.items():
        assert tasks[kind]["state"] == "Failed"
        assert tasks[kind]["attempts"] == 2
        assert tasks[kind]["message"].startswith(name), tasks[kind]["message"]
    assert tasks["generator"]["message"].startswith("GeneratorExit")
    assert tasks["items"]["items"]["failed"] == 7
    assert tasks["items"]["failedItems"] == [0, 2, 3, 4, 5, 6, 7]
    assert "item 0: SystemExit: exit code 1" in tasks["items"]["message"]
    assert tasks["other"]["state"] == "Succeeded"
    assert worker_pids(dask_address) == before
