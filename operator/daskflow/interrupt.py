"""Ctrl-C and SIGTERM for ``daskflow run``: the first cancels the run, a second exits at once.

The first signal must work at any moment: while the manifest loads, while a local cluster
starts (minutes for a hundred workers), while the flow runs, even while the event loop is
busy. asyncio's own signal handlers run only when the loop gets control, so they are not
used: SIGINT is blocked in every thread and taken by a thread of its own (``sigwait``),
and SIGTERM by a plain handler (which runs between two bytecodes of the main thread).

The block is inherited by the local worker processes, which a terminal's Ctrl-C reaches
too: they stay undisturbed until their set-up (:mod:`daskflow.engine.workerprocess`)
installs a handler that ignores it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.resource_tracker
import os
import shutil
import signal
import threading
from collections.abc import Callable

EXIT_INTERRUPTED = 130  # the command was interrupted and gave no result
KILL_WAIT = 10.0  # seconds to wait for killed processes to be gone


class Interrupts:
    """Receives SIGINT and SIGTERM once :meth:`install` ran (in the main thread, before
    any other thread starts). ``first`` names the first signal; ``on_first`` is called
    with it, from any thread. A second signal kills the worker processes and exits."""

    def __init__(self) -> None:
        self.first: str | None = None
        self._on_first: Callable[[str], object] | None = None
        self.temporary: list[str] = []  # directories to remove even when exiting at once

    def install(self) -> None:
        # Starting multiprocessing's resource tracker unblocks SIGINT: start it first.
        multiprocessing.resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        threading.Thread(target=self._wait_sigint, name="daskflow-sigint", daemon=True).start()
        # Handlers too, for a thread where some library unblocked SIGINT again.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda num, _frame: self._received(signal.Signals(num)))

    def on_first(self, callback: Callable[[str], object] | None) -> None:
        """Call ``callback`` on the first signal, at once if it came already."""
        self._on_first = callback
        if callback is not None and self.first is not None:
            callback(self.first)

    def _wait_sigint(self) -> None:
        while True:
            self._received(signal.Signals(signal.sigwait({signal.SIGINT})))

    def _received(self, sig: signal.Signals) -> None:
        if self.first is None:
            self.first = sig.name
            callback = self._on_first
            if callback is not None:
                callback(sig.name)
            return
        # Not print(): this may interrupt the main thread inside a print of its own.
        os.write(2, f"daskflow: second {sig.name}: exiting at once, without a status\n".encode())
        stop_worker_processes()
        for path in self.temporary:
            shutil.rmtree(path, ignore_errors=True)
        os._exit(EXIT_INTERRUPTED)


def stop_worker_processes() -> int:
    """Kill the worker processes this process started (and every process they started),
    and wait until they are gone. Returns how many processes were killed."""
    import psutil

    procs: list[psutil.Process] = []
    for child in multiprocessing.active_children():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(child.pid)
            procs += [proc, *proc.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=KILL_WAIT)
    return len(procs)
