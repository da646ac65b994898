"""Child processes for tests and benchmarks: started in a process group of their own, their
output captured, and stopped as a whole tree, with a psutil check that nothing is left.

Also the one way to pick a free TCP port on loopback for a child to listen on.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (racy, like envtest's addr.Suggest)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PR_SET_PDEATHSIG = 1
_libc: Any = None
with contextlib.suppress(OSError):
    _libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:  # runs in the child, between fork and exec
    # SIGKILL the child when the thread that started it dies, so a crashed or killed
    # session leaves nothing behind.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may already have died between fork and prctl.
    if os.getppid() != parent:
        os._exit(1)


def alive(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (a zombie has ended: only its exit is unread)."""
    out = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
    return out


class LeftBehind(AssertionError):
    """Processes of a stopped tree are still running."""


class Supervised:
    """``argv`` as a child in its own process group (a Ctrl-C in the terminal reaches the test,
    not the child), with stdout and stderr in ``log`` (a temporary file if not given) unless
    ``popen`` redirects them. :meth:`stop` ends it and everything it started; so does leaving
    its ``with`` block.

    ``die_with_parent``: the child gets SIGKILL when the thread that started it ends, so a
    killed session leaves no server behind.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log: Path | None = None,
        *,
        name: str | None = None,
        die_with_parent: bool = False,
        **popen: Any,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self._log: IO[bytes] | None = None
        self._own_log = False
        if "stdout" not in popen:
            if log is None:
                fd, where = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
                os.close(fd)
                log, self._own_log = Path(where), True
            self._log = log.open("ab")
            popen["stdout"] = self._log
            popen.setdefault("stderr", subprocess.STDOUT)
        self.log_path = log
        popen.setdefault("stdin", subprocess.DEVNULL)
        if die_with_parent:
            popen["preexec_fn"] = functools.partial(_die_with_parent, os.getpid())
        self.popen: subprocess.Popen[Any] = subprocess.Popen(
            self.argv, start_new_session=True, **popen
        )
        self.pid = self.popen.pid
        self._seen: dict[int, psutil.Process] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        """The child's exit code, once it exits by itself within ``timeout`` seconds."""
        return self.popen.wait(timeout)

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def tree(self) -> list[psutil.Process]:
        """The child, its descendants and the rest of its process group now, plus every one
        seen before (a descendant that left the group, or whose parent died, is still ours)."""
        found: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            found += [root, *root.children(recursive=True)]
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError):
                if os.getpgid(proc.pid) == self.pid:
                    found.append(proc)
        for proc in found:
            self._seen.setdefault(proc.pid, proc)
        return alive(list(self._seen.values()))

    def signal_group(self, sig: int) -> None:
        """``sig`` to every process of the child's group, as a terminal sends Ctrl-C."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole tree: no cleanup of any kind runs."""
        tree = self.tree()
        self.signal_group(signal.SIGKILL)
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def stop(self, grace: float = 15.0, sig: int = signal.SIGTERM) -> None:
        """``sig`` to the child, ``grace`` seconds to exit, then SIGKILL to its whole tree.

        Raises :class:`LeftBehind` if any process of the tree still runs after that.
        """
        self.tree()
        if self.running():
            self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        self.kill()
        _, left = psutil.wait_procs(self.tree(), timeout=10)
        left = alive(left)
        tail = self.log_tail() if left else ""
        if self._log is not None:
            self._log.close()
            if self._own_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)
        if left:
            raise LeftBehind(f"{self.name}: still running after stop: {left}\n{tail}")
