"""Acceptance of first contact, as a newcomer tries it after reading the README: the
obvious things the first bug report did not list (a very chatty task, output that is not
plain text), each run through the installed ``daskflow`` command in a throw-away project.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from .conftest import UserProject, assert_clean_exit
from .test_first_run import Running


def _time(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")


def test_a_very_chatty_task_does_not_hold_up_the_run(project: UserProject) -> None:
    """200,000 printed lines all reach stderr, and showing them does not stall the run:
    the run ends when its task does (it ended some 20 s later when every line went through
    rich, one at a time, on the runner's event loop)."""
    lines = 200_000
    project.module(
        "chatty.py",
        """
        def talk(n):
            for i in range(n):
                print("line", i)
            return n
        """,
    )
    flow = project.manifest("chatty", [{"name": "talk", "call": "chatty:talk", "args": [lines]}])
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc)
    status = json.loads(proc.stdout)
    assert status["tasks"]["talk"]["result"] == lines
    shown = [ln for ln in proc.stderr.splitlines() if ln.startswith("[talk] line ")]
    assert shown == [f"[talk] line {i}" for i in range(lines)]
    # a generous bound: the relay itself takes well under a second
    lag = _time(status["completionTime"]) - _time(status["tasks"]["talk"]["completionTime"])
    assert lag.total_seconds() <= 6, (lag, status)


def test_task_output_reaches_stderr_verbatim(project: UserProject) -> None:
    """Tabs, escape sequences and bracketed text arrive as the task printed them."""
    text = "a\tb [bold]x[/bold] \x1b[31mred\x1b[0m  trailing  "
    project.module("verb.py", f"def say():\n    print({text!r})\n")
    flow = project.manifest("verb", [{"name": "say", "call": "verb:say"}])
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc)
    assert f"[say] {text}" in proc.stderr.splitlines(), proc.stderr


def test_the_users_own_exception_classes_are_named_in_the_status(project: UserProject) -> None:
    """An exception class from the user's module (the runner cannot import it) shows by
    name and text, as Python's own do: it showed as ``Exception: b'\\x80\\x05...'``. A missing
    module shows no frames of Python's import machinery."""
    project.module(
        "errors.py",
        """
        class DataError(Exception):
            pass

        class Abort(BaseException):
            pass

        def bad_row(i):
            raise DataError(f"row {i} is broken")

        def abort():
            raise Abort("stop here")
        """,
    )
    flow = project.manifest(
        "errors",
        [
            {"name": "bad", "call": "errors:bad_row", "args": [7], "retries": 1},
            {"name": "items", "call": "errors:bad_row", "map": [1, 2], "args": ["$(item)"]},
            {"name": "abort", "call": "errors:abort"},
            {"name": "typo", "call": "erors:bad_row", "args": [1]},
        ],
    )
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc, codes=(1,))
    tasks = json.loads(proc.stdout)["tasks"]
    bad = tasks["bad"]["message"].splitlines()
    assert (tasks["bad"]["attempts"], bad[0]) == (2, "DataError: row 7 is broken"), bad
    assert 'errors.py", line 9, in bad_row' in bad[1], bad
    assert tasks["items"]["message"].startswith("2 of 2 items failed; item 0: DataError: row 1 ")
    assert tasks["abort"]["message"].startswith("Abort: stop here"), tasks["abort"]
    assert tasks["typo"]["message"] == "ModuleNotFoundError: No module named 'erors'"


def test_exit_at_once_prints_no_python_warnings(project: UserProject) -> None:
    """A second Ctrl-C ends the command with one line of its own on stderr: no warnings of
    multiprocessing's resource tracker about the semaphores it removes."""
    flow = project.manifest("twice", [{"name": "nap", "call": "time:sleep", "args": [120]}])
    run = Running(project, "run", flow.name, "-o", "json")
    run.wait_for("a running task", lambda: any("nap: Running" in line for line in run.stderr))
    run.ctrl_c()
    time.sleep(0.3)  # two SIGINTs in a row may arrive as one
    run.ctrl_c()
    code, _, stderr = run.finish()
    assert code == 130, stderr
    # finish() read stderr to its end, which the resource tracker holds open until it exits
    assert stderr.splitlines()[-1] == "daskflow: second SIGINT: exiting at once", stderr
    assert "Warning" not in stderr, stderr


def test_run_help_explains_every_argument_and_the_exit_codes(project: UserProject) -> None:
    proc = project.daskflow("run", "--help")
    assert_clean_exit(proc)
    text = " ".join(proc.stdout.split())
    assert "Exit codes: 0 Succeeded, 1 Failed or Cancelled, 2 invalid input." in text
    assert "file the FlowRun manifest" in text
    assert "--threads-per-worker THREADS_PER_WORKER threads" in text
    assert "-o {table,json,yaml} format" in text


def test_python_habits_in_a_manifest_get_a_hint(project: UserProject) -> None:
    """snake_case task names and misspelt fields say what to write instead."""
    flow = project.manifest(
        "habits",
        [
            {"name": "extract_data", "call": "mytasks:f"},
            {"name": "load", "call": "mytasks:f", "dependson": ["extract"], "timeout": 5},
        ],
    )
    proc = project.daskflow("validate", flow.name)
    assert_clean_exit(proc, codes=(2,))
    assert proc.stderr.splitlines() == [
        "habits.yaml is invalid:",
        '  - tasks[0] (extract_data).name: must be lowercase letters, digits and "-" (a DNS '
        'label), such as "extract-data"',
        "  - tasks[1] (load).dependson: unknown field (did you mean dependsOn?)",
        "  - tasks[1] (load).timeout: unknown field (did you mean timeoutSeconds?)",
    ]
