"""``import daskflow`` stays light: the SDK loads on first use, and neither it nor a
flow's export imports Dask or the Kubernetes client."""

from __future__ import annotations

import subprocess
import sys

WATCHED = ("distributed", "dask", "kubernetes", "kopf", "rich", "pydantic")


def loaded_after(code: str) -> list[str]:
    """Which of WATCHED are imported once ``code`` ran in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(*(m for m in {WATCHED!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return proc.stdout.split()


def test_import_daskflow_loads_nothing_heavy() -> None:
    assert loaded_after("import daskflow") == []


def test_the_sdk_and_a_manifest_need_no_dask_nor_kubernetes() -> None:
    code = (
        "from daskflow import task, flow, Flow, Cluster, shell\n"
        "from tests.sdk.test_trace import etl\n"
        "etl.to_yaml()"
    )
    assert loaded_after(code) == ["pydantic"]
