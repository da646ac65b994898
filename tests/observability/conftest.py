"""Fixtures for the observability tests: the Debian ``prometheus`` and ``promtool`` binaries,
and a throwaway Prometheus server on loopback.

The binaries come from ``hack/install-test-deps.d/40-prometheus.sh``. A test that needs one
fails when it is missing, so CI can never pass without running it; tests that use these
fixtures get the ``tools`` marker, so ``make unit`` skips them instead.
"""

from __future__ import annotations

import json
import math
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.processes import Supervised, free_port
from harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART_FILES = ROOT / "charts" / "daskflow" / "files"
DASHBOARDS = CHART_FILES / "dashboards"
ALERT_RULES = CHART_FILES / "alerts" / "daskflow-rules.yaml"
OPERATOR_JOB = "daskflow-operator"  # the job label the dashboard and alerts expect

_PROGRAM_OF_FIXTURE = {
    "prometheus_bin": "prometheus",
    "promtool_bin": "promtool",
    "prometheus_server": "prometheus",
}
INSTALL_HINT = "install it with `bash hack/install-test-deps.d/40-prometheus.sh`"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        programs = {
            program
            for fixture, program in _PROGRAM_OF_FIXTURE.items()
            if fixture in getattr(item, "fixturenames", ())
        }
        if programs:
            item.add_marker(pytest.mark.tools(*sorted(programs)))


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: {INSTALL_HINT}", pytrace=False)
    return found


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _binary("prometheus")


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    return _binary("promtool")


class PrometheusServer:
    """A ``prometheus`` process with its own config and TSDB, on a free loopback port."""

    def __init__(
        self,
        binary: str,
        work_dir: Path,
        scrape_targets: dict[str, str],
        rule_files: tuple[Path, ...] = (),
    ) -> None:
        self.binary = binary
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "1s",
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in scrape_targets.items()
            ],
        }
        self.proc: Supervised | None = None
        self.log_path = work_dir / "prometheus.log"

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config))
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        proc = self.proc = Supervised(argv, self.log_path, name="prometheus", cwd=self.work_dir)

        def ready() -> bool:
            if not proc.running():
                raise AssertionError(f"prometheus exited {proc.returncode}:\n{proc.log_tail()}")
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as rsp:
                return bool(rsp.status == 200)

        wait_for(ready, 60, "prometheus to be ready", interval=0.3, ignore=(OSError,))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=20)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as rsp:
                body = json.loads(rsp.read().decode())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read().decode() or "{}")
            raise AssertionError(f"{path} {params}: HTTP {err.code}: {body}") from err
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; returns the vector (a scalar becomes a one-element vector)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "vector":
            result: list[dict[str, Any]] = data["result"]
            return result
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        raise AssertionError(f"unexpected result type {data['resultType']} for {promql}")

    def value(self, promql: str) -> float:
        """The single value of a query that must return exactly one sample."""
        result = self.query(promql)
        assert len(result) == 1, f"{promql}: expected one sample, got {result}"
        return float(result[0]["value"][1])

    def wait_for(self, promql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Until ``promql`` returns at least one sample with a finite value."""

        def samples() -> list[dict[str, Any]]:
            found = self.query(promql)
            return found if any(math.isfinite(float(x["value"][1])) for x in found) else []

        found: list[dict[str, Any]] = wait_for(samples, timeout, repr(promql), interval=0.5)
        return found


@pytest.fixture(scope="module")
def prometheus_server(
    prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A factory: ``prometheus_server({"job": "host:port"}, rule_files=(...))``; every
    server it started is stopped at the end of the module."""
    servers: list[PrometheusServer] = []
    tmp_path = tmp_path_factory.mktemp("prometheus")

    def make(targets: dict[str, str], rule_files: tuple[Path, ...] = ()) -> PrometheusServer:
        server = PrometheusServer(
            prometheus_bin, tmp_path / f"prometheus-{len(servers)}", targets, rule_files
        )
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
