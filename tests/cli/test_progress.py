"""Rendering of status for people (table, progress lines) and for machines (JSON, YAML)."""

from __future__ import annotations

import io
import json
from pathlib import Path
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


def test_task_output_is_shown_a_whole_line_at_a_time(tmp_path: Path) -> None:
    output = tmp_path / "task-output"
    stream = io.StringIO()
    progress = Progress("t", stream=stream, task_output=output)
    progress.show_task_output()  # no worker wrote anything yet
    output.write_bytes(b"[a] one\n[b 2] tw")
    progress.show_task_output()
    assert stream.getvalue() == "[a] one\n"
    with output.open("ab") as f:
        f.write(b"o\n[c] [not markup] \xff\n[d] no newline")
    progress.show_task_output()
    assert stream.getvalue() == "[a] one\n[b 2] two\n[c] [not markup] \ufffd\n"
    progress.show_task_output(final=True)
    assert stream.getvalue().endswith("[d] no newline\n")
