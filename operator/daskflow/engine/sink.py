"""Coalesced status delivery: at most one update per interval, phase changes at once.

The engine changes status far more often than anyone should write it (a 10,000-item map
finishes thousands of items a second); the operator patches Kubernetes about once a
second. :class:`CoalescingSink` sits between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

StatusCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class CoalescingSink:
    """Delivers ``render()`` to ``emit`` when poked, no more than once per ``interval``."""

    def __init__(
        self,
        render: Callable[[], dict[str, Any]],
        version: Callable[[], int],
        emit: StatusCallback | None,
        interval: float = 1.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._render, self._version, self._emit = render, version, emit
        self._on_error = on_error
        self.interval = interval
        self._sent_version = -1
        self._last_sent = 0.0
        self._wake = asyncio.Event()
        self._urgent = False
        self._task: asyncio.Task[None] | None = None
        self.deliveries = 0

    def start(self) -> None:
        if self._emit is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def poke(self, urgent: bool = False) -> None:
        self._urgent = self._urgent or urgent
        self._wake.set()

    async def _deliver(self) -> None:
        version = self._version()
        if self._emit is None or version == self._sent_version:
            return
        self._sent_version = version
        self._last_sent = time.monotonic()
        self.deliveries += 1
        result = self._emit(self._render())
        if inspect.isawaitable(result):
            await result

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            if not self._urgent:
                wait = self.interval - (time.monotonic() - self._last_sent)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_urgent(), wait)
            self._wake.clear()
            self._urgent = False
            try:
                await self._deliver()
            except Exception as exc:  # the receiver cannot take status any more
                if self._on_error is not None:
                    self._on_error(exc)
                return

    async def _wait_urgent(self) -> None:
        while not self._urgent:
            self._wake.clear()
            await self._wake.wait()

    async def close(self) -> None:
        """Stop the loop and deliver the final state once (always, if anything changed)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._deliver()
