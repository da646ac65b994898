"""A new user's tasks that exit, interrupt, crash their worker or leave processes behind,
run through the installed ``daskflow`` command: each is an ordinary task outcome with a
clear message in the JSON status, and nothing of the run is left running afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from harness.waiting import wait_for

from .conftest import RUN_TIMEOUT, SCRIPT, UserProject, assert_clean_exit

SCRIPTS = """
    import sys

    def done():
        sys.exit(0)

    def bad(code):
        sys.exit(code)

    def interrupted():
        raise KeyboardInterrupt

    def answer():
        return 42
"""


def survivors(marker: str) -> list[psutil.Process]:
    """Live processes that inherited the environment of the run tagged ``marker``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("FAULTS_TEST_RUN") == marker and proc.status() != "zombie":
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def run_json(project: UserProject, manifest: Path, *args: str) -> tuple[Any, str, int]:
    """``daskflow run MANIFEST -o json`` in the project; returns (status, marker, exit code).
    Every process of the run inherits a marker in its environment, to find leftovers."""
    marker = uuid.uuid4().hex
    proc = subprocess.run(
        [str(SCRIPT), "run", str(manifest), "-o", "json", *args],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**os.environ, "FAULTS_TEST_RUN": marker},
    )
    assert_clean_exit(proc, codes=(0, 1))
    return json.loads(proc.stdout), marker, proc.returncode


def test_sys_exit_and_ctrl_c_in_a_task_are_task_outcomes(project: UserProject) -> None:
    project.module("scripts.py", SCRIPTS)
    manifest = project.manifest(
        "exits",
        [
            {"name": "done", "call": "scripts:done"},
            {"name": "bad", "call": "scripts:bad", "args": [3], "retries": 1},
            {"name": "interrupted", "call": "scripts:interrupted"},
            {"name": "each", "call": "scripts:bad", "args": ["$(item)"], "map": [0, 1, 2, 0, 4, 5]},
            {"name": "answer", "call": "scripts:answer"},
        ],
    )
    status, marker, code = run_json(project, manifest)
    assert code == 1
    tasks = status["tasks"]
    assert {n: t["state"] for n, t in tasks.items()} == {
        "done": "Succeeded",  # sys.exit(0): success, as for a script
        "bad": "Failed",
        "interrupted": "Failed",
        "each": "Failed",
        "answer": "Succeeded",
    }
    assert tasks["done"]["result"] is None
    assert tasks["bad"]["attempts"] == 2
    assert tasks["bad"]["message"].startswith("SystemExit: exit code 3")
    assert tasks["interrupted"]["message"].startswith("KeyboardInterrupt")
    assert tasks["each"]["failedItems"] == [1, 2, 4, 5]
    assert tasks["answer"]["result"] == 42
    assert status["message"] == "3 of 5 tasks failed: bad, interrupted, each"
    assert survivors(marker) == []


CRASHES = """
    import ctypes
    import os
    from pathlib import Path

    def crash(code):
        os._exit(code)

    def crash_once(flag):
        if not Path(flag).exists():
            Path(flag).touch()
            os._exit(7)
        return "second time lucky"

    def segfault():
        ctypes.string_at(0)
"""


def test_a_task_that_kills_its_worker_is_a_failed_attempt(project: UserProject) -> None:
    project.module("crashes.py", CRASHES)
    manifest = project.manifest(
        "crashes",
        [
            {"name": "crash", "call": "crashes:crash", "args": [3], "retries": 1},
            {"name": "once", "call": "crashes:crash_once", "args": ["flag"], "retries": 2},
            {"name": "segv", "call": "crashes:segfault"},
            {"name": "fine", "call": "builtins:len", "args": [[1, 2]]},
        ],
    )
    status, marker, code = run_json(project, manifest)
    assert code == 1
    tasks = status["tasks"]
    crash, once, segv = tasks["crash"], tasks["once"], tasks["segv"]
    assert (crash["state"], crash["attempts"], crash["reason"]) == ("Failed", 2, "WorkerDied")
    assert crash["message"] == "its worker died: exit code 3"
    assert (once["state"], once["attempts"], once["lostAttempts"]) == ("Succeeded", 2, 1)
    assert once["result"] == "second time lucky"
    assert (segv["attempts"], segv["reason"]) == (1, "WorkerDied")
    assert segv["message"] == "its worker died: killed by signal 11 (SIGSEGV)"
    assert tasks["fine"]["result"] == 2
    for rec in tasks.values():
        assert "KilledWorker" not in rec.get("message", "")
    assert survivors(marker) == []


def family(pidfile: str, then: str) -> list[str]:
    """A command that starts what used to outlive a run: a background job that keeps
    stdout open, one with redirected output, and one that leaves with ``setsid``."""
    script = (
        f"echo $$ >> {pidfile}; sleep 300 & sleep 300 >/dev/null 2>&1 & "
        "setsid sh -c 'sleep 300 & wait' >/dev/null 2>&1 & "
        f"echo $PPID >> {pidfile}; {then}"
    )
    return ["sh", "-c", script]


def test_no_process_of_a_command_outlives_its_task(project: UserProject) -> None:
    manifest = project.manifest(
        "leftovers",
        [
            {
                "name": "quick",
                "command": family("quick.pids", "echo started"),
                "timeoutSeconds": 120,
            },
            {"name": "slow", "command": family("slow.pids", "sleep 300"), "timeoutSeconds": 3},
        ],
    )
    started = time.monotonic()
    status, marker, code = run_json(project, manifest)
    assert code == 1
    quick, slow = status["tasks"]["quick"], status["tasks"]["slow"]
    assert (quick["state"], quick["result"]) == ("Succeeded", "started")
    assert slow["state"] == "Failed"
    assert slow["message"].startswith("TimeoutError: timeout")
    assert time.monotonic() - started < 120  # the background jobs were not waited for
    assert survivors(marker) == []


def test_ctrl_c_and_a_killed_worker_leave_no_process_behind(project: UserProject) -> None:
    flag = project.root / "flag"
    again = f"if [ -e {flag} ]; then echo again; exit 0; fi; touch {flag}; "
    argv = family("victim.pids", "sleep 300")
    argv[-1] = again + argv[-1]
    manifest = project.manifest(
        "kills",
        [
            {"name": "victim", "command": argv},
            {
                "name": "later",
                "command": family("later.pids", "sleep 300"),
                "dependsOn": ["victim"],
            },
        ],
    )
    marker = uuid.uuid4().hex
    proc = project.popen(
        "run",
        str(manifest),
        "-o",
        "json",
        env={**os.environ, "FAULTS_TEST_RUN": marker},
    )
    pidfile, later = project.root / "victim.pids", project.root / "later.pids"
    wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2, 60, "victim.pids")
    reaper = psutil.Process(int(pidfile.read_text().split()[1]))
    reaper.parent().kill()  # kill -9 the worker running the command
    # Dask runs it again elsewhere; then Ctrl-C while the next command runs.
    wait_for(lambda: later.exists() and len(later.read_text().split()) == 2, 60, "later.pids")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 1, err[-3000:]
    status = json.loads(out)
    assert status["phase"] == "Cancelled"
    assert status["tasks"]["victim"]["result"] == "again"
    assert status["tasks"]["victim"]["lostAttempts"] == 1  # killed from outside: no retry
    wait_for(lambda: survivors(marker), 30, "no survivor", until=lambda left: not left)
