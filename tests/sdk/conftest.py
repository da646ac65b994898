"""The SDK's tests reuse the new-user tier's throw-away project (a directory outside
daskflow with the user's own modules), and run the user's Python as a user would."""

from __future__ import annotations

import subprocess
import sys

from tests.newuser.conftest import RUN_TIMEOUT, UserProject, project

__all__ = ["project", "python"]


def python(
    project: UserProject, *args: str, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the project, with the Python that has daskflow installed."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
