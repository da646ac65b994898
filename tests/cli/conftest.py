"""A LocalCluster for the CLI tests that use ``--address`` (the others start their own)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from distributed import LocalCluster


@pytest.fixture(scope="package")
def cli_scheduler() -> Iterator[str]:
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        worker_dashboard_address=None,
        silence_logs=logging.CRITICAL,
    ) as cluster:
        yield cluster.scheduler_address
