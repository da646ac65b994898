"""``cluster.resources`` where daskflow cannot apply it: said on stderr, never silently ignored."""

from __future__ import annotations

import json
from pathlib import Path

from .test_cli import daskflow, no_traceback, write_flow


def test_resources_on_an_existing_cluster_draw_a_warning(
    tmp_path: Path, cli_scheduler: str
) -> None:
    path = write_flow(
        tmp_path / "limits.yaml",
        [{"name": "n", "call": "builtins:len", "args": ["abc"]}],
        cluster={"resources": {"limits": {"memory": "1Gi", "cpu": "2"}}},
    )
    proc = daskflow("run", str(path), "--address", cli_scheduler, "-o", "json")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tasks"]["n"]["result"] == 3
    assert (
        "not applied: cluster.resources.limits.memory, cluster.resources.limits.cpu "
        "(the workers of --address exist already)"
    ) in proc.stderr
