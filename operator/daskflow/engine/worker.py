"""What runs on a Dask worker: one attempt loop per task (or mapped item).

Retries, backoff, jitter and per-attempt timeouts happen here, next to the work, so a
retry costs no round trip through the client. The outcome leaves the worker in two ways:
the value (or a :class:`TaskFailed` / :class:`TaskSkipped` exception, which Dask hands on
to every dependent) and small worker events with the details the status needs.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
import random
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model.refs import Ref, format_value, substitute
from ..model.status import clip, now_iso, result_json
from .deaths import attempt_slots, previous_deaths
from .workerprocess import task_output

REAPER = str(Path(__file__).with_name("reaper.py"))  # runs each command (see its docstring)
REAPER_GRACE = 15.0  # seconds for a reaper to take its command down (it needs at most 10)
STDERR_TAIL = 1500
TRACEBACK_FRAMES = 3  # frames of the user's code kept in a failure message
FALSY_STRINGS = frozenset({"", "false", "0", "no", "off", "null", "none"})
_NO_ITEM: Any = object()


class TaskFailed(Exception):
    """Raised when a task (or one mapped item) has failed all its attempts."""

    def __init__(
        self,
        task: str,
        message: str,
        attempts: int,
        item: int | None = None,
        reason: str | None = None,  # WorkerDied or OutOfMemory when its worker died
    ) -> None:
        super().__init__(task, message, attempts, item, reason)
        self.task, self.message, self.attempts, self.item = task, message, attempts, item
        self.reason = reason

    def __str__(self) -> str:
        return f"task {self.task!r} failed: {self.message}"


class TaskSkipped(Exception):
    """Raised when a task's ``when`` is false; Dask passes it on to every dependent."""

    def __init__(self, task: str) -> None:
        super().__init__(task)
        self.task = task


class TaskCancelled(Exception):
    """Raised when the run was cancelled while the task was on the worker."""

    def __init__(self, task: str) -> None:
        super().__init__(task)
        self.task = task


class CommandFailed(Exception):
    """A command exited non-zero."""


@dataclass(frozen=True, slots=True)
class TaskRuntime:
    """What a worker needs to run one task: small, plain, and cheap to pickle."""

    name: str
    topic: str
    call: str | None
    command: tuple[Any, ...] | None
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    env: Mapping[str, str]
    when: Any
    retries: int
    retry_delay: float
    retry_backoff: float
    retry_jitter: float
    timeout: float | None
    report: bool  # send start/done events (single tasks; mapped items only report retries)
    static: Mapping[str, Any]  # values of the $(params.X) and $(flowrun.X) references


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in FALSY_STRINGS
    return bool(value)


def _emit(topic: str, msg: dict[str, Any]) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(topic, msg)
    except ValueError:  # not on a worker (e.g. called inline in a test)
        pass


@functools.lru_cache(maxsize=256)  # per worker process: items of a map share their callable
def resolve_callable(spec: str) -> Any:
    module_name, _, attr_path = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


# Commands that are running, by topic (one per run), so a cancel can kill them; and the
# runs cancelled on this worker (topic -> event), so that no attempt starts after a cancel.
_RUNNING: dict[str, set[subprocess.Popen[bytes]]] = {}
_CANCELLED: dict[str, threading.Event] = {}
_RUNNING_LOCK = threading.Lock()
_CANCELLED_KEEP = 1000  # cancelled topics remembered per worker process


def _cancel_event(topic: str) -> threading.Event:
    with _RUNNING_LOCK:
        event = _CANCELLED.get(topic)
        if event is None:
            if len(_CANCELLED) >= _CANCELLED_KEEP:
                for old in [t for t, e in _CANCELLED.items() if not e.is_set()]:
                    _CANCELLED.pop(old)
            event = _CANCELLED[topic] = threading.Event()
        return event


def kill_commands(topic: str) -> int:
    """Cancel this run on this worker: kill its commands with all their processes and make
    sure that none of its attempts starts (or retries) from now on."""
    with _RUNNING_LOCK:
        event = _CANCELLED.get(topic)
        if event is None:
            while len(_CANCELLED) >= _CANCELLED_KEEP:
                _CANCELLED.pop(next(iter(_CANCELLED)))
            event = _CANCELLED[topic] = threading.Event()
        event.set()
        procs = list(_RUNNING.pop(topic, ()))
    for proc in procs:
        _stop(proc)
    return len(procs)


def cancelled(topic: str) -> bool:
    event = _CANCELLED.get(topic)
    return event is not None and event.is_set()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Have a command's reaper kill the command and every process it started."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)


def _run_command(rt: TaskRuntime, argv: list[Any], env: Mapping[str, Any]) -> str:
    with _RUNNING_LOCK:
        if cancelled(rt.topic):
            raise TaskCancelled(rt.name)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", REAPER, str(os.getpid()), *map(format_value, argv)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **{str(k): format_value(v) for k, v in env.items()}},
            start_new_session=True,  # a Ctrl-C on the terminal reaches daskflow, not commands
        )
        _RUNNING.setdefault(rt.topic, set()).add(proc)
    try:
        out, err = proc.communicate(timeout=rt.timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        try:
            proc.communicate(timeout=REAPER_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise TimeoutError(f"timeout: command ran longer than {rt.timeout:g}s") from None
    finally:
        with _RUNNING_LOCK:
            _RUNNING.get(rt.topic, set()).discard(proc)
    if cancelled(rt.topic):
        raise TaskCancelled(rt.name)
    if proc.returncode != 0:
        tail = err.decode(errors="replace")[-STDERR_TAIL:].strip()
        how = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exit code {proc.returncode}"
        )
        raise CommandFailed(f"{how}" + (f"; stderr: {tail}" if tail else ""))
    text = out.decode(errors="replace")
    return text[:-1] if text.endswith("\n") else text


def _call_with_timeout(fn: Any, args: list[Any], kwargs: dict[str, Any], timeout: float) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    context = contextvars.copy_context()  # the task's output label, for one
    thread = threading.Thread(target=context.run, args=(target,), daemon=True, name="daskflow-call")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"timeout: call ran longer than {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


_OWN_CODE = os.path.dirname(os.path.dirname(__file__)) + os.sep  # the daskflow package
_EXAMPLES = _OWN_CODE + "examples" + os.sep  # task functions, as a user's would be
_IMPORT_MACHINERY = ("<frozen ", os.path.dirname(importlib.__file__) + os.sep)


def _user_code(filename: str) -> bool:
    """Whether a traceback frame is the user's (daskflow's own frames are not shown, nor
    those of Python's import machinery that imports the user's module)."""
    if filename.startswith(_IMPORT_MACHINERY):
        return False
    return not filename.startswith(_OWN_CODE) or filename.startswith(_EXAMPLES)


def describe_error(exc: BaseException) -> str:
    """Exception type and text, plus the last lines of the user's code in its traceback."""
    text = str(exc)
    if isinstance(exc, SystemExit) and (exc.code is None or isinstance(exc.code, int)):
        text = f"exit code {exc.code or 0}"
    head = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, CommandFailed | TimeoutError):
        return clip(head)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _user_code(f.filename)]
    tail = "".join(traceback.format_list(frames[-TRACEBACK_FRAMES:])).rstrip()
    return clip(head + ("\n" + tail if tail else ""))


def _attempt(rt: TaskRuntime, lookup: Any) -> Any:
    """One attempt: run the command or call the callable, and return its value.

    ``SystemExit`` with code 0 or None is a success with the value None, as for a script
    that calls ``sys.exit(0)``; any other code is a failure (see :func:`describe_error`).
    """
    if rt.command is not None:
        argv = substitute(list(rt.command), lookup)
        return _run_command(rt, argv, substitute(dict(rt.env), lookup))
    assert rt.call is not None
    try:
        fn = resolve_callable(rt.call)
        args = substitute(list(rt.args), lookup)
        kwargs = substitute(dict(rt.kwargs), lookup)
        if rt.timeout is None:
            return fn(*args, **kwargs)
        return _call_with_timeout(fn, args, kwargs, rt.timeout)
    except SystemExit as exc:
        if exc.code is None or exc.code == 0:
            return None
        raise


def run_task(
    rt: TaskRuntime, upstream: Mapping[str, Any], item: Any = _NO_ITEM, index: int | None = None
) -> Any:
    """Run one task or mapped item: resolve references, then attempt up to 1 + retries."""

    def lookup(ref: Ref) -> Any:
        if ref.kind == "item":
            return item
        if ref.kind == "tasks":
            return upstream[ref.name]
        return rt.static[f"{ref.kind}.{ref.name}"]

    if rt.when is not None and not truthy(substitute(rt.when, lookup)):
        raise TaskSkipped(rt.name)
    started = now_iso() if rt.report else ""  # only events carry times
    attempt = failures = 0
    deaths = previous_deaths()  # only a rerun has any: Dask runs
    if deaths:  # a task again when its worker died while running it
        attempt = len(deaths)
        failures = sum(d.caused_by_task for d in deaths)
        message = deaths[-1].describe()
        event = {"task": rt.name, "event": "lost", "lost": attempt, "item": index}
        _emit(rt.topic, {**event, "message": message})
        if failures > rt.retries:
            raise TaskFailed(rt.name, message, attempt, index, deaths[-1].reason)
    slots = attempt_slots()
    while True:
        attempt += 1
        if cancelled(rt.topic):
            raise TaskCancelled(rt.name)
        if rt.report:
            _emit(
                rt.topic, {"task": rt.name, "event": "start", "attempt": attempt, "time": started}
            )
        error: str | None = None  # what failed the attempt
        try:
            with (
                task_output(rt.name, index),  # what a call prints goes to stderr, labelled
                slots.running() if slots else contextlib.nullcontext(),
            ):
                value = _attempt(rt, lookup)
        except TaskCancelled:
            raise
        except BaseException as exc:  # sys.exit() or KeyboardInterrupt in user code fails
            # the attempt; escaping, it would kill the Dask worker.
            error = describe_error(exc)
        # Raised out here, what this raises carries no user exception as its context: the
        # client could not unpickle one of a class from the user's modules.
        if error is not None:
            failures += 1
            if failures <= rt.retries and not cancelled(rt.topic):
                delay = rt.retry_delay * rt.retry_backoff ** (failures - 1)
                delay += random.uniform(0, rt.retry_jitter * delay)
                _emit(
                    rt.topic,
                    {
                        "task": rt.name,
                        "event": "retry",
                        "attempt": attempt,
                        "item": index,
                        "message": error,
                        "delay": delay,
                    },
                )
                if delay > 0 and _cancel_event(rt.topic).wait(delay):
                    raise TaskCancelled(rt.name)
                continue
            raise TaskFailed(rt.name, error, attempt, index)
        if rt.report:
            _emit(
                rt.topic,
                {
                    "task": rt.name,
                    "event": "done",
                    "attempts": attempt,
                    "start": started,
                    "end": now_iso(),
                    "result": result_json(value),
                },
            )
        return value


def run_item(item: Any, index: int, rt: TaskRuntime, upstream: Mapping[str, Any]) -> Any:
    """One mapped item; the item comes first so that ``client.map`` can batch them."""
    return run_task(rt, upstream, item, index)
