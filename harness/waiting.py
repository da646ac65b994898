"""Polling for a condition, the one way tests and benchmarks wait.

A test that waits must not sleep a guessed time: it polls for what it needs, with a generous
timeout (the machine is shared and busy). When the time is up, the error says what was
awaited and the last value seen, so a failure explains itself.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold in time (an AssertionError: a test failing, not crashing)."""


def _timed_out(what: str, timeout: float, last: object) -> WaitTimeout:
    if isinstance(last, BaseException):
        seen = f"last error: {type(last).__name__}: {last}"
    else:
        seen = f"last value: {last!r}"
    return WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; {seen}")


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.2,
    ignore: tuple[type[BaseException], ...] = (),
    until: Callable[[T | None], object] = bool,
) -> T:
    """Call ``check()`` until it returns something true (or that ``until`` accepts, for
    example ``until=lambda left: not left`` to wait for an empty list), and return that.

    An exception of a type in ``ignore`` counts as "not yet" (for example ``OSError`` while a
    server is not listening). On timeout, raise :class:`WaitTimeout` naming ``what`` and the
    last value (or error) ``check`` gave.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except ignore as exc:
            last = exc
        else:
            if until(value):
                return cast(T, value)
            last = value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)


async def wait_for_async(
    check: Callable[[], T | Awaitable[T | None] | None],
    within: float,
    what: str,
    *,
    interval: float = 0.05,
    until: Callable[[T | None], object] = bool,
) -> T:
    """:func:`wait_for` inside an event loop: the loop keeps running between the calls, and
    ``check`` may be a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        answer = check()
        value: T | None = await answer if inspect.isawaitable(answer) else answer
        if until(value):
            return cast(T, value)
        if time.monotonic() >= deadline:
            raise _timed_out(what, within, value)
        await asyncio.sleep(interval)
