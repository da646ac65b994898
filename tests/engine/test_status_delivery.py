"""A run whose status cannot be delivered ends, Failed with reason StatusError, instead of
running on with nobody able to see it; the error of its last delivery is raised."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.helpers import Runner, command, flowrun, states


def test_a_status_that_cannot_be_delivered_fails_the_run(run: Runner) -> None:
    offered: list[dict[str, Any]] = []

    async def broken_store(status: dict[str, Any]) -> None:
        offered.append(status)
        raise RuntimeError("the status store is down")

    with pytest.raises(RuntimeError, match="the status store is down"):
        run(
            flowrun(
                command("long", "sleep", "120"), command("after", "echo", "$(tasks.long.result)")
            ),
            on_status=broken_store,
            status_interval=0.1,
        )
    last = offered[-1]
    assert (last["phase"], last["reason"]) == ("Failed", "StatusError")
    assert last["message"] == "status delivery failed: the status store is down"
    assert states(last) == {"long": "Cancelled", "after": "Cancelled"}
