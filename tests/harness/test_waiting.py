"""The polling helper: what it returns, and a timeout that explains itself."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from harness.waiting import WaitTimeout, wait_for, wait_for_async


def test_returns_the_first_true_value() -> None:
    counter = itertools.count()
    assert (
        wait_for(lambda: next(counter) >= 3 and "ready", 10, "three calls", interval=0) == "ready"
    )


def test_a_timeout_names_what_it_waited_for_and_the_last_value() -> None:
    counter = itertools.count()
    with pytest.raises(WaitTimeout) as caught:
        wait_for(
            lambda: [next(counter)], 0.2, "an empty list", interval=0.01, until=lambda v: not v
        )
    message = str(caught.value)
    assert message.startswith("timed out after 0.2s waiting for an empty list; last value: [")
    last = int(message.rsplit("[", 1)[1].rstrip("]"))
    assert last > 0  # the last value, not the first


def test_ignored_errors_are_retried_and_the_last_is_told() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("nothing listens")

    with pytest.raises(WaitTimeout, match="last error: ConnectionRefusedError: nothing listens"):
        wait_for(refused, 0.1, "a server", interval=0.01, ignore=(OSError,))


def test_other_errors_are_not_swallowed() -> None:
    def broken() -> bool:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        wait_for(broken, 5, "anything", ignore=(OSError,))


def test_the_async_wait_accepts_coroutine_checks() -> None:
    counter = itertools.count()

    async def check() -> int:
        await asyncio.sleep(0)
        return next(counter)

    async def main() -> int:
        return await wait_for_async(check, 10, "a count of 2", interval=0, until=lambda n: n == 2)

    assert asyncio.run(main()) == 2
    with pytest.raises(WaitTimeout, match="waiting for never; last value: False"):
        asyncio.run(wait_for_async(lambda: False, 0.1, "never", interval=0.01))
