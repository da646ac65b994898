"""Retries, failures, timeouts, skips, failFast and mapped items that fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .helpers import Runner, call, command, flowrun, states
from .tasks import executions

FLAKY = "daskflow.examples.resilience:flaky"


def test_retries_then_success(run: Runner, tmp_path: Path) -> None:
    status, _ = run(
        flowrun(
            call("flaky", FLAKY, str(tmp_path), "svc", 2, retries=3, retryDelaySeconds=0.05),
        )
    )
    rec = status["tasks"]["flaky"]
    assert rec["state"] == "Succeeded"
    assert rec["attempts"] == 3
    assert rec["retries"] == 2
    assert rec["result"] == "svc ok after 3 attempts"
    assert rec["message"].startswith("succeeded on attempt 3 after ConnectionError")
    assert status["phase"] == "Succeeded"


def test_failure_after_retries_fails_dependents_and_spares_independent_branches(
    run: Runner, tmp_path: Path
) -> None:
    marker = tmp_path / "independent"
    status, _ = run(
        flowrun(
            call("broken", "fail", "disk full", retries=2, retryDelaySeconds=0.01),
            call("child", "identity", "$(tasks.broken.result)"),
            call("grandchild", "identity", 1, dependsOn=["child"]),
            call("gated", "identity", 1, dependsOn=["broken"]),
            call("other", "identity", 5),
            call("other-child", "record", str(marker), "$(tasks.other.result)"),
        )
    )
    assert states(status) == {
        "broken": "Failed",
        "child": "UpstreamFailed",
        "grandchild": "UpstreamFailed",
        "gated": "UpstreamFailed",
        "other": "Succeeded",
        "other-child": "Succeeded",
    }
    broken = status["tasks"]["broken"]
    assert broken["attempts"] == 3
    assert broken["message"].startswith("ValueError: disk full")
    assert "in fail\n    raise ValueError(message)" in broken["message"]  # traceback tail
    assert "upstream task 'broken' failed" in status["tasks"]["child"]["message"]
    assert status["tasks"]["other-child"]["result"] == 5
    assert executions(marker) == 1
    assert status["phase"] == "Failed"
    assert status["message"] == "1 of 6 tasks failed: broken"


def test_fail_fast_starts_no_new_task(run: Runner, tmp_path: Path) -> None:
    marker = tmp_path / "after-slow"
    flag = tmp_path / "broken-seen"
    # "slow" runs until the engine has reported "broken" as Failed (no race on timing).
    wait_flag = f"for i in $(seq 600); do [ -e {flag} ] && exit 0; sleep 0.1; done; exit 1"

    def on_status(status: dict[str, Any]) -> None:
        if status["tasks"]["broken"]["state"] == "Failed":
            flag.touch()

    def flow(fail_fast: bool) -> dict[str, Any]:
        return flowrun(
            call("broken", "fail"),
            command("slow", "sh", "-c", wait_flag),
            call("after-slow", "record", str(marker), dependsOn=["slow"]),
            failFast=fail_fast,
        )

    status, _ = run(flow(True), on_status=on_status, status_interval=0.05)
    assert status["phase"] == "Failed"
    assert status["tasks"]["broken"]["state"] == "Failed"
    assert status["tasks"]["after-slow"]["state"] == "Cancelled"
    assert status["tasks"]["after-slow"]["message"] == "not started: failFast"
    assert status["tasks"]["slow"]["state"] in ("Succeeded", "Cancelled")
    assert executions(marker) == 0

    flag.unlink()  # the same flow without failFast runs the independent branch on
    status, _ = run(flow(False), on_status=on_status, status_interval=0.05)
    assert states(status) == {"broken": "Failed", "slow": "Succeeded", "after-slow": "Succeeded"}
    assert executions(marker) == 1


def test_call_timeout_says_timeout_and_is_retried(run: Runner) -> None:
    status, _ = run(flowrun(call("slow", "sleep", 5, timeoutSeconds=0.3, retries=1)))
    rec = status["tasks"]["slow"]
    assert rec["state"] == "Failed"
    assert rec["attempts"] == 2
    assert "timeout" in rec["message"]


def test_unimportable_call_fails_with_its_error(run: Runner) -> None:
    status, _ = run(flowrun(call("a", "no_such_module_xyz:fn"), call("b", "missing_function")))
    assert "ModuleNotFoundError" in status["tasks"]["a"]["message"]
    assert "AttributeError" in status["tasks"]["b"]["message"]


def test_when_false_skips_and_skipped_propagates_downstream(run: Runner, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    status, _ = run(
        flowrun(
            call("publish", "record", str(marker), 1, when="$(params.publish)"),
            call("after", "record", str(marker), "$(tasks.publish.result)"),
            call("gated", "record", str(marker), dependsOn=["after"]),
            call("mapped", "record", str(marker), "$(item)", map=[1, 2], dependsOn=["publish"]),
            call("unrelated", "identity", 1),
            parameters={"publish": False},
        )
    )
    assert states(status) == {
        "publish": "Skipped",
        "after": "Skipped",
        "gated": "Skipped",
        "mapped": "Skipped",
        "unrelated": "Succeeded",
    }
    assert status["tasks"]["publish"]["message"] == "when is false"
    assert executions(marker) == 0
    assert status["phase"] == "Succeeded"  # skipping is not failing
    assert status["message"] == "1 of 5 tasks succeeded (4 skipped)"


@pytest.mark.parametrize(
    ("when", "runs"),
    [
        (False, False),
        ("false", False),
        ("No", False),
        ("0", False),
        ("", False),
        (0, False),
        (None, True),  # no condition
        (True, True),
        ("yes", True),
        ("true", True),
        (1, True),
    ],
)
def test_when_truthiness(run: Runner, when: object, runs: bool) -> None:
    task = call("t", "identity", 1)
    if when is not None:
        task["when"] = "$(params.cond)"
    status, _ = run(flowrun(task, parameters={"cond": when}))
    assert status["tasks"]["t"]["state"] == ("Succeeded" if runs else "Skipped")


def test_when_from_a_task_result(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("count", "identity", 0),
            call("single", "identity", 1, when="$(tasks.count.result)"),
            call("mapped", "identity", "$(item)", map=[1], when="$(tasks.count.result)"),
        )
    )
    assert states(status) == {"count": "Succeeded", "single": "Skipped", "mapped": "Skipped"}


def test_mapped_item_counts_and_failed_indices(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("check", "fail_if", "$(item)", [3, 7], map=list(range(10)), retries=1),
            call("after", "identity", "$(tasks.check.result)"),
            call("fine", "identity", 1),
        )
    )
    rec = status["tasks"]["check"]
    assert rec["state"] == "Failed"
    assert rec["items"] == {
        "total": 10,
        "succeeded": 8,
        "failed": 2,
        "cancelled": 0,
        "skipped": 0,
        "running": 0,
        "pending": 0,
    }
    assert rec["failedItems"] == [3, 7]
    assert rec["attempts"] == 2
    assert rec["retries"] == 2  # one retry per failing item
    assert rec["message"].startswith("2 of 10 items failed; item 3: ValueError: bad item 3")
    assert status["tasks"]["after"]["state"] == "UpstreamFailed"
    assert status["tasks"]["fine"]["state"] == "Succeeded"
    assert status["phase"] == "Failed"


def test_failed_item_indices_are_bounded(run: Runner) -> None:
    status, _ = run(
        flowrun(call("all", "fail_if", "$(item)", list(range(60)), map=list(range(60))))
    )
    rec = status["tasks"]["all"]
    assert rec["items"]["failed"] == 60
    assert rec["failedItems"] == list(range(20))


def test_a_failed_item_upstream_fails_a_map_over_it(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("first", "fail_if", "$(item)", [2], map=[1, 2, 3]),
            call("second", "double", "$(item)", map="$(tasks.first.result)"),
            call("third", "identity", "$(tasks.second.result)"),
        )
    )
    assert states(status) == {
        "first": "Failed",
        "second": "UpstreamFailed",
        "third": "UpstreamFailed",
    }
    assert status["tasks"]["first"]["failedItems"] == [1]
    assert status["tasks"]["second"]["items"]["total"] == 3
    assert status["tasks"]["second"]["message"] == "upstream task 'first' failed"
