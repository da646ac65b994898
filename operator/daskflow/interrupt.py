"""Ctrl-C and SIGTERM for ``daskflow run``: the first cancels the run, a second exits at once.

The first signal must work at any moment: while the manifest loads, while a local cluster
starts (minutes for a hundred workers), while the flow runs, even while the event loop is
busy. asyncio's own signal handlers run only when the loop gets control, and Python
handlers only in the main thread between two bytecodes: after a long C call, the main
thread runs the handlers of every signal that came meanwhile before any other thread runs,
so a second signal could be taken for the first. So the handlers do nothing; what counts
is the byte with the signal's number that Python's C-level handler writes, as the signal
arrives, to a pipe (``signal.set_wakeup_fd``): one thread reads them, in their order.

A terminal's Ctrl-C reaches the local worker processes too: they start with SIGINT
blocked (blocked in the thread that starts them, for that moment only: a blocked signal is
inherited, through exec too), and stay undisturbed until their set-up
(:mod:`daskflow.engine.workerprocess`) installs a handler that ignores it. SIGTERM is never
blocked: the Nanny stops its worker with it.

A clean cancel needs the event loop, and with a LocalCluster the scheduler runs on that
loop: taking in a 200,000-item map keeps it busy for a minute. So if the run has not ended
``GRACE`` seconds after the first signal, or at a second signal, the command ends at once
from the signal's thread: it prints the status known so far (unfinished tasks Cancelled),
kills the worker processes and exits. Dask may still be starting worker processes then,
from threads of its own: a lock that every process start takes keeps new ones from
starting while the others are killed, so that none outlives the command.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import multiprocessing.resource_tracker
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

EXIT_INTERRUPTED = 130  # the command was interrupted (and the run not waited for)
KILL_WAIT = 10.0  # seconds to wait for killed processes to be gone
GRACE = 5.0  # seconds a run gets to end cleanly after the first signal
FINAL_ATTEMPTS = 3  # reads of the status so far, when one races with a change
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Receives SIGINT and SIGTERM once :meth:`install` ran (in the main thread, before
    any other thread starts). ``first`` names the first signal; ``on_first`` is called
    with it, from any thread. If the command is still running ``grace`` seconds later, or
    at a second signal, it prints what :meth:`on_exit` gives, kills the worker processes
    and exits."""

    def __init__(self, grace: float = GRACE) -> None:
        self.first: str | None = None
        self.grace = grace
        self._on_first: Callable[[str], object] | None = None
        self.temporary: list[str] = []  # directories to remove even when exiting at once
        self._final: Callable[[], tuple[str, int]] | None = None
        self._out = threading.RLock()  # one final status on stdout, whoever writes it
        self._delivered: int | None = None  # exit code once the final status is out
        self._installed: tuple[int, int, dict[signal.Signals, Any]] | None = None  # to undo install
        self._timer: threading.Timer | None = None

    def install(self) -> None:
        # Starting multiprocessing's resource tracker unblocks SIGINT in its thread: start
        # it now, not in the middle of a worker process's start.
        _start_resource_tracker()
        _gate_process_starts()
        read, write = os.pipe()
        os.set_blocking(write, False)
        previous_fd = signal.set_wakeup_fd(write)
        handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            signal.signal(sig, lambda _num, _frame: None)  # the byte on the pipe counts
        self._installed = (write, previous_fd, handlers)
        threading.Thread(
            target=self._read_signals, args=(read,), name="daskflow-signals", daemon=True
        ).start()

    def uninstall(self) -> None:
        """Undo :meth:`install` (for a run inside a longer program, ``Flow.run()``): the
        signal handlers before it are back, and a pending exit at once is called off."""
        if self._timer is not None:
            self._timer.cancel()
        if self._installed is None:
            return
        write, previous_fd, handlers = self._installed
        self._installed = None
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write)  # the reading thread sees the end and stops

    def on_first(self, callback: Callable[[str], object] | None) -> None:
        """Call ``callback`` on the first signal, at once if it came already."""
        self._on_first = callback
        if callback is not None and self.first is not None:
            callback(self.first)

    def on_exit(self, final: Callable[[], tuple[str, int]] | None) -> None:
        """``final()`` gives the status to print on stdout when the command ends at once,
        and the exit code that goes with it."""
        self._final = final

    def deliver(self, text: str, code: int) -> None:
        """Print the final status (once); an exit at once from now on exits with ``code``."""
        with self._out:
            if self._delivered is None:
                self._delivered = code
                _write(1, text)

    def _read_signals(self, fd: int) -> None:
        while data := os.read(fd, 64):
            for num in data:
                if num in SIGNALS and self._installed is not None:
                    self._received(signal.Signals(num))
        os.close(fd)

    def _received(self, sig: signal.Signals) -> None:
        if self.first is None:
            self.first = sig.name
            self._timer = threading.Timer(
                self.grace,
                self._exit_now,
                (f"the run did not end within {self.grace:g}s of {sig.name}: stopping it",),
            )
            self._timer.daemon = True
            self._timer.start()
            callback = self._on_first
            if callback is not None:
                callback(sig.name)
            return
        self._exit_now(f"second {sig.name}: exiting at once", forced=True)

    def _exit_now(self, why: str, forced: bool = False) -> None:
        """Print the status known so far, kill the worker processes and exit: with the
        status's exit code, or EXIT_INTERRUPTED when there is none or ``forced``."""
        # Not print(): this may interrupt the main thread inside a print of its own.
        _write(2, f"daskflow: {why}\n")
        with self._out:  # waits for a final status being printed by another thread
            if self._delivered is None and self._final is not None:
                self._print_final(self._final)
            stop_worker_processes()
            for path in self.temporary:
                shutil.rmtree(path, ignore_errors=True)
            os._exit(EXIT_INTERRUPTED if forced or self._delivered is None else self._delivered)

    def _print_final(self, final: Callable[[], tuple[str, int]]) -> None:
        """Print ``final()``'s status on stdout. The run goes on changing it in other
        threads meanwhile: a read that fails is tried again, and a failure is told."""
        for attempt in range(FINAL_ATTEMPTS):
            try:
                text, code = final()
            except Exception as exc:
                if attempt + 1 == FINAL_ATTEMPTS:
                    _write(2, f"daskflow: cannot print the status: {type(exc).__name__}: {exc}\n")
                continue
            self._delivered = code
            _write(1, text)
            return


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker, which removes the semaphores of the
    worker processes once this process has exited, quietly: after an exit at once it
    would warn on stderr about each one ("leaked semaphore objects")."""
    before = os.environ.get("PYTHONWARNINGS")
    quiet = "ignore:resource_tracker:UserWarning"
    os.environ["PYTHONWARNINGS"] = f"{before},{quiet}" if before else quiet
    try:
        multiprocessing.resource_tracker.ensure_running()
    finally:
        if before is None:
            del os.environ["PYTHONWARNINGS"]
        else:
            os.environ["PYTHONWARNINGS"] = before


def _write(fd: int, text: str) -> None:
    data = text.encode()
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:  # the reader went away
            return


# Held while a process starts, and for good once the worker processes are being stopped.
_process_starts = threading.Lock()


def _gate_process_starts() -> None:
    """Every multiprocessing start in this process takes ``_process_starts`` (and starts
    its process with SIGINT blocked, see the module's docstring): Dask starts
    worker processes from threads of its own (one by one for minutes, with a hundred
    workers on a busy machine), so that :func:`stop_worker_processes` can stop more from
    starting and then find every one that did."""
    start = multiprocessing.process.BaseProcess.start
    if getattr(start, "gated", False):  # done already (a second run in this process)
        return

    def gated_start(self: multiprocessing.process.BaseProcess) -> None:
        with _process_starts:
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # inherited
            try:
                start(self)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    gated_start.gated = True  # type: ignore[attr-defined]
    multiprocessing.process.BaseProcess.start = gated_start  # type: ignore[method-assign]


def stop_worker_processes() -> int:
    """Kill the processes this process started (worker processes, and every process they
    started), and wait until they are gone; no process starts any more afterwards.
    multiprocessing's resource tracker is spared: it removes the workers' semaphores once
    this process has exited. Returns how many processes were killed."""
    import psutil

    _process_starts.acquire(timeout=KILL_WAIT)  # never released
    spared = {vars(multiprocessing.resource_tracker._resource_tracker).get("_pid")}
    procs: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in spared]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=KILL_WAIT)
    return len(procs)
