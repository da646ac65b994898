"""One real ``distributed`` LocalCluster for the engine tests (2 workers x 1 thread, in
processes), shared by the engine tests and closed after them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import LocalCluster

from daskflow.engine.local import worker_pythonpath

from .helpers import Runner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def dask_address() -> Iterator[str]:
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # no dashboard; its HTTP routes on a free port
        worker_dashboard_address=None,
        silence_logs=logging.ERROR,
        env={"PYTHONPATH": worker_pythonpath([ROOT])},
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def run(dask_address: str) -> Runner:
    return Runner(dask_address)
