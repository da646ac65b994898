"""What the status tells a user about their run: running counts and error messages."""

from __future__ import annotations

import json
import re

from .conftest import UserProject, assert_clean_exit


def test_running_items_never_exceed_the_threads_of_the_cluster(project: UserProject) -> None:
    """Dask queues tasks ahead on each worker; those are not running yet."""
    flow = project.manifest(
        "busy",
        [{"name": "work", "map": [0.3] * 40, "call": "time:sleep", "args": ["$(item)"]}],
        cluster={"workers": 2, "threadsPerWorker": 1},
    )
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc)
    shown = [int(n) for n in re.findall(r"\[(\d+) running\]", proc.stderr)]
    assert shown, proc.stderr  # the run lasts long enough to be seen running
    assert max(shown) <= 2, proc.stderr


def test_a_map_over_a_non_list_shows_no_daskflow_frames(project: UserProject) -> None:
    flow = project.manifest(
        "notalist",
        [
            {"name": "src", "call": "builtins:str", "args": [12345]},
            {"name": "work", "map": "$(tasks.src.result)", "call": "builtins:abs", "args": [1]},
        ],
    )
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc, codes=(1,))
    message = json.loads(proc.stdout)["tasks"]["work"]["message"]
    assert message == "TypeError: map: the result of task 'src' is a str, not a list"
