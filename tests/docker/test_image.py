"""The daskflow image, built from the Dockerfile and run for real (see conftest.py).

It is the operator image, the flow runner image and the Dask scheduler/worker image of the
clusters daskflow starts, so besides the operator's own properties (non-root fixed UID, no
compilers, read-only root filesystem) it must run a real Dask cluster that the host's Dask
client, of the same ``distributed`` version, can use.
"""

from __future__ import annotations

import json
import os

import dask
import distributed
import pytest

from harness.processes import free_port
from tests.docker.conftest import UID, Containers, Image, docker

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

# No network unless a test needs one; no writable root filesystem; the image's own user.
HARDENED = ("--rm", "--network", "none", "--read-only", "--user", str(UID))


def run(image: Image, *args: str, docker_args: tuple[str, ...] = HARDENED) -> str:
    """Run the image with ``args`` (through its entrypoint) and return its stdout."""
    return docker("run", *docker_args, image.tag, *args).stdout


def test_runs_as_fixed_non_root_user(daskflow_image: Image) -> None:
    config = json.loads(
        docker("image", "inspect", "--format", "{{json .Config}}", daskflow_image.tag).stdout
    )
    assert config["User"] == f"{UID}:{UID}"
    # Without --user: the image's own user.
    out = run(
        daskflow_image,
        "sh",
        "-c",
        "id -u; id -g; id -un; echo $HOME",
        docker_args=("--rm", "--network", "none"),
    )
    assert out.split() == [str(UID), str(UID), "daskflow", "/home/daskflow"]
    # What it runs is root's: the user cannot change the installed code.
    out = run(
        daskflow_image,
        "sh",
        "-c",
        "test -w /opt/daskflow/bin || echo read-only; stat -c %u /opt/daskflow/bin/daskflow",
    )
    assert out.split() == ["read-only", "0"]


def test_no_compilers_in_final_image(daskflow_image: Image) -> None:
    names = r"(gcc|g\+\+|cc|cpp|clang)(-[0-9.]+)?"
    script = rf"""
    found=""
    for c in gcc cc c++ g++ clang tcc ld as make; do
      command -v "$c" >/dev/null 2>&1 && found="$found $c"
    done
    for d in /usr/bin /usr/local/bin /opt/daskflow/bin; do
      found="$found $(ls "$d" | grep -E '^([a-z0-9_]+-linux-gnu-)?{names}$' | tr '\n' ' ')"
    done
    pkgs=$(dpkg-query -W -f '${{Package}} ${{Status}}\n' | grep ' installed$' |
           grep -E '^({names}|binutils|build-essential|libc6-dev|python3(\.[0-9]+)?-dev) ' |
           tr '\n' ' ')
    echo "compilers:$(echo $found) packages:$(echo $pkgs)"
    """
    assert run(daskflow_image, "sh", "-c", script).strip() == "compilers: packages:"


def test_daskflow_help(daskflow_image: Image) -> None:
    # `docker run IMAGE --help` = `daskflow --help`; the name may also be given.
    assert "usage: daskflow" in run(daskflow_image, "--help")
    assert "usage: daskflow" in run(daskflow_image, "daskflow", "--help")


def test_read_only_root_filesystem_as_uid(daskflow_image: Image) -> None:
    # HARDENED is --read-only --user 10001 --network none: imports need no writes.
    out = run(
        daskflow_image,
        "python3",
        "-c",
        "import os, daskflow, daskflow.cli, distributed, kopf; print(os.getuid())",
    )
    assert out.strip() == str(UID)
    probe = "touch /opt/x 2>/dev/null || echo denied; touch /tmp/x && echo tmp-ok"
    out = run(daskflow_image, "sh", "-c", probe, docker_args=(*HARDENED, "--tmpfs", "/tmp"))
    assert out.split() == ["denied", "tmp-ok"]


def test_default_command_is_daskflow_operator(daskflow_image: Image) -> None:
    config = json.loads(
        docker("image", "inspect", "--format", "{{json .Config}}", daskflow_image.tag).stdout
    )
    assert config["Entrypoint"] == ["daskflow-entrypoint"]
    assert config["Cmd"] == ["operator"]
    # What the entrypoint runs, with a stand-in `daskflow` that echoes its arguments (the
    # `operator` subcommand itself is the CLI's business, not the image's).
    stub = (
        "mkdir -p stub && printf '#!/bin/sh\\necho daskflow \"$@\"\\n' > stub/daskflow"
        " && chmod +x stub/daskflow && export PATH=$HOME/stub:$PATH && cd / && "
    )
    cases = {
        "daskflow-entrypoint operator": "daskflow operator",
        "daskflow-entrypoint run flow.yaml": "daskflow run flow.yaml",
        "daskflow-entrypoint --version": "daskflow --version",
        "daskflow-entrypoint dask --version": f"dask, version {distributed.__version__}",
        "daskflow-entrypoint python3 -c 'print(42)'": "42",
    }
    for command, expected in cases.items():
        out = run(
            daskflow_image, "sh", "-c", stub + command, docker_args=("--rm", "--network", "none")
        )
        assert out.strip() == expected, command


def test_distributed_version_matches_host(daskflow_image: Image) -> None:
    out = run(
        daskflow_image,
        "python3",
        "-c",
        "import sys, dask, distributed;"
        " print(distributed.__version__, dask.__version__, *sys.version_info[:2])",
    )
    assert out.split() == [distributed.__version__, dask.__version__, "3", "11"]


def test_dask_commands_on_path(daskflow_image: Image) -> None:
    version = f"dask, version {distributed.__version__}"
    for command in ("dask", "dask-scheduler", "dask-worker"):
        assert run(daskflow_image, command, "--version").strip() == version, command
    assert "Launch a Dask scheduler" in run(daskflow_image, "dask", "scheduler", "--help")
    assert "Launch a Dask worker" in run(daskflow_image, "dask-worker", "--help")


# The image's Python is Debian's 3.11.2 and the host's may be another 3.11.x: Dask warns about
# any Python difference; the minor version, which matters, is asserted above.
@pytest.mark.filterwarnings("ignore:Mismatched versions found")
def test_dask_cluster_from_image_runs_host_job(
    daskflow_image: Image, containers: Containers
) -> None:
    """A scheduler and a worker, each in its own container of the image, on the host's
    loopback (host network: nothing leaves the machine), take work from the host's client."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    hardened = ("--network", "host", "--read-only", "--tmpfs", "/tmp", "--user", str(UID))
    containers.start(
        "scheduler",
        hardened,
        ["dask-scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
    )
    containers.start(
        "worker",
        hardened,
        [
            "dask",
            "worker",
            address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "2",
            "--no-dashboard",
            "--name",
            "w0",
        ],
    )
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "60s"}),
        distributed.Client(address, timeout="90s") as client,
    ):
        client.wait_for_workers(1, timeout=120)
        assert client.submit(sum, [1, 2]).result(timeout=60) == 3
        futures = client.map(lambda x: x * x, range(10))
        assert client.submit(sum, futures).result(timeout=60) == 285
        # It really ran in the container: as the image's user, not the host's root.
        assert set(client.run(os.getuid).values()) == {UID}
        workers = client.scheduler_info()["workers"].values()
        assert [w["name"] for w in workers] == ["w0"]
        # The versions that must agree for client, scheduler and workers (dask, distributed,
        # msgpack, cloudpickle, toolz, tornado, ...) do: check=True raises otherwise.
        versions = client.get_versions(check=True)
        assert versions["scheduler"]["packages"]["distributed"] == distributed.__version__
