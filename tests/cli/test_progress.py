"""Rendering of status for people (table, progress lines) and for machines (JSON, YAML)."""

from __future__ import annotations

import io
import json
from typing import Any

import yaml

from daskflow.progress import Progress, render_status

STATUS: dict[str, Any] = {
    "phase": "Failed",
    "message": "1 of 3 tasks failed: b",
    "tasks": {
        "a": {"state": "Succeeded", "attempts": 1, "result": {"rows": [1, 2]}},
        "b": {
            "state": "Failed",
            "attempts": 3,
            "message": "ValueError: [/oops] is not [bold]markup[/bold]\n  File ...",
        },
        "m": {
            "state": "Running",
            "attempts": 1,
            "items": {"total": 10, "succeeded": 4, "failed": 1, "running": 2, "pending": 3},
        },
    },
}


def test_json_and_yaml_are_the_status_object() -> None:
    assert json.loads(render_status(STATUS, "json", "t")) == STATUS
    assert yaml.safe_load(render_status(STATUS, "yaml", "t")) == STATUS


def test_table_shows_states_items_results_and_messages_verbatim() -> None:
    text = render_status(STATUS, "table", "flow")
    assert "flow: Failed" in text
    assert '{"rows":[1,2]}' in text
    assert "ValueError: [/oops] is not [bold]markup[/bold]" in text  # not taken as markup
    assert "File ..." not in text  # first line of a message only
    assert "4/10 (1 failed) [2 running]" in text
    assert "1 of 3 tasks failed: b" in text


def test_progress_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with Progress("flow", stream=out) as progress:
        progress.update({"phase": "Running", "tasks": {"a": {"state": "Running"}}})
        progress.update({"phase": "Running", "tasks": {"a": {"state": "Running"}}})
        progress.update({"phase": "Succeeded", "tasks": {"a": {"state": "Succeeded"}}})
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "a: Running",
        "run: Running",
        "a: Succeeded",
        "run: Succeeded",
    ]
