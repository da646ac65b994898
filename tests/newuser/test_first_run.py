"""A new user's first ``daskflow run``: their own modules, chatty tasks, limits and Ctrl-C.

Each test writes a small project the way the README teaches and runs the installed
``daskflow`` command in it, as a user would in a shell.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from harness import waiting

from .conftest import RUN_TIMEOUT, UserProject, assert_clean_exit


def leftovers(root: Path) -> list[psutil.Process]:
    """Processes still running in the project: workers and commands inherit its directory."""
    found = []
    for proc in psutil.process_iter(["cwd", "pid"]):
        cwd = proc.info.get("cwd") or ""
        if proc.pid != os.getpid() and (cwd == str(root) or cwd.startswith(f"{root}/")):
            found.append(proc)
    return found


def assert_nothing_left(root: Path, recorded: list[psutil.Process]) -> None:
    """No process started by the run survives it (given time to exit)."""
    _, alive = psutil.wait_procs(recorded, timeout=15)
    assert not alive, alive
    waiting.wait_for(
        lambda: leftovers(root), 15, "no process left in the project", until=lambda left: not left
    )


def task_results(stdout: str) -> dict[str, Any]:
    status = json.loads(stdout)
    return {name: rec.get("result", rec["state"]) for name, rec in status["tasks"].items()}


# -- where a user's modules are found --------------------------------------------------


def test_own_package_and_helper_module_by_call(project: UserProject) -> None:
    project.module("greetings/__init__.py", "")
    project.module(
        "greetings/words.py",
        """
        from greetings.alphabet import shout  # a helper module of the user's own package
        import punctuation                    # and a plain module next to the manifest

        def hello(name):
            return punctuation.exclaim(shout("hello " + name))
        """,
    )
    project.module("greetings/alphabet.py", "def shout(text):\n    return text.upper()\n")
    project.module("punctuation.py", "def exclaim(text):\n    return text + '!'\n")
    flow = project.manifest(
        "greet",
        [
            {"name": "one", "call": "greetings.words:hello", "args": ["ada"]},
            {
                "name": "many",
                "call": "greetings.words:hello",
                "map": ["bo", "cy"],
                "args": ["$(item)"],
            },
        ],
    )
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc)
    assert task_results(proc.stdout) == {"one": "HELLO ADA!", "many": ["HELLO BO!", "HELLO CY!"]}


def test_src_layout(project: UserProject) -> None:
    project.module("src/myproj/__init__.py", "")
    project.module(
        "src/myproj/stats.py",
        """
        from myproj.numbers import squares

        def total(n):
            return sum(squares(n))
        """,
    )
    project.module(
        "src/myproj/numbers.py", "def squares(n):\n    return [i * i for i in range(n)]\n"
    )
    flow = project.manifest("stats", [{"name": "total", "call": "myproj.stats:total", "args": [4]}])
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc)
    assert task_results(proc.stdout) == {"total": 14}


def test_manifest_in_a_subdirectory_run_from_elsewhere(project: UserProject) -> None:
    """Modules next to the manifest (and its src/) are found whatever the current directory."""
    project.module("pipeline/steps.py", "import shared\n\ndef run():\n    return shared.VALUE\n")
    project.module("pipeline/src/shared/__init__.py", "VALUE = 'from src next to the manifest'\n")
    flow = project.manifest("nested", [{"name": "run", "call": "steps:run"}], where="pipeline")
    elsewhere = project.root / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    proc = project.daskflow("run", str(flow), "-o", "json", cwd=elsewhere)
    assert_clean_exit(proc)
    assert task_results(proc.stdout) == {"run": "from src next to the manifest"}


def test_a_worker_restarted_after_a_death_imports_them_too(project: UserProject) -> None:
    project.module(
        "fragile.py",
        """
        import os
        import pathlib

        def once():
            marker = pathlib.Path(__file__).with_name("died-once")
            if not marker.exists():
                marker.write_text("")
                print("dying")
                os._exit(3)
            print("back")
            return os.getpid()
        """,
    )
    flow = project.manifest(
        "restart", [{"name": "once", "call": "fragile:once", "retries": 1}], cluster={"workers": 1}
    )
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc)
    assert (project.root / "died-once").exists()  # the first worker did die
    assert isinstance(task_results(proc.stdout)["once"], int)
    assert "[once] back" in proc.stderr.splitlines()


# -- task output -----------------------------------------------------------------------


def test_task_output_goes_to_stderr_labelled(project: UserProject) -> None:
    project.module(
        "chatty.py",
        """
        import os
        import sys

        def talk(n):
            print("line one")
            print("partial", end="")
            print(" and its end")
            print("to stderr", file=sys.stderr)
            os.write(1, b"raw bytes on fd 1\\n")
            sys.stdout.buffer.write(b"bytes through sys.stdout.buffer\\n")
            sys.stdout.buffer.flush()
            return n

        def square(x):
            print(f"squaring {x}")
            return x * x
        """,
    )
    flow = project.manifest(
        "chatty",
        [
            {"name": "hello", "call": "builtins:print", "args": ["hello from print"]},
            {"name": "talk", "call": "chatty:talk", "args": [7]},
            {
                "name": "square",
                "call": "chatty:square",
                "map": [1, 2, 3],
                "args": ["$(item)"],
                "timeoutSeconds": 60,
            },
            {"name": "echo", "command": ["echo", "a command's stdout is its result"]},
        ],
    )
    for output, parse in (("json", json.loads), ("yaml", yaml.safe_load)):
        proc = project.daskflow("run", flow.name, "-o", output)
        assert_clean_exit(proc)
        status = parse(proc.stdout)  # stdout holds the status and nothing else
        assert status["phase"] == "Succeeded"
        assert status["tasks"]["echo"]["result"] == "a command's stdout is its result"
        lines = proc.stderr.splitlines()
        for line in (
            "[hello] hello from print",
            "[talk] line one",
            "[talk] partial and its end",
            "[talk] to stderr",
            "[square 0] squaring 1",
            "[square 2] squaring 3",
            "raw bytes on fd 1",
            "bytes through sys.stdout.buffer",
        ):
            assert line in lines, (line, proc.stderr)


def test_task_logging_goes_to_stderr_labelled(project: UserProject) -> None:
    project.module(
        "noisy.py",
        """
        import logging

        log = logging.getLogger("noisy")
        detailed = logging.getLogger("noisy.detail")
        detailed.setLevel(logging.DEBUG)

        def work(n):
            log.debug("not shown: below INFO")
            log.info("working on %d", n)
            log.warning("careful")
            detailed.debug("shown: its logger is set to DEBUG")
            return n
        """,
    )
    flow = project.manifest("noisy", [{"name": "work", "call": "noisy:work", "args": [3]}])
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc)
    lines = proc.stderr.splitlines()
    assert "[work] INFO noisy: working on 3" in lines, proc.stderr
    assert "[work] WARNING noisy: careful" in lines, proc.stderr
    assert "[work] DEBUG noisy.detail: shown: its logger is set to DEBUG" in lines, proc.stderr
    assert "not shown" not in proc.stderr


# -- cluster settings ------------------------------------------------------------------


def test_memory_limit_applies_to_local_workers(project: UserProject) -> None:
    project.module(
        "probe.py",
        """
        from distributed import get_worker

        def memory_limit():
            return get_worker().memory_manager.memory_limit
        """,
    )
    flow = project.manifest(
        "limited",
        [{"name": "probe", "call": "probe:memory_limit"}],
        cluster={"workers": 1, "resources": {"limits": {"memory": "300Mi", "cpu": "1"}}},
    )
    too_many = 4 * (os.cpu_count() or 1) + 1
    proc = project.daskflow("run", flow.name, "-o", "json", "--threads-per-worker", str(too_many))
    assert_clean_exit(proc)
    assert task_results(proc.stdout) == {"probe": 300 * 2**20}
    assert "not applied: cluster.resources.limits.cpu (local workers take only" in proc.stderr
    assert f"1 workers x {too_many} threads is far more than" in proc.stderr


def test_bad_quantity_is_invalid_input(project: UserProject) -> None:
    flow = project.manifest(
        "badmem",
        [{"name": "a", "call": "builtins:print"}],
        cluster={"resources": {"limits": {"memory": "lots"}}},
    )
    proc = project.daskflow("run", flow.name)
    assert_clean_exit(proc, codes=(2,))
    assert "spec.cluster.resources.limits.memory: 'lots' is not a Kubernetes quantity" in (
        proc.stderr
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [("--workers", "0"), ("--workers", "-3"), ("--threads-per-worker", "0")],
)
def test_worker_counts_below_one_are_rejected(
    project: UserProject, option: str, value: str
) -> None:
    flow = project.manifest("counts", [{"name": "a", "call": "builtins:print"}])
    proc = project.daskflow("run", flow.name, option, value)
    assert_clean_exit(proc, codes=(2,))
    assert f"argument {option}: must be at least 1, got {value}" in proc.stderr


# -- Ctrl-C and SIGTERM ----------------------------------------------------------------


class Running:
    """``daskflow run`` in its own process group (as a shell runs it), stderr read live."""

    def __init__(self, project: UserProject, *args: str) -> None:
        self.root = project.root
        self.tmp = project.root.parent / "tmp"  # the command's temporary files
        self.tmp.mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.tmp)}
        self.proc = project.popen(*args, env=env)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=lines.extend, args=(stream,), daemon=True)
            for lines, stream in ((self.stdout, self.proc.stdout), (self.stderr, self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def wait_for(self, what: str, check: Any, timeout: float = RUN_TIMEOUT) -> None:
        def running_until() -> Any:
            assert self.proc.poll() is None, f"exited before {what}: {''.join(self.stderr)}"
            return check()

        waiting.wait_for(running_until, timeout, what, interval=0.1)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def ctrl_c(self) -> None:
        """What a terminal does: SIGINT to every process of the foreground group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self) -> tuple[int, str, str]:
        self.proc.wait(timeout=RUN_TIMEOUT)
        for reader in self._readers:
            reader.join(timeout=30)
        return self.proc.returncode, "".join(self.stdout), "".join(self.stderr)


def assert_cancelled(code: int, stdout: str, stderr: str, by: str) -> dict[str, Any]:
    assert code == 1, (code, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    status: dict[str, Any] = json.loads(stdout)
    assert status["phase"] == "Cancelled", status
    assert status["message"] == f"cancelled by {by}"
    return status


@pytest.mark.parametrize("how", ["SIGINT to the group", "SIGTERM"])
def test_signal_while_the_cluster_starts(project: UserProject, how: str) -> None:
    flow = project.manifest("startup", [{"name": "nap", "call": "time:sleep", "args": [60]}])
    run = Running(project, "run", flow.name, "-o", "json", "--workers", "8")
    run.wait_for("worker process", lambda: len(run.descendants()) >= 2)
    assert not any("run: " in line for line in run.stderr)  # the cluster is still starting
    recorded = run.descendants()
    signalled = time.monotonic()
    run.ctrl_c() if how.startswith("SIGINT") else run.proc.send_signal(signal.SIGTERM)
    status = assert_cancelled(*run.finish(), by="SIGINT" if how.startswith("SIGINT") else "SIGTERM")
    assert time.monotonic() - signalled < 60  # not after the whole cluster started
    assert status["tasks"]["nap"]["state"] == "Cancelled"
    assert_nothing_left(project.root, recorded)


def test_ctrl_c_mid_run(project: UserProject) -> None:
    project.module("slow.py", "import time\n\ndef nap(s):\n    time.sleep(s)\n    return s\n")
    flow = project.manifest(
        "midrun",
        [
            {"name": "nap", "call": "slow:nap", "args": [120]},
            {"name": "wait", "command": ["sleep", "120"]},
        ],
    )
    run = Running(project, "run", flow.name, "-o", "json")
    run.wait_for("running tasks", lambda: sum("Running" in line for line in run.stderr) >= 2)
    recorded = run.descendants()
    run.ctrl_c()
    status = assert_cancelled(*run.finish(), by="SIGINT")
    assert {rec["state"] for rec in status["tasks"].values()} == {"Cancelled"}
    assert_nothing_left(project.root, recorded)


def test_second_ctrl_c_exits_at_once(project: UserProject) -> None:
    project.module("slow.py", "import time\n\ndef nap(s):\n    time.sleep(s)\n    return s\n")
    flow = project.manifest("twice", [{"name": "nap", "call": "slow:nap", "args": [120]}])
    run = Running(project, "run", flow.name, "-o", "json")
    run.wait_for("a running task", lambda: any("nap: Running" in line for line in run.stderr))
    recorded = run.descendants()
    run.ctrl_c()
    time.sleep(0.3)  # two SIGINTs in a row may arrive as one
    run.ctrl_c()
    code, stdout, stderr = run.finish()
    assert code == 130, (code, stdout, stderr)
    assert "second SIGINT: exiting at once" in stderr
    assert "Traceback" not in stderr
    assert_nothing_left(project.root, recorded)
    assert not list(run.tmp.glob("daskflow-*"))
