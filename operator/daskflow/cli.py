"""The ``daskflow`` command: run and validate flows locally, and start the operator or runner.

Exit codes: 0 when a run Succeeded, 1 when it Failed or was Cancelled, 2 for invalid input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from .model.validate import ManifestError, load_flowrun

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _parse_set(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ManifestError([f"--set {pair!r}: expected NAME=VALUE"], "command line")
        try:
            out[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    code = EXIT_OK
    for path in args.files:
        try:
            flow = load_flowrun(path)
        except ManifestError as err:
            print(err, file=sys.stderr)
            code = EXIT_INVALID
        else:
            print(f"{path}: valid FlowRun {flow.name!r} with {len(flow.spec.tasks)} tasks")
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from .engine.flow import FlowEngine
    from .engine.local import dask_client
    from .model.states import Phase
    from .progress import Progress, render_status

    try:
        flow = load_flowrun(args.file, _parse_set(args.set))
    except ManifestError as err:
        print(err, file=sys.stderr)
        return EXIT_INVALID
    workers = args.workers if args.workers is not None else max(flow.spec.cluster.workers, 1)
    threads = args.threads_per_worker or flow.spec.cluster.threads_per_worker
    address = args.address or flow.spec.cluster.address

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        with Progress(flow.name) as progress:
            async with dask_client(
                address=address,
                workers=workers,
                threads_per_worker=threads,
                import_paths=[Path.cwd(), Path(args.file).resolve().parent],
                env=dict(flow.spec.cluster.env),
            ) as client:
                engine = FlowEngine(flow, client, on_status=progress.update,
                                    status_interval=args.interval)
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, engine.cancel, f"cancelled by {sig.name}")
                try:
                    return await engine.run()
                finally:
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.remove_signal_handler(sig)

    try:
        status = asyncio.run(main())
    except OSError as err:
        print(f"daskflow: cannot reach the Dask cluster: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(render_status(status, args.output, flow.name), end="" if args.output == "table" else "\n")
    return EXIT_OK if status["phase"] == Phase.SUCCEEDED else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daskflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a FlowRun manifest on an embedded local Dask cluster")
    run.add_argument("file")
    run.add_argument("--workers", type=int, help="local workers (default: spec.cluster.workers)")
    run.add_argument("--threads-per-worker", type=int)
    run.add_argument("--address", help="run on an existing scheduler, tcp://HOST:PORT")
    run.add_argument("--output", "-o", choices=("table", "json", "yaml"), default="table")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="override a parameter (the value is parsed as YAML)")
    run.add_argument("--interval", type=float, default=0.25, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check manifests without running them")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
