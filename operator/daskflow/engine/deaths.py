"""A worker that dies while it runs a task is an attempt of that task, with a cause.

Left to itself, Dask runs the tasks of a dead worker again elsewhere, says nothing, and
after four deaths fails them with ``KilledWorker`` naming an internal key. Here three small
pieces turn a death into an ordinary attempt of the task that was running:

- :class:`AttemptSlots` (worker process): every attempt notes its Dask key in a small
  file of its worker process while it runs, which outlives the process;
- :class:`DeathReporter` (nanny plugin): when its worker process exits, it reports the exit
  status and what was running (from that file) to the scheduler;
- :class:`DeathLedger` (scheduler plugin): when a worker is lost, it marks each task that
  was on it (an annotation that reaches the task's rerun), hears the nanny's report, and
  answers a rerun's question: which earlier attempts of mine died, and why. It also
  takes back Dask's suspicion of tasks that only waited on a dead worker (Dask gives up
  on a task after four deaths, even of workers that never started it).

:func:`previous_deaths` asks that question, from a rerun only. A death counts against the
task's retries when the task caused it (an exit code, a crash signal, the memory limit);
a worker killed from outside (SIGKILL, SIGTERM) is only a lost attempt, run again.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from distributed.core import Status
from distributed.diagnostics.plugin import NannyPlugin, SchedulerPlugin

PLUGIN = "daskflow-deaths"
REPORTS = "daskflow-worker-exit"  # topic of the nanny's reports
LOST = "daskflow-lost"  # annotation: how many workers died while this task was on them
REPORT_WAIT = 5.0  # seconds a rerun waits for the report of a death
SLOT = 512  # bytes per running attempt in a slot file
KEEP = 10_000  # deaths and reports remembered by the scheduler plugin
OUTSIDE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
CGROUP_EVENTS = "/sys/fs/cgroup/memory.events"


def slot_dir(nanny_pid: int) -> str:
    """Made by the nanny's plugin: a worker keeps slots only if its nanny will read them."""
    return os.path.join(tempfile.gettempdir(), f"daskflow-attempts-{nanny_pid}")


def _slot_path(nanny_pid: int, worker_address: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", worker_address)
    return os.path.join(slot_dir(nanny_pid), name)


class AttemptSlots:
    """What runs in this worker process: one slot of a file per running attempt."""

    def __init__(self, worker_address: str) -> None:
        self.path = _slot_path(os.getppid(), worker_address)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        atexit.register(_unlink, self.path)  # a worker that dies leaves it to its nanny
        self._free: list[int] = []
        self._next = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Note the Dask key of the task this thread runs, for as long as it runs."""
        key = _current_key()
        if key is None:
            yield
            return
        with self._lock:
            slot = self._free.pop() if self._free else self._next
            self._next = max(self._next, slot + 1)
        entry = json.dumps(key).encode()[: SLOT - 1]
        os.pwrite(self._fd, entry.ljust(SLOT, b" "), slot * SLOT)
        try:
            yield
        finally:
            os.pwrite(self._fd, b" " * SLOT, slot * SLOT)
            with self._lock:
                self._free.append(slot)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def read_slots(path: str) -> list[Any]:
    """The keys of the tasks that a slot file says were running."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return []
    out = []
    for start in range(0, len(data), SLOT):
        text = data[start : start + SLOT].strip()
        with contextlib.suppress(ValueError):
            if text:
                out.append(json.loads(text))
    return out


_SLOTS: AttemptSlots | None = None
_SLOTS_LOCK = threading.Lock()


def attempt_slots() -> AttemptSlots | None:
    """This worker process's slots (None when not on a worker, or no file can be made)."""
    global _SLOTS
    if _SLOTS is None and os.path.isdir(slot_dir(os.getppid())):
        with _SLOTS_LOCK, contextlib.suppress(ValueError, OSError):
            from distributed import get_worker

            _SLOTS = _SLOTS or AttemptSlots(get_worker().address)
    return _SLOTS


def _oom_kills() -> int:
    """Kills by the kernel's OOM killer in this cgroup so far (cgroup v2), or -1."""
    try:
        with open(CGROUP_EVENTS) as fh:
            for line in fh:
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return -1


_NANNIES: set[int] = set()  # nannies of this process that have the plugin


class DeathReporter(NannyPlugin):
    """Reports to the scheduler how its worker process ended and what was running."""

    name = PLUGIN
    idempotent = True  # registered by every run: once per cluster

    def setup(self, nanny: Any) -> None:
        if getattr(nanny, "_daskflow_deaths", False):
            return
        nanny._daskflow_deaths = True
        original = nanny._on_worker_exit_sync  # distributed has no public hook for this
        oom = [_oom_kills()]

        async def send(report: dict[str, Any]) -> None:
            with contextlib.suppress(Exception):  # a scheduler that is gone hears nothing
                await nanny.scheduler.log_event(topic=REPORTS, msg=report)

        def on_exit(exitcode: int) -> None:
            with contextlib.suppress(Exception):
                address = nanny.worker_address
                path = _slot_path(os.getpid(), address)
                kills = _oom_kills()
                report = {
                    "worker": address,
                    "exitcode": exitcode,
                    "oom": kills > oom[0] >= 0,
                    "running": read_slots(path),
                }
                oom[0] = kills
                _unlink(path)
                if nanny.status == Status.running:  # not a worker closed with its nanny
                    nanny.loop.add_callback(send, report)
            original(exitcode)

        os.makedirs(slot_dir(os.getpid()), exist_ok=True)
        _NANNIES.add(id(nanny))
        nanny._on_worker_exit_sync = on_exit
        if nanny.process is not None:
            nanny.process.on_exit = on_exit

    def teardown(self, nanny: Any) -> None:
        _NANNIES.discard(id(nanny))
        if not _NANNIES:  # the last nanny of this process (a LocalCluster has several)
            shutil.rmtree(slot_dir(os.getpid()), ignore_errors=True)


class DeathLedger(SchedulerPlugin):
    """Remembers which tasks were on a worker that died, and why each worker died."""

    name = PLUGIN
    idempotent = True

    def __init__(self) -> None:
        self.deaths: OrderedDict[Any, list[str]] = OrderedDict()  # key -> dead workers
        self.held: OrderedDict[str, list[Any]] = OrderedDict()  # dead worker -> its keys
        self.reports: OrderedDict[str, dict[str, Any]] = OrderedDict()  # worker -> report
        self.memory: OrderedDict[str, None] = OrderedDict()  # killed by the memory limit
        self.unreported: set[str] = set()  # workers whose report did not come in time
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        scheduler.handlers["daskflow_deaths"] = self.answer

    def log_event(self, topic: str, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        if topic == "all" and msg.get("action") == "remove-worker" and not msg["expected"]:
            # Logged before Dask reschedules the worker's tasks: the rerun gets the mark.
            held = self.held[msg["worker"]] = []
            for key in msg.get("processing-tasks", ()):
                ts = self.scheduler.tasks.get(key)
                if ts is not None:
                    dead = self.deaths.setdefault(key, [])
                    dead.append(msg["worker"])
                    ts.annotations = {**(ts.annotations or {}), LOST: len(dead)}
                    held.append(key)
            _bound(self.deaths)
            _bound(self.held)
        elif topic == "worker-restart-memory":
            self.memory[msg.get("worker", "")] = None
            _bound(self.memory)
        elif topic == REPORTS:
            running = {_as_key(k) for k in msg.get("running", ())}
            self.reports[msg["worker"]] = {**msg, "running": running}
            _bound(self.reports)
            # Dask suspects every task that was on a dead worker, even one that waited
            # there and never started, and gives up on a task after four: forgive those.
            for key in self.held.pop(msg["worker"], ()):
                ts = self.scheduler.tasks.get(key)
                if key not in running and ts is not None and ts.suspicious > 0:
                    ts.suspicious -= 1

    async def answer(self, key: Any, wait: float = REPORT_WAIT) -> list[dict[str, Any]]:
        """How each worker died that died while it ran ``key`` (as far as reported)."""
        key = _as_key(key)
        out = []
        for worker in self.deaths.get(key, []):
            deadline = time.monotonic() + wait
            while worker not in self.reports and worker not in self.unreported:
                if time.monotonic() > deadline:
                    self.unreported.add(worker)
                    break
                await asyncio.sleep(0.05)
            report = self.reports.get(worker)
            if report is not None and key in report["running"]:
                out.append(
                    {
                        "exitcode": report["exitcode"],
                        "oom": report["oom"],
                        "memory": worker in self.memory,
                    }
                )
        return out


def _bound(mapping: OrderedDict[Any, Any]) -> None:
    while len(mapping) > KEEP:
        mapping.popitem(last=False)


def _as_key(key: Any) -> Any:
    """A Dask key as it was before messages turned its tuples into lists."""
    return tuple(_as_key(k) for k in key) if isinstance(key, list) else key


async def install(client: Any) -> bool:
    """Register both plugins on the cluster of ``client`` (once); False if it refuses."""
    try:
        await client.register_plugin(DeathLedger(), name=PLUGIN)
        await client.register_plugin(DeathReporter(), name=PLUGIN)
    except Exception:  # a scheduler that does not take plugins: Dask's own behaviour
        return False
    return True


@dataclass(frozen=True)
class Death:
    """One attempt of a task that its worker's death ended."""

    exitcode: int | None
    memory: bool  # the nanny's memory limit stopped the worker
    oom: bool  # the kernel's OOM killer killed a process of the worker's cgroup

    @property
    def reason(self) -> str:
        return "OutOfMemory" if self.memory or self.oom else "WorkerDied"

    @property
    def caused_by_task(self) -> bool:
        """Whether the task made its worker die (then the death uses one of its retries)."""
        if self.memory or self.oom:
            return True
        if self.exitcode is None:
            return False
        return self.exitcode >= 0 or -self.exitcode not in OUTSIDE_SIGNALS

    def describe(self) -> str:
        how = "its worker died"
        if self.memory:
            return f"{how}: out of memory (the worker's memory limit)"
        if self.oom:
            return f"{how}: out of memory (killed by the kernel's OOM killer)"
        if self.exitcode is None:
            return how
        if self.exitcode < 0:
            sig = -self.exitcode
            with contextlib.suppress(ValueError):
                return f"{how}: killed by signal {sig} ({signal.Signals(sig).name})"
            return f"{how}: killed by signal {sig}"
        return f"{how}: exit code {self.exitcode}"


def _current_key() -> Any:
    """The Dask key of the task this worker thread runs, or None."""
    from dask.context import thread_state

    return getattr(thread_state, "key", None)


def previous_deaths() -> list[Death]:
    """The earlier attempts of the running task that a worker's death ended.

    Costs nothing unless the scheduler marked this task as having been on a dead worker.
    """
    try:
        from distributed import get_worker
        from distributed.utils import sync

        worker = get_worker()
    except ValueError:
        return []
    key = _current_key()
    ts = worker.state.tasks.get(key)
    if ts is None or not (ts.annotations or {}).get(LOST):
        return []
    try:
        reports = sync(worker.loop, worker.scheduler.daskflow_deaths, key=key)
    except Exception:
        return []
    return [Death(r["exitcode"], r["memory"], r["oom"]) for r in reports]
