"""The Python examples are the YAML examples: ``daskflow export`` of each gives its YAML
file, and the README's command runs one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DASKFLOW = Path(sys.executable).parent / "daskflow"


@pytest.mark.parametrize(
    ("ref", "manifest"),
    [
        ("etl_mapreduce:etl", "etl-mapreduce.yaml"),
        ("commands:commands", "commands.yaml"),
        ("retries_and_failure:retries_and_failure", "retries-and-failure.yaml"),
    ],
)
def test_export_of_the_python_example_is_the_yaml_example(ref: str, manifest: str) -> None:
    proc = subprocess.run(
        [str(DASKFLOW), "export", ref], cwd=EXAMPLES, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout) == yaml.safe_load((EXAMPLES / manifest).read_text())


def test_the_readme_command_runs_the_python_example(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "etl_mapreduce.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout)
    assert (loaded["files"], loaded["rows"]) == (12, 12 * 5000)
    assert "report: Succeeded" in proc.stderr
