"""``daskflow operator`` and ``daskflow runner`` flags, as the installed command reads them:
defaults from one place, shown in ``--help``; a flag wins over its environment variable;
a bad environment variable is a one-line error with exit code 2."""

from __future__ import annotations

import os
import subprocess

import pytest

from daskflow.kube.config import OperatorConfig, OperatorDefaults
from tests.cli.test_cli import DASKFLOW, no_traceback


def daskflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # No reachable API server: a runner that gets past its flags fails on the kubeconfig.
    environ = {**os.environ, "KUBECONFIG": os.devnull, **env}
    environ.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [*DASKFLOW, *args], capture_output=True, text=True, env=environ, timeout=120
    )


def test_operator_help_shows_the_defaults_and_the_environment() -> None:
    out = " ".join(daskflow("operator", "--help").stdout.split())
    defaults, config = OperatorDefaults(), OperatorConfig()
    for flag, value in [
        ("--runner", config.runner),
        ("--default-backend", defaults.backend),
        ("--image", defaults.image),
        ("--image-pull-policy", defaults.image_pull_policy),
        ("--runner-service-account", defaults.runner_service_account),
        ("--status-interval", defaults.status_interval),
        ("--metrics-port", config.metrics_port),
        ("--health-port", config.health_port),
        ("--peering", config.peering),
    ]:
        after = out[out.index(f" {flag} ") :]
        assert f"(default: {value})" in after[: after.index(" --", 3)], flag
    assert "a flag always wins over its variable" in out
    for name in ("KUBECONFIG", "DASKFLOW_BACKEND", "DASKFLOW_SCHEDULER_ADDRESS"):
        assert name in out
    assert "DASKFLOW_STATUS_INTERVAL `daskflow runner --status-interval`, where not given" in out


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("DASKFLOW_STATUS_INTERVAL", "soon", "expected a number of seconds, got 'soon'"),
        ("DASKFLOW_STATUS_INTERVAL", "-1", "must be more than 0 seconds, got '-1'"),
        ("DASKFLOW_BACKEND", "cloud", "expected one of local, kubernetes, address, got 'cloud'"),
    ],
)
def test_runner_names_a_bad_environment_variable(variable: str, value: str, words: str) -> None:
    proc = daskflow("runner", "--namespace", "ns", "--name", "run", **{variable: value})
    assert proc.returncode == 2, proc.stderr
    no_traceback(proc)
    assert proc.stderr.strip() == f"daskflow runner: {variable}={value!r}: {words}"


def test_runner_flags_win_over_the_environment() -> None:
    """Given both, the flag is used and the variable not even read (it used to be the other
    way round for the status interval)."""
    proc = daskflow(
        "runner",
        "--namespace",
        "ns",
        "--name",
        "run",
        "--status-interval",
        "0.5",
        "--backend",
        "local",
        DASKFLOW_STATUS_INTERVAL="soon",
        DASKFLOW_BACKEND="cloud",
    )
    assert "DASKFLOW_" not in proc.stderr, proc.stderr
    assert proc.returncode != 0  # it went on, to the kubeconfig that is not there
