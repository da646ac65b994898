"""``daskflow`` as a user runs it: a real subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPT = Path(sys.executable).parent / "daskflow"
DASKFLOW = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "daskflow.cli"]
RUN_TIMEOUT = 240  # generous: the machine may be busy; this is not a speed test


def daskflow(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DASKFLOW, *args], capture_output=True, text=True, cwd=cwd, timeout=RUN_TIMEOUT
    )


def write_flow(path: Path, tasks: list[dict[str, Any]], **spec: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "daskflow.io/v1alpha1",
                "kind": "FlowRun",
                "metadata": {"name": path.stem},
                "spec": {"tasks": tasks, **spec},
            }
        )
    )
    return path


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout


# -- validate ---------------------------------------------------------------------------


def test_validate_examples() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 3
    proc = daskflow("validate", *map(str, files))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("valid FlowRun") == len(files)


def test_validate_invalid_names_task_and_field_without_traceback(tmp_path: Path) -> None:
    good = write_flow(tmp_path / "good.yaml", [{"name": "a", "command": ["true"]}])
    bad = write_flow(
        tmp_path / "bad.yaml",
        [
            {"name": "extract", "call": "m:f"},
            {"name": "load", "call": "m:f", "dependsOn": ["extrct"]},
        ],
    )
    proc = daskflow("validate", str(good), str(bad))
    assert proc.returncode == 2
    assert 'tasks[1] (load).dependsOn: unknown task "extrct"' in proc.stderr
    assert f"{bad} is invalid" in proc.stderr
    assert "good.yaml: valid FlowRun" in proc.stdout
    no_traceback(proc)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("spec: [", "not valid YAML"),
        ("kind: FlowRun\n", "spec: Field required"),
        ("just a string\n", "must be a mapping"),
    ],
)
def test_validate_malformed_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(content)
    proc = daskflow("validate", str(path))
    assert proc.returncode == 2
    assert expected in proc.stderr
    no_traceback(proc)


def test_validate_missing_file(tmp_path: Path) -> None:
    proc = daskflow("validate", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert "cannot read file" in proc.stderr
    no_traceback(proc)


# -- run: input errors (no cluster starts) ------------------------------------------------


def test_run_invalid_manifest_exits_2(tmp_path: Path) -> None:
    path = write_flow(
        tmp_path / "cycle.yaml",
        [
            {"name": "a", "call": "m:f", "dependsOn": ["b"]},
            {"name": "b", "call": "m:f", "dependsOn": ["a"]},
        ],
    )
    proc = daskflow("run", str(path), "-o", "json")
    assert proc.returncode == 2
    assert "tasks[0] (a).dependsOn: dependency cycle: a depends on b, b depends on a" in (
        proc.stderr
    )
    assert proc.stdout == ""
    no_traceback(proc)


def test_run_bad_set_exits_2(tmp_path: Path) -> None:
    path = write_flow(tmp_path / "f.yaml", [{"name": "a", "command": ["true"]}])
    proc = daskflow("run", str(path), "--set", "novalue")
    assert proc.returncode == 2
    assert "expected NAME=VALUE" in proc.stderr
    no_traceback(proc)


def test_run_set_that_makes_the_manifest_invalid_exits_2(tmp_path: Path) -> None:
    path = write_flow(
        tmp_path / "f.yaml",
        [{"name": "a", "command": ["echo", "$(item)"], "map": "$(params.xs)"}],
        parameters={"xs": [1]},
    )
    proc = daskflow("run", str(path), "--set", "xs=3")
    assert proc.returncode == 2
    assert 'tasks[0] (a).map: parameter "xs" is not a list' in proc.stderr


# -- run: on a cluster -----------------------------------------------------------------


def test_run_json_prints_exactly_the_status_object(tmp_path: Path, cli_scheduler: str) -> None:
    path = write_flow(
        tmp_path / "ok.yaml",
        [
            {"name": "make", "command": ["echo", "$(params.word)"]},
            {"name": "shout", "command": ["sh", "-c", "echo $(tasks.make.result) | tr a-z A-Z"]},
        ],
        parameters={"word": "hello"},
    )
    proc = daskflow("run", str(path), "--address", cli_scheduler, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert isinstance(status, dict)
    assert status["phase"] == "Succeeded"
    assert {"phase", "startTime", "completionTime", "message", "tasks"} <= status.keys()
    assert set(status["tasks"]) == {"make", "shout"}
    shout = status["tasks"]["shout"]
    assert {"state", "attempts", "startTime", "completionTime", "result"} <= shout.keys()
    assert shout["result"] == "HELLO"
    assert "run: Succeeded" in proc.stderr  # progress goes to stderr, never to stdout
    no_traceback(proc)


def test_run_failed_exits_1(tmp_path: Path, cli_scheduler: str) -> None:
    path = write_flow(
        tmp_path / "bad.yaml",
        [
            {"name": "bad", "command": ["sh", "-c", "echo oops >&2; exit 4"]},
            {"name": "after", "command": ["echo"], "dependsOn": ["bad"]},
        ],
    )
    proc = daskflow("run", str(path), "--address", cli_scheduler, "-o", "yaml")
    assert proc.returncode == 1
    status = yaml.safe_load(proc.stdout)
    assert status["phase"] == "Failed"
    assert status["tasks"]["bad"]["state"] == "Failed"
    assert "exit code 4" in status["tasks"]["bad"]["message"]
    assert "oops" in status["tasks"]["bad"]["message"]
    assert status["tasks"]["after"]["state"] == "UpstreamFailed"
    no_traceback(proc)


def test_run_set_overrides_parameters(tmp_path: Path, cli_scheduler: str) -> None:
    path = write_flow(
        tmp_path / "params.yaml",
        [
            {"name": "show", "command": ["echo", "$(params.name) $(params.count)"]},
            {"name": "each", "command": ["echo", "$(item)"], "map": "$(params.items)"},
            {"name": "maybe", "command": ["echo", "ran"], "when": "$(params.enabled)"},
        ],
        parameters={"name": "default", "count": 1, "items": ["a"], "enabled": True},
    )
    proc = daskflow(
        "run",
        str(path),
        "--address",
        cli_scheduler,
        "-o",
        "json",
        "--set",
        "name=override",
        "--set",
        "count=3",
        "--set",
        "items=[x, y, z]",
        "--set",
        "enabled=false",
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["tasks"]["show"]["result"] == "override 3"
    assert status["tasks"]["each"]["items"]["total"] == 3
    assert status["tasks"]["maybe"]["state"] == "Skipped"


def test_run_table_output(tmp_path: Path, cli_scheduler: str) -> None:
    path = write_flow(tmp_path / "table.yaml", [{"name": "only-task", "command": ["true"]}])
    proc = daskflow("run", str(path), "--address", cli_scheduler)
    assert proc.returncode == 0, proc.stderr
    assert "only-task" in proc.stdout
    assert "Succeeded" in proc.stdout


def test_run_unreachable_scheduler_exits_1_without_traceback(tmp_path: Path) -> None:
    path = write_flow(tmp_path / "f.yaml", [{"name": "a", "command": ["true"]}])
    proc = subprocess.run(
        [*DASKFLOW, "run", str(path), "--address", "tcp://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
    )
    assert proc.returncode == 1
    assert "cannot use the Dask cluster" in proc.stderr
    no_traceback(proc)


# -- the examples, on the embedded LocalCluster ---------------------------------------------


def run_example(name: str, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = daskflow("run", str(EXAMPLES / name), "-o", "json", *args, cwd=tmp_path)
    no_traceback(proc)
    return proc.returncode, json.loads(proc.stdout)


def test_example_etl_mapreduce_succeeds(tmp_path: Path) -> None:
    workdir = f"workdir={tmp_path}"
    code, status = run_example(
        "etl-mapreduce.yaml", tmp_path, "--set", "rows=200", "--set", workdir
    )
    assert (code, status["phase"]) == (0, "Succeeded")
    assert status["tasks"]["transform"]["items"]["succeeded"] == 12
    assert status["tasks"]["load"]["result"]["files"] == 12
    assert status["tasks"]["load"]["result"]["rows"] == 12 * 200
    assert len(list(tmp_path.glob("etl-mapreduce/sales-*.csv"))) == 12


def test_example_retries_and_failure_fails_as_documented(tmp_path: Path) -> None:
    code, status = run_example("retries-and-failure.yaml", tmp_path, "--set", f"workdir={tmp_path}")
    assert (code, status["phase"]) == (1, "Failed")
    tasks = status["tasks"]
    assert {name: rec["state"] for name, rec in tasks.items()} == {
        "prepare": "Succeeded",
        "fetch-prices": "Succeeded",
        "price-report": "Succeeded",
        "validate-orders": "Failed",
        "publish-orders": "UpstreamFailed",
        "slow-export": "Failed",
    }
    assert tasks["fetch-prices"]["attempts"] == 3
    assert tasks["validate-orders"]["failedItems"] == [2]
    assert "timeout" in tasks["slow-export"]["message"]
    assert "EXPECTED to end Failed" in (EXAMPLES / "retries-and-failure.yaml").read_text()


def test_example_commands_succeeds_with_skips(tmp_path: Path) -> None:
    code, status = run_example("commands.yaml", tmp_path)
    assert (code, status["phase"]) == (0, "Succeeded")
    tasks = status["tasks"]
    assert tasks["publish"]["state"] == "Skipped"
    assert tasks["notify"]["state"] == "Skipped"
    assert tasks["list-names"]["result"] == "gamma\ndelta\nbeta"
    assert tasks["greet"]["result"].startswith("HELLO FROM COMMANDS ON ")
    assert tasks["stats"]["result"] == {"lines": 3, "words": 3, "longest": "gamma"}
    assert tasks["summary"]["result"] == "lines:3\nlongest:gamma\nwords:3"
    assert tasks["reverse"]["items"]["succeeded"] == 3


# -- Ctrl-C -------------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def running_tree(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    assert proc.poll() is None, proc.communicate()
    with contextlib.suppress(psutil.Error):
        return tree(proc.pid)
    return []


def pid_written(pidfile: Path) -> bool:
    return pidfile.exists() and bool(pidfile.read_text().strip())


def named(processes: list[psutil.Process], name: str) -> list[psutil.Process]:
    found = []
    for p in processes:
        with contextlib.suppress(psutil.Error):
            if p.name() == name:
                found.append(p)
    return found


def wait_watching(proc: subprocess.Popen[str], seen: list[psutil.Process]) -> tuple[str, str]:
    """Wait for ``proc`` to end, adding every process of its tree seen meanwhile to ``seen``
    (so that processes started after the signal are checked too)."""
    known = {p.pid for p in seen}
    deadline = time.monotonic() + RUN_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            for p in tree(proc.pid):
                if p.pid not in known:
                    known.add(p.pid)
                    seen.append(p)
        time.sleep(0.05)
    return proc.communicate(timeout=RUN_TIMEOUT)


def test_ctrl_c_cancels_the_run_and_leaves_nothing_behind(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    path = write_flow(
        tmp_path / "sleepy.yaml",
        [
            {"name": "nap", "command": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"]},
            {"name": "after", "command": ["echo", "late"], "dependsOn": ["nap"]},
            {"name": "items", "command": ["sleep", "$(item)"], "map": [60, 60, 60]},
        ],
    )
    proc = subprocess.Popen(
        [*DASKFLOW, "run", str(path), "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        # Both workers busy: the nap (its shell exec'd sleep) and a mapped command.
        processes = wait_for(
            lambda: running_tree(proc),
            RUN_TIMEOUT,
            "the nap and a mapped command to run",
            until=lambda procs: len(named(procs, "sleep")) >= 2 and pid_written(pidfile),
        )
        sleeper = int(pidfile.read_text())
        assert sleeper in {p.pid for p in processes}
        proc.send_signal(signal.SIGINT)
        out, err = wait_watching(proc, processes)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    status = json.loads(out)
    assert status["phase"] == "Cancelled"
    assert status["message"] == "cancelled by SIGINT"
    assert {rec["state"] for rec in status["tasks"].values()} == {"Cancelled"}
    assert "Traceback" not in err, err
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert alive == [], [(p.pid, p.name()) for p in alive]


def test_ctrl_c_while_the_cluster_starts_leaves_nothing_behind(tmp_path: Path) -> None:
    path = write_flow(tmp_path / "f.yaml", [{"name": "nap", "command": ["sleep", "60"]}])
    proc = subprocess.Popen(
        [*DASKFLOW, "run", str(path), "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        # The first child processes mean the LocalCluster is on its way up.
        processes = wait_for(
            lambda: running_tree(proc),
            RUN_TIMEOUT,
            "a process of the cluster",
            interval=0.05,
            until=lambda procs: len(procs) > 1,
        )
        proc.send_signal(signal.SIGINT)
        out, err = wait_watching(proc, processes)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    status = json.loads(out)
    assert status["phase"] == "Cancelled"
    assert status["tasks"]["nap"]["state"] == "Cancelled"
    assert "Traceback" not in err, err
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert alive == [], [(p.pid, p.name()) for p in alive]
