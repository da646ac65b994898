"""The operator's deadline backstop: from the run's start, else from the FlowRun's creation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from daskflow.kube.operator import DEADLINE_GRACE, deadline_exceeded

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run(deadline: float | None, *, created: datetime, started: datetime | None) -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "spec": {} if deadline is None else {"deadlineSeconds": deadline},
        "status": {} if started is None else {"startTime": started.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }


def test_a_run_that_never_started_counts_from_its_creation() -> None:
    snap = run(60, created=T0, started=None)
    assert deadline_exceeded(snap, T0 + timedelta(seconds=60 + DEADLINE_GRACE)) is None
    assert deadline_exceeded(snap, T0 + timedelta(seconds=61 + DEADLINE_GRACE)) == 60


def test_a_started_run_counts_from_its_start() -> None:
    snap = run(60, created=T0, started=T0 + timedelta(seconds=100))
    assert deadline_exceeded(snap, T0 + timedelta(seconds=100 + DEADLINE_GRACE)) is None
    assert deadline_exceeded(snap, T0 + timedelta(seconds=161 + DEADLINE_GRACE)) == 60


def test_no_deadline_never_passes() -> None:
    assert deadline_exceeded(run(None, created=T0, started=None), T0 + timedelta(days=9)) is None
