"""Stopping a large map: Ctrl-C, a second Ctrl-C, deadlineSeconds and failFast (issue 7).

Cancelling a map used to cost time quadratic in its items (53 s at 20,000; at 200,000 the
command never exited and ignored further signals). The bounds here are hang guards, far
above what a fixed build needs, not speed measurements.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import yaml

from .conftest import UserProject
from .test_first_run import Running, assert_nothing_left

HANG_GUARD = 60.0  # seconds from the signal (or the deadline) to the exit


def big_map(project: UserProject, name: str, items: int, **spec: Any) -> str:
    """A map of ``items`` sleeps, with nothing but the standard library."""
    project.manifest(
        name,
        [
            {"name": "src", "call": "operator:mul", "args": [[0], items]},  # [0] * items
            {"name": "work", "map": "$(tasks.src.result)", "call": "time:sleep", "args": [0.05]},
        ],
        **spec,
    )
    return f"{name}.yaml"


def assert_items_add_up(rec: dict[str, Any], total: int) -> dict[str, int]:
    items: dict[str, int] = rec["items"]
    assert items["total"] == total
    assert items["running"] == items["pending"] == 0, items
    done = ("succeeded", "failed", "cancelled", "skipped")
    assert sum(items[k] for k in done) == total, items
    return items


def test_ctrl_c_mid_map_of_200k_items(project: UserProject) -> None:
    run = Running(project, "run", big_map(project, "huge", 200_000), "-o", "json")
    run.wait_for("the map", lambda: any("work: Running" in line for line in run.stderr))
    recorded = run.descendants()
    signalled = time.monotonic()
    run.ctrl_c()
    code, stdout, stderr = run.finish()
    assert time.monotonic() - signalled < HANG_GUARD
    assert code == 1, (code, stdout[-2000:], stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    status = json.loads(stdout)
    assert status["phase"] == "Cancelled"
    assert status["message"] == "cancelled by SIGINT"
    assert status["tasks"]["work"]["state"] == "Cancelled"
    assert assert_items_add_up(status["tasks"]["work"], 200_000)["cancelled"] > 0
    assert_nothing_left(project.root, recorded)


def test_second_signal_ends_a_busy_run_at_once_with_the_status_so_far(
    project: UserProject,
) -> None:
    run = Running(project, "run", big_map(project, "twice", 50_000), "-o", "json")
    run.wait_for("the map", lambda: any("work: Running" in line for line in run.stderr))
    recorded = run.descendants()
    run.ctrl_c()
    time.sleep(0.3)  # two signals in a row may arrive as one
    second = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    code, stdout, stderr = run.finish()
    assert time.monotonic() - second < 20
    said = [ln for ln in stderr.splitlines() if ln.startswith("daskflow: ") and "warn" not in ln]
    if code == 130:  # the second signal ended it
        assert said == ["daskflow: second SIGTERM: exiting at once"], stderr[-3000:]
    else:  # the first signal's clean cancel won the race: also fine
        assert code == 1, (code, stdout[-2000:], stderr[-3000:])
        assert said == [], stderr[-3000:]
    status = json.loads(stdout)
    assert status["phase"] == "Cancelled"
    assert status["message"] == "cancelled by SIGINT"
    assert_items_add_up(status["tasks"]["work"], 50_000)
    assert_nothing_left(project.root, recorded)


def test_deadline_ends_a_large_map_promptly(project: UserProject) -> None:
    deadline = 20  # the map is running by then, even on a busy machine
    started = time.monotonic()
    run = Running(
        project, "run", big_map(project, "late", 50_000, deadlineSeconds=deadline), "-o", "json"
    )
    run.wait_for("the map", lambda: any("work: Running" in line for line in run.stderr))
    recorded = run.descendants()
    code, stdout, stderr = run.finish()
    # The deadline counts from the start of the run, which comes after the cluster's start.
    assert time.monotonic() - started < deadline + 2 * HANG_GUARD
    assert code == 1, (code, stdout[-2000:], stderr[-3000:])
    status = json.loads(stdout)
    assert status["phase"] == "Failed"
    assert status["reason"] == "DeadlineExceeded"
    assert assert_items_add_up(status["tasks"]["work"], 50_000)["cancelled"] > 0
    assert_nothing_left(project.root, recorded)


def test_fail_fast_ends_a_large_map_promptly(project: UserProject) -> None:
    """A task that fails while a large map runs: failFast cancels the map's items."""
    name = big_map(project, "fragile", 50_000, failFast=True)
    flow = project.root / name
    doc = yaml.safe_load(flow.read_text())
    doc["spec"]["tasks"].append({"name": "boom", "command": ["sh", "-c", "sleep 15; exit 3"]})
    flow.write_text(yaml.safe_dump(doc))
    run = Running(project, "run", name, "-o", "json")
    run.wait_for("the map", lambda: any("work: Running" in line for line in run.stderr))
    recorded = run.descendants()
    run.wait_for("the failure", lambda: any("boom: Failed" in line for line in run.stderr))
    failed = time.monotonic()
    code, stdout, stderr = run.finish()
    assert time.monotonic() - failed < HANG_GUARD
    assert code == 1, (code, stdout[-2000:], stderr[-3000:])
    status = json.loads(stdout)
    assert status["phase"] == "Failed"
    assert status["tasks"]["boom"]["state"] == "Failed"
    work = status["tasks"]["work"]
    assert work["state"] == "Cancelled"
    assert assert_items_add_up(work, 50_000)["cancelled"] > 0
    assert_nothing_left(project.root, recorded)
