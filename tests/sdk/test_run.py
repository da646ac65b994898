"""Flows written in Python, run for real on LocalClusters: ``Flow.run()``, the round trip
through ``daskflow export`` and ``daskflow run``, and ``python myflow.py``."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from typing import Any

import psutil

from tests.newuser.conftest import RUN_TIMEOUT, UserProject, assert_clean_exit

from .conftest import python

SHOP = """
from daskflow import Cluster, flow, shell, task


@task(retries=1)
def extract(n: int) -> list[int]:
    print(f"extracting {n}")
    return list(range(n))


@task
def square(x: int) -> int:
    return x * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def big(n: int) -> str:
    return "x" * n  # more than the 1 KiB copy a status holds


@task
def size(text: str) -> int:
    return len(text)


@flow(name="shop-etl", cluster=Cluster(workers=1, threads_per_worker=2))
def etl(n: int = 4, publish: bool = False, blob: int = 5000) -> None:
    xs = extract(n)
    squares = square.map(xs)
    t = total(squares)
    size(big(blob))
    shell(["sh", "-c", f"echo total={t}"], name="report")
    shell(["echo", "published"], name="publish", when=publish).after(t)
"""

TIMES = {"startTime", "completionTime", "duration"}


def timeless(value: Any) -> Any:
    """A status without its clock readings, which differ between two runs."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def imported(project: UserProject, module: str) -> Any:
    """``module`` of the project, imported in this process as the user's code would be."""
    import importlib

    sys.path.insert(0, str(project.root))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(project.root))


def test_run_and_the_round_trip_through_yaml_give_the_same_results(project: UserProject) -> None:
    project.module("shop/__init__.py", "")
    project.module("shop/flows.py", SHOP)
    etl = imported(project, "shop.flows").etl

    result = etl.run(n=5)

    assert result.phase == "Succeeded"
    assert result.results == {
        "extract": [0, 1, 2, 3, 4],
        "square": [0, 1, 4, 9, 16],
        "total": 30,
        "big": "x" * 5000,  # the full value: the status has no copy of it
        "size": 5000,
        "report": "total=30",
    }
    assert "result" not in result.status["tasks"]["big"]
    assert result.status["tasks"]["publish"]["state"] == "Skipped"

    export = project.daskflow("export", "shop.flows:etl", "--set", "n=5")
    assert_clean_exit(export)
    (project.root / "etl.yaml").write_text(export.stdout)
    run = project.daskflow("run", "etl.yaml", "-o", "json")
    assert_clean_exit(run)
    printed = json.loads(run.stdout)
    assert timeless(printed) == timeless(result.status)  # exactly what daskflow run prints
    for name, rec in printed["tasks"].items():
        if "result" in rec:
            assert rec["result"] == result.results[name]


def test_a_failed_run_has_results_for_the_tasks_that_succeeded_also_in_an_event_loop(
    project: UserProject,
) -> None:
    project.module(
        "fragile.py",
        """
        from daskflow import Cluster, flow, task

        @task
        def fine() -> int:
            return 1

        @task
        def broken(x: int) -> int:
            raise ValueError(f"no good: {x}")

        @task
        def after(x: int) -> int:
            return x

        @flow(cluster=Cluster(workers=1))
        def fragile() -> None:
            after(broken(fine()))
        """,
    )
    fragile = imported(project, "fragile").fragile

    async def in_a_notebook() -> Any:  # Jupyter runs cells inside an event loop
        return fragile.run()

    result = asyncio.run(in_a_notebook())
    assert result.phase == "Failed"
    assert result.results == {"fine": 1}
    tasks = result.status["tasks"]
    assert tasks["broken"]["state"] == "Failed"
    assert "ValueError: no good: 1" in tasks["broken"]["message"]
    assert tasks["after"]["state"] == "UpstreamFailed"


MYFLOW = """
import json
import sys

from daskflow import Cluster, Flow, Parameter, task


@task
def words(text: str) -> list[str]:
    print("splitting", text)
    return text.split()


@task
def shout(word: str) -> str:
    return word.upper() + "!"


with Flow("My Distributed Flow", cluster=Cluster(workers=1)) as flow:
    text = Parameter("text", default="hello new world")
    shout.map(words(text))

if __name__ == "__main__":
    result = flow.run(**dict(arg.split("=", 1) for arg in sys.argv[1:]))
    print(json.dumps({"phase": result.phase, "results": result.results}))
"""


def test_python_myflow_py_with_tasks_in_the_script(project: UserProject) -> None:
    project.module("myflow.py", MYFLOW)
    proc = python(project, "myflow.py", "text=tasks in the script")
    assert_clean_exit(proc)
    assert json.loads(proc.stdout) == {
        "phase": "Succeeded",
        "results": {
            "words": ["tasks", "in", "the", "script"],
            "shout": ["TASKS!", "IN!", "THE!", "SCRIPT!"],
        },
    }
    assert "[words] splitting tasks in the script" in proc.stderr  # task output, labelled
    assert "run: Succeeded" in proc.stderr  # daskflow run's progress lines


def test_exporting_a_script_s_flow_for_a_cluster_is_refused(project: UserProject) -> None:
    project.module("myflow.py", MYFLOW.split("if __name__")[0] + "print(flow.to_yaml())\n")
    proc = python(project, "myflow.py")
    assert proc.returncode == 1
    assert (
        "FlowDefinitionError: task 'words' is defined in __main__, the script being run"
        in proc.stderr
    )
    assert "Export the flow by its module name instead (daskflow export myflow:flow" in proc.stderr
    # which works
    export = project.daskflow("export", "myflow:flow")
    assert_clean_exit(export)
    assert "call: myflow:words" in export.stdout


def test_ctrl_c_cancels_the_run_then_interrupts_the_script(project: UserProject) -> None:
    project.module(
        "slow.py",
        """
        import sys
        import time

        from daskflow import Cluster, flow, task

        @task
        def nap() -> None:
            print("napping", flush=True)
            time.sleep(600)

        @flow(cluster=Cluster(workers=1))
        def slow() -> None:
            nap()

        if __name__ == "__main__":
            try:
                slow.run()
            except KeyboardInterrupt:
                print("interrupted")
                sys.exit(3)
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "slow.py"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "[nap] napping" in line or not line:
            break
    assert "[nap] napping" in lines[-1], lines
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 3, (out, err)
    assert out == "interrupted\n"
    assert "Traceback" not in err
    assert "nap: Cancelled" in err
    _, alive = psutil.wait_procs(family[1:], timeout=15)
    assert not alive, alive


def test_a_run_at_a_script_s_top_level_is_refused_before_any_process_starts(
    project: UserProject,
) -> None:
    script = project.module("prefect_style.py", MYFLOW.split("if __name__")[0] + "flow.run()\n")
    line = len(script.read_text().splitlines())
    proc = python(project, "prefect_style.py")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "daskflow.sdk.trace.FlowDefinitionError: flow 'my-distributed-flow': .run() at the top "
        f"level of prefect_style.py (line {line}): local workers are processes that import the "
        "script again, and would run the flow again. Put the call under "
        '`if __name__ == "__main__":`'
    )
    assert "Nanny" not in proc.stderr
