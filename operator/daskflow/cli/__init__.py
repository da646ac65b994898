"""The ``daskflow`` command: run and validate flows locally, submit and follow them on a
Kubernetes cluster, and start the operator or runner.

Exit codes: 0 when a run Succeeded, 1 when it Failed or was Cancelled, 2 for invalid input.
"""

from __future__ import annotations

import argparse
import sys

from ..interrupt import EXIT_INTERRUPTED
from . import cluster, local, server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daskflow",
        description="Run flows of Python tasks on Dask: on this machine, or on a Kubernetes "
        "cluster through the daskflow operator.",
        epilog="Exit codes: 0 when a run Succeeded, 1 when it Failed or was Cancelled, 2 for "
        "invalid input. `daskflow COMMAND --help` tells more.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local.add_commands(sub)
    cluster.add_commands(sub)
    server.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:  # Ctrl-C before a command took over the signal
        print("daskflow: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code
