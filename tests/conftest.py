"""What every test topic shares: the control-plane fixtures, and the ``tools`` marker.

``@pytest.mark.tools("promtool")`` says that a test needs that program on PATH
(``hack/install-test-deps.sh`` installs them all). Without it the test fails, so CI
(``make test``) cannot pass without running it; ``make unit`` passes
``--skip-missing-tools``, which skips it instead and says which program is missing.
"""

from __future__ import annotations

import shutil

import pytest

pytest_plugins = ["tests.kube.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--skip-missing-tools",
        action="store_true",
        help="skip, instead of fail, a test marked tools(...) whose program is not on PATH",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not item.config.getoption("skip_missing_tools"):
        return
    missing = [
        name
        for mark in item.iter_markers("tools")
        for name in mark.args
        if shutil.which(name) is None
    ]
    if missing:
        pytest.skip(f"{', '.join(missing)} not on PATH (hack/install-test-deps.sh installs it)")
