"""The embedded cluster's event loop: a Dask message that fails because the other side
closed first (a nanny's event to a scheduler that has just shut down) is no traceback on
stderr, and every other unretrieved error still is."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from distributed.comm import CommClosedError

from daskflow.engine.local import quiet_closed_comms


def unretrieved(exc: BaseException, caplog: pytest.LogCaptureFixture) -> list[str]:
    """What asyncio reports about a task whose exception nobody retrieved."""

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(quiet_closed_comms)

        async def fail() -> None:
            raise exc

        task = asyncio.ensure_future(fail())
        await asyncio.wait([task])
        del task
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
    return [r.getMessage() for r in caplog.records if r.name == "asyncio"]


def test_a_comm_closed_by_the_other_side_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    assert unretrieved(CommClosedError("in <TCP (closed)>: Stream is closed"), caplog) == []


def test_any_other_unretrieved_error_is_still_reported(caplog: pytest.LogCaptureFixture) -> None:
    assert any("never retrieved" in m for m in unretrieved(ValueError("boom"), caplog))
