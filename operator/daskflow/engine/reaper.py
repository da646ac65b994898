"""Runs one command task and takes every process it started down with it.

A worker does not start a command directly but through this small script, run as
``python -I -S reaper.py PARENT_PID ARGV...``, so that no process of a command outlives
its task:

- the command's exit ends the task: once the command exits, whatever it left running
  (a background job that keeps stdout open, a daemon with redirected output) is killed,
  so the worker never waits for a pipe that a grandchild holds;
- on Linux this process is a child subreaper (``PR_SET_CHILD_SUBREAPER``): orphans of the
  command, even those that left its process group with ``setsid``, become its children
  and are found in ``/proc`` and killed;
- on Linux it dies with its worker (``PR_SET_PDEATHSIG``): when the worker is killed, even
  with ``kill -9``, it kills the command's processes and exits;
- SIGTERM (a timeout or a cancel) kills them all too.

Its exit status is the command's: the same exit code, or the same signal. Only the
standard library is used, so it starts in a few milliseconds without ``site``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CLEANUP_SECONDS = 10.0  # at most this long for the command's processes to be gone
CANNOT_RUN = 127  # exit code when the command cannot be started, as in a shell


class _Stopped(Exception):
    """A stop signal arrived: the task timed out, was cancelled, or the worker died."""


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (Linux ``/proc``; empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    stack = [root]
    while stack:
        kids = children.get(stack.pop(), [])
        found += kids
        stack += kids
    return found


def _kill_all(group: int) -> None:
    """Kill the command's process group and every descendant of this process, and reap
    them, until none is left (or CLEANUP_SECONDS passed)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # a second stop must not cut the cleanup short
    deadline = time.monotonic() + CLEANUP_SECONDS
    while True:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
        for pid in descendants(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # no child left: every orphan has been handed to us and reaped
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _exit_like(status: int) -> None:
    """Exit as the command did: the same exit code, or killed by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file of ours
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _on_stop(signum: int, frame: Any) -> None:
    raise _Stopped(signum)


def main(argv: list[str]) -> None:
    parent, command = int(argv[1]), argv[2:]
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_stop)
    if sys.platform.startswith("linux"):
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the worker died before PR_SET_PDEATHSIG took effect
        os._exit(128 + signal.SIGTERM)
    pid = 0
    try:
        try:
            pid = os.posix_spawnp(
                command[0],
                command,
                os.environ,
                setpgroup=0,  # its own group: one kill reaches every process that stays in it
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, *STOP_SIGNALS),  # Python ignores some
            )
        except OSError as exc:
            os.write(2, f"{type(exc).__name__}: {exc}\n".encode(errors="replace"))
            os._exit(CANNOT_RUN)
        while True:  # reap orphans handed to us too, until the command itself exits
            done, status = os.waitpid(-1, 0)
            if done == pid:
                break
    except _Stopped as stop:
        if pid:
            _kill_all(pid)
        os._exit(128 + stop.args[0])
    _kill_all(pid)
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv)
