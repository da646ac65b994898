"""Set-up of each Dask worker process daskflow starts (a Dask preload): the local workers
of ``daskflow run`` and of a runner, and the worker pods of the ``kubernetes`` backend.

A local worker is a subprocess of ``daskflow run``: it shares its stdout, its stderr and its
terminal. So in every worker process, before it accepts a task (and again in a worker that
its Nanny restarts after a death), this module:

- puts the user's directories (``DASKFLOW_IMPORT_PATHS``) first on ``sys.path``. The Nanny
  sets a worker's environment only after its interpreter started, so ``PYTHONPATH`` never
  reaches ``sys.path``.
- keeps task output off stdout: daskflow's stdout carries only the final status (``-o
  json`` must stay parseable). Lines printed while a task runs are prefixed with the task's
  name and, for a mapped item, its index: ``[name] text`` or ``[name 3] text``. Everything
  the process writes (file descriptors 1 and 2 included, so C code and child processes
  too) goes to the file named by ``DASKFLOW_TASK_OUTPUT``, which ``daskflow run`` shows on
  its stderr (a live table on a terminal would be torn by direct writes); without it, to
  the worker's stderr.
- ignores Ctrl-C: a terminal sends SIGINT to every process of its group, workers
  included; ``daskflow run`` cancels the run and closes the workers itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO, cast

IMPORT_PATHS_ENV = "DASKFLOW_IMPORT_PATHS"
TASK_OUTPUT_ENV = "DASKFLOW_TASK_OUTPUT"

_LABEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("daskflow_task", default=None)


class LabelledOutput(io.TextIOBase):
    """A text stream that prefixes each line written while a task runs with its label.

    Partial lines wait (per task) until their newline, so that lines of tasks running in
    parallel threads never mix; text written outside any task passes through unchanged.
    """

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target
        self._pending: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.target.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.target.errors

    @property
    def buffer(self) -> Any:
        """The bytes underneath, for code that writes bytes (unlabelled)."""
        self.target.flush()
        return self.target.buffer

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.target.fileno()

    def write(self, text: str) -> int:
        label = _LABEL.get()
        if label is None:
            self.target.write(text)
            self.target.flush()
            return len(text)
        with self._lock:
            buffered = self._pending.pop(label, "") + text
            done, newline, rest = buffered.rpartition("\n")
            if rest:
                self._pending[label] = rest
        if newline:
            prefix = f"[{label}] "
            self.target.write("".join(prefix + line + "\n" for line in done.split("\n")))
            self.target.flush()
        return len(text)

    def flush_label(self, label: str) -> None:
        with self._lock:
            rest = self._pending.pop(label, "")
        if rest:
            self.target.write(f"[{label}] {rest}\n")
            self.target.flush()

    def flush(self) -> None:
        label = _LABEL.get()
        if label is not None:
            self.flush_label(label)
        self.target.flush()


def labelled_by(task: str) -> re.Pattern[str]:
    """Matches the lines this module labels as the output of ``task`` (or of one of its
    mapped items), for tools that read a worker's log."""
    return re.compile(rf"\[{re.escape(task)}(?: \d+)?\] ")


@contextlib.contextmanager
def task_output(task: str, index: int | None = None) -> Iterator[None]:
    """Label what the task (or mapped item) prints while this context lasts."""
    label = task if index is None else f"{task} {index}"
    token = _LABEL.set(label)
    try:
        yield
    finally:
        _LABEL.reset(token)
        if isinstance(sys.stdout, LabelledOutput):
            sys.stdout.flush_label(label)


class _TaskRecords(logging.Filter):
    """A task's records, as its loggers' levels let them through (INFO by default);
    outside tasks, warnings and errors only (Python's default)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _LABEL.get() is not None or record.levelno >= logging.WARNING


def _log_task_records() -> None:
    """Send what tasks log to the (labelled) stderr, unless logging is configured already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()  # sys.stderr as it is now: labelled
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_TaskRecords())
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))


def dask_setup(worker: Any) -> None:
    """The preload's entry point, called by Dask in the worker process before it starts."""
    paths = [p for p in os.environ.get(IMPORT_PATHS_ENV, "").split(os.pathsep) if p]
    sys.path[:0] = [p for p in paths if p not in sys.path]

    stderr = sys.__stderr__
    if stderr is not None and not isinstance(sys.stdout, LabelledOutput):
        sys.stdout.flush()
        stderr.flush()
        if os.environ.get(TASK_OUTPUT_ENV):
            fd = os.open(os.environ[TASK_OUTPUT_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.dup2(fd, stderr.fileno())
            os.close(fd)
        os.dup2(stderr.fileno(), 1)
        labelled = LabelledOutput(stderr)
        sys.stdout = sys.stderr = cast(TextIO, labelled)
        _log_task_records()

    # A handler that does nothing, not SIG_IGN: commands started by tasks get the default
    # SIGINT back (exec resets handlers, but keeps ignored signals ignored).
    signal.signal(signal.SIGINT, lambda _num, _frame: None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
