"""The "tried as a new user" tier: a throw-away project outside daskflow.

Each test gets a fresh directory holding the user's own package of task functions
(never ``daskflow.examples``) and manifests written the way the README teaches, and
runs the *installed* ``daskflow`` command in it as a subprocess, as a user would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.processes import Supervised

SCRIPT = Path(sys.executable).parent / "daskflow"
RUN_TIMEOUT = 240  # generous: the machine may be busy; this is not a speed test


@dataclass
class UserProject:
    """A user's project directory: their modules, their manifests, their shell."""

    root: Path
    started: list[Supervised] = field(default_factory=list)

    def module(self, relpath: str, source: str) -> Path:
        """Write a Python file of the user's (``pkg/mod.py`` creates ``pkg/``)."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    def manifest(
        self, name: str, tasks: list[dict[str, Any]], *, where: str = "", **spec: Any
    ) -> Path:
        """A FlowRun manifest as the README shows it, written to ``where/name.yaml``."""
        path = self.root / where / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "apiVersion": "daskflow.io/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": name},
            "spec": {"tasks": tasks, **spec},
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def popen(self, *args: str, cwd: Path | None = None, **kw: Any) -> subprocess.Popen[str]:
        """``daskflow ARGS`` in its own process group, as a shell starts it, stdout and stderr
        piped; whatever of it still runs when the test ends is stopped."""
        proc = Supervised(
            [str(SCRIPT), *args],
            name="daskflow",
            cwd=cwd or self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )
        self.started.append(proc)
        popen: subprocess.Popen[str] = proc.popen
        return popen

    def daskflow(
        self, *args: str, cwd: Path | None = None, timeout: float = RUN_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed ``daskflow`` command in the project, as a user would."""
        return subprocess.run(
            [str(SCRIPT), *args],
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def assert_clean_exit(proc: subprocess.CompletedProcess[str], codes: Sequence[int] = (0,)) -> None:
    """The exit code is one of ``codes`` and nothing printed a traceback."""
    assert proc.returncode in codes, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert "Traceback" not in proc.stdout, proc.stdout[-4000:]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[UserProject]:
    root = tmp_path / "myproject"
    root.mkdir()
    project = UserProject(root)
    yield project
    for proc in project.started:
        proc.stop()
