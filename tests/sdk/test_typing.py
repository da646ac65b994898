"""The SDK is typed: mypy --strict passes on a user's module that uses all of it, and
catches some misuses of a placeholder before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.newuser.conftest import UserProject

MYPY = Path(sys.executable).parent / "mypy"

USER_MODULE = """
from typing import Any

from daskflow import Cluster, Flow, Parameter, RunResult, flow, shell, task


@task(retries=2, retry_delay=5, timeout=600)
def extract(date: str) -> list[str]:
    return [date]


@task
def transform(path: str) -> dict[str, Any]:
    return {"path": path}


@task
def load(rows: list[dict[str, Any]]) -> int:
    return len(rows)


@task
def notify(n: int) -> None:
    print(n)


@task
def cleanup() -> None:
    pass


@flow(name="etl", cluster=Cluster(workers=4), image="registry.example.com/etl:1.2")
def etl(date: str = "2026-12-01", publish: bool = True) -> None:
    files = extract(date)
    rows = transform.map(files)
    n = load(rows)
    notify(n, when=publish)
    cleanup.after(n)
    transform.with_options(name="transform-eu", retries=5)("/eu").after(files)
    report = shell(["sh", "-c", f"echo rows={n}"], name="report", env={"ROWS": n})
    shell.map(files, ["wc", "-c", "$(item)"], name="sizes").after(report)


with Flow("classic") as classic:
    day = Parameter("date", default="2026-12-01")
    load(transform.map(extract(day)))


def main() -> None:
    manifest: dict[str, Any] = etl.manifest(date="2026-12-02")
    text: str = etl.to_yaml()
    result: RunResult = classic.run(date="2026-12-03")
    phase: str = result.phase
    total: Any = result.results["load"]
    direct: list[str] = extract.fn("2026")
    print(manifest, text, phase, total, direct)
"""


def mypy(project: UserProject, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MYPY), "--strict", "--no-incremental", name],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mypy_strict_passes_on_a_user_module(project: UserProject) -> None:
    project.module("etl.py", USER_MODULE)
    proc = mypy(project, "etl.py")
    assert proc.returncode == 0, proc.stdout
    assert "Success: no issues found in 1 source file" in proc.stdout


def test_mypy_rejects_using_a_result_as_a_list_or_a_number(project: UserProject) -> None:
    project.module(
        "misuse.py",
        """
        from daskflow import flow, task

        @task
        def extract(date: str) -> list[str]:
            return [date]

        @flow
        def misuse() -> None:
            files = extract("2026")
            print(len(files), files[0], files + 1)
            for f in files:
                print(f)
        """,
    )
    proc = mypy(project, "misuse.py")
    assert proc.returncode == 1
    found = proc.stdout
    assert 'Argument 1 to "len" has incompatible type "Result[list[str]]"' in found
    assert 'Value of type "Result[list[str]]" is not indexable' in found
    assert 'Unsupported operand types for + ("Result[list[str]]" and "int")' in found
    assert '"Result[list[str]]" has no attribute "__iter__"' in found
