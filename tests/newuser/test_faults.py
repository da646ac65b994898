"""A new user's tasks that exit, interrupt, crash their worker or leave processes behind,
run through the installed ``daskflow`` command: each is an ordinary task outcome with a
clear message in the JSON status, and nothing of the run is left running afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psutil

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
        env={**os.environ, "FAULTS_TEST_RUN": marker, "PYTHONPATH": str(project.root)},
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
