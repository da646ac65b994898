"""Manifests and a runner for the engine tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from distributed import Client

from daskflow.engine.flow import FlowEngine
from daskflow.model.validate import parse_flowrun
from harness.waiting import wait_for_async

T = "tests.engine.tasks"  # module of the test task functions


def flowrun(*tasks: dict[str, Any], name: str = "test", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"tasks": list(tasks), **spec},
    }


def call(name: str, fn: str, *args: Any, **fields: Any) -> dict[str, Any]:
    """A call task of a function of tests.engine.tasks (or any "module:attr")."""
    target = fn if ":" in fn else f"{T}:{fn}"
    return {"name": name, "call": target, "args": list(args), **fields}


def command(name: str, *argv: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "command": list(argv), **fields}


During = Callable[[FlowEngine], Awaitable[None]]


class Runner:
    """Runs a manifest on the session cluster: ``run(raw)`` -> (status, engine)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def __call__(
        self, raw: dict[str, Any], *, during: During | None = None, **engine_kwargs: Any
    ) -> tuple[dict[str, Any], FlowEngine]:
        flow = parse_flowrun(raw)

        async def main() -> tuple[dict[str, Any], FlowEngine]:
            async with Client(self.address, asynchronous=True) as client:
                engine = FlowEngine(flow, client, **engine_kwargs)
                run = asyncio.ensure_future(engine.run())
                if during is not None:
                    await during(engine)
                status = await run
                return status, engine

        return asyncio.run(main())


def states(status: dict[str, Any]) -> dict[str, str]:
    return {name: rec["state"] for name, rec in status["tasks"].items()}


def _known_tasks(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


def _executing(dask_worker: Any) -> int:
    return int(dask_worker.state.executing_count)


async def wait_idle(address: str, within: float = 60.0) -> None:
    """Until the cluster holds no task: none known to the scheduler, none executing on a
    worker. From then on nothing of a run that has ended can still start."""
    async with Client(address, asynchronous=True) as client:

        async def held() -> dict[str, Any]:
            return {
                "scheduler": await client.run_on_scheduler(_known_tasks),
                "executing": await client.run(_executing),
            }

        await wait_for_async(
            held,
            within,
            "the cluster to hold no task",
            until=lambda now: not now["scheduler"] and not any(now["executing"].values()),
        )
