"""``daskflow run``, ``validate``, ``export`` and ``crd``: flows on this machine, no cluster
needed."""

from __future__ import annotations

import argparse
import json
import re
import sys

import yaml

from ..model.spec import SCHEDULER_ADDRESS
from ..model.validate import ManifestError, load_flowrun
from .args import EXIT_FAILED, EXIT_INVALID, EXIT_OK, at_least_one, parse_set


def _check_address(address: str | None) -> None:
    if address is not None and not re.fullmatch(SCHEDULER_ADDRESS, address):
        raise ManifestError(
            [f"--address {address!r}: expected a scheduler address such as tcp://HOST:PORT"],
            "command line",
        )


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
    # Ctrl-C (or SIGTERM) cancels the run cleanly, at any moment, the manifest's loading
    # included: see daskflow.interrupt and daskflow.sdk.local, the run path that
    # Flow.run() shares.
    from ..interrupt import Interrupts

    interrupts = Interrupts()
    interrupts.install()

    try:
        _check_address(args.address)
        flow = load_flowrun(args.file, parse_set(args.set))
    except ManifestError as err:
        print(err, file=sys.stderr)
        return EXIT_INVALID

    from ..engine.local import user_import_paths
    from ..sdk.local import exit_code, run_flowrun

    try:
        status, _ = run_flowrun(
            flow,
            import_paths=user_import_paths(args.file),
            workers=args.workers,
            threads=args.threads_per_worker,
            address=args.address,
            output=args.output,
            interval=args.interval,
            interrupts=interrupts,
        )
    except (OSError, TimeoutError) as err:
        print(f"daskflow: cannot use the Dask cluster: {err}", file=sys.stderr)
        return EXIT_FAILED
    return exit_code(status)


def cmd_export(args: argparse.Namespace) -> int:
    from ..sdk.loading import flow_manifest
    from ..sdk.trace import FlowDefinitionError

    try:
        doc = flow_manifest(args.flow, parse_set(args.set))
    except (FlowDefinitionError, ManifestError) as err:
        print(f"daskflow export: {err}", file=sys.stderr)
        return EXIT_INVALID
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    return EXIT_OK


def cmd_crd(args: argparse.Namespace) -> int:
    from ..model.crd import flowrun_crd

    print(yaml.safe_dump(flowrun_crd(), sort_keys=False), end="")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``run``, ``validate``, ``export`` and ``crd``."""
    run = sub.add_parser(
        "run",
        help="run a FlowRun manifest on an embedded local Dask cluster",
        description="Run a FlowRun manifest on an embedded local Dask cluster: progress and "
        "what tasks print on stderr, the final status on stdout. Ctrl-C cancels the run, a "
        "second one exits at once. Exit codes: 0 Succeeded, 1 Failed or Cancelled, 2 invalid "
        "input.",
    )
    run.add_argument("file", help="the FlowRun manifest (YAML or JSON)")
    run.add_argument(
        "--workers", type=at_least_one, help="local workers (default: spec.cluster.workers)"
    )
    run.add_argument(
        "--threads-per-worker",
        type=at_least_one,
        help="threads of each local worker (default: spec.cluster.threadsPerWorker)",
    )
    run.add_argument("--address", help="run on an existing scheduler, tcp://HOST:PORT")
    run.add_argument(
        "--output",
        "-o",
        choices=("table", "json", "yaml"),
        default="table",
        help="format of the final status on stdout (default: table)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a parameter (the value is parsed as YAML)",
    )
    run.add_argument("--interval", type=float, default=0.25, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check manifests without running them")
    validate.add_argument("files", nargs="+", metavar="file", help="FlowRun manifests")
    validate.set_defaults(func=cmd_validate)

    export = sub.add_parser(
        "export",
        help="print the FlowRun of a flow written in Python (module:flow)",
        description="Print the FlowRun manifest of a flow written with the Python SDK, for "
        "kubectl apply, git or daskflow run: daskflow export myflow:etl > etl.yaml. The module "
        "is imported from the current directory (or its src/). Exit codes: 0, or 2 when the "
        "flow cannot be found or is invalid.",
    )
    export.add_argument("flow", metavar="module:flow", help="where the flow is, such as myflow:etl")
    export.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter's value in spec.parameters (parsed as YAML)",
    )
    export.add_argument(
        "--output", "-o", choices=("yaml", "json"), default="yaml", help="format (default: yaml)"
    )
    export.set_defaults(func=cmd_export)

    crd = sub.add_parser("crd", help="print the FlowRun CustomResourceDefinition")
    crd.set_defaults(func=cmd_crd)
