"""Fixtures for the image tests: a Docker engine, and the daskflow image built from the
Dockerfile on the debootstrap base image, offline.

``daskflow_image`` (session) starts dockerd (hack/start-dockerd.sh), builds
``daskflow-base:py3.11`` (hack/build-base-image.sh, cached under ~/.cache/daskflow) and
then the daskflow image (hack/build-image.sh, ``--build-arg BASE_IMAGE=daskflow-base:py3.11``,
``--network=none``). The daskflow image and its builder stage are removed at the end of the
session (``DASKFLOW_TEST_KEEP_IMAGE=1`` keeps them, for quick reruns); the base image stays,
as the cache it is. ``containers`` starts containers for one test and removes them after it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.hack import BASE_IMAGE, docker_engine_running, run_hack

UID = 10001
# Every image derived from the base image carries this label (set by `docker import`); it
# tells the dangling builder-stage images of our builds apart from anyone else's.
BASE_LABEL = "io.daskflow.base.recipe"

_timings: dict[str, float] = {}


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; on failure the message carries its output."""
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return proc


@dataclass
class Image:
    tag: str
    logs: Path
    build_seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Docker engine that answers, for the session (harness.hack.docker_engine_running)."""
    with docker_engine_running(tmp_path_factory.mktemp("docker") / "start-dockerd.log") as took:
        _timings["dockerd"] = took
        yield


@pytest.fixture(scope="session")
def daskflow_image(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Image]:
    """The daskflow image, built from the Dockerfile for this session."""
    logs = tmp_path_factory.mktemp("image")
    image = Image(tag=f"daskflow:pytest-{secrets.token_hex(4)}", logs=logs)
    image.build_seconds["base"] = run_hack("build-base-image.sh", logs / "base.log", 1200)
    try:
        image.build_seconds["image"] = run_hack(
            "build-image.sh",
            logs / "image.log",
            1200,
            env={"IMAGE": image.tag, "BASE_IMAGE": BASE_IMAGE},
        )
        _timings.update({f"build {k}": v for k, v in image.build_seconds.items()})
        size = docker("image", "inspect", "--format", "{{.Size}}", image.tag).stdout
        _timings["image size"] = int(size) / 1e6
        yield image
    finally:
        if os.environ.get("DASKFLOW_TEST_KEEP_IMAGE") != "1":
            docker("rmi", "--force", image.tag, check=False)
            # The builder stage of the classic builder stays behind as an untagged image.
            docker("image", "prune", "--force", "--filter", f"label={BASE_LABEL}", check=False)


class Containers:
    """Containers of one test, named uniquely, all removed afterwards."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.names: list[str] = []

    def start(self, role: str, docker_args: Sequence[str], args: Sequence[str]) -> str:
        name = f"daskflow-test-{role}-{secrets.token_hex(3)}"
        self.names.append(name)
        docker("run", "--detach", "--name", name, *docker_args, self.image.tag, *args)
        return name

    def logs(self, name: str) -> str:
        proc = docker("logs", "--tail", "60", name, check=False)
        return proc.stdout + proc.stderr

    def remove_all(self) -> None:
        for name in self.names:
            docker("rm", "--force", "--volumes", name, check=False)


@pytest.fixture
def containers(daskflow_image: Image) -> Iterator[Containers]:
    c = Containers(daskflow_image)
    try:
        yield c
    finally:
        for name in c.names:  # shown by pytest when the test failed
            print(f"--- docker logs {name}\n{c.logs(name)}")
        c.remove_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _timings:
        return
    parts = ", ".join(
        f"{k} {v:.0f} MB" if k == "image size" else f"{k} {v:.1f}s" for k, v in _timings.items()
    )
    terminalreporter.write_line(f"docker: {parts}")
