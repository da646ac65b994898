"""``daskflow run``, ``validate`` and ``crd``: flows on this machine, no cluster needed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..model.spec import SCHEDULER_ADDRESS
from ..model.validate import ManifestError, load_flowrun
from .args import EXIT_FAILED, EXIT_INVALID, EXIT_OK, at_least_one, parse_set

if TYPE_CHECKING:
    from ..model.spec import FlowRun


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


def _never_started(flow: FlowRun, message: str) -> dict[str, Any]:
    """The status of a run cancelled before its engine started: every task Cancelled."""
    from ..model.states import Phase, TaskState
    from ..model.status import StatusBook

    book = StatusBook([t.name for t in flow.spec.tasks])
    for name in book.tasks:
        book.mark_task(name, TaskState.CANCELLED, message=message)
    book.mark_phase(Phase.CANCELLED, message, "Cancelled")
    return book.to_dict()


def cmd_run(args: argparse.Namespace) -> int:
    # Ctrl-C (or SIGTERM) cancels the run cleanly, at any moment: the engine stops what is
    # running and marks tasks Cancelled; a cluster still starting is stopped. A second
    # signal, or a run not ended a few seconds later, exits at once with the status known
    # so far (see daskflow.interrupt).
    from ..interrupt import Interrupts, stop_worker_processes

    interrupts = Interrupts()
    interrupts.install()

    try:
        _check_address(args.address)
        flow = load_flowrun(args.file, parse_set(args.set))
    except ManifestError as err:
        print(err, file=sys.stderr)
        return EXIT_INVALID

    from ..engine.deaths import slot_dir
    from ..engine.flow import FlowEngine  # imports distributed: only for a valid flow
    from ..engine.local import dask_client, user_import_paths
    from ..model.states import Phase
    from ..model.status import end_run
    from ..progress import Progress, render_status

    # Dask's own logs would bury the progress; LocalCluster restores this level on close.
    logging.getLogger("distributed").setLevel(logging.CRITICAL)

    workers = args.workers if args.workers is not None else max(flow.spec.cluster.workers, 1)
    threads = args.threads_per_worker or flow.spec.cluster.threads_per_worker
    address = args.address or flow.spec.cluster.address
    memory_limit = _local_settings(flow, address, workers, threads)

    engines: list[FlowEngine] = []

    def final(status: dict[str, Any]) -> tuple[str, int]:
        """The status as printed on stdout, and the exit code that goes with it."""
        text = render_status(status, args.output, flow.name)
        code = EXIT_OK if status["phase"] == Phase.SUCCEEDED else EXIT_FAILED
        return (text if args.output == "table" else text + "\n"), code

    def known_status() -> tuple[str, int]:
        """What an exit at once prints: the status so far, unfinished tasks Cancelled."""
        reason = f"cancelled by {interrupts.first}"
        status = engines[0].status() if engines else _never_started(flow, reason)
        names = [t.name for t in flow.spec.tasks]
        return final(end_run(status, Phase.CANCELLED, "Cancelled", reason, names))

    interrupts.on_exit(known_status)
    # On a terminal that shows the final table too, the live table goes away at the end.
    transient = args.output == "table" and sys.stdout.isatty()

    async def run_flow() -> dict[str, Any]:
        with (
            tempfile.TemporaryDirectory(prefix="daskflow-") as tmp,
            Progress(
                flow.name, task_output=Path(tmp, "task-output"), transient=transient
            ) as progress,
        ):
            # The local nannies live in this process: their death reports' directory too.
            interrupts.temporary += [tmp, slot_dir(os.getpid())]
            relay = asyncio.create_task(progress.relay_task_output())
            try:
                async with dask_client(
                    address=address,
                    workers=workers,
                    threads_per_worker=threads,
                    import_paths=user_import_paths(args.file),
                    env=dict(flow.spec.cluster.env),
                    memory_limit=memory_limit,
                    task_output=progress.task_output,
                ) as client:
                    engine = FlowEngine(
                        flow, client, on_status=progress.update, status_interval=args.interval
                    )
                    engines.append(engine)
                    status = await engine.run()
                    progress.close()
                    # Out before the cluster closes, which may take a while.
                    interrupts.deliver(*final(status))
                    return status
            finally:
                relay.cancel()

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        run = asyncio.create_task(run_flow())
        stopped = asyncio.create_task(stop.wait())
        interrupts.on_first(lambda _sig: loop.call_soon_threadsafe(stop.set))
        try:
            await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                return run.result()
            reason = f"cancelled by {interrupts.first}"
            if engines:  # the engine cancels its tasks and ends the run Cancelled
                engines[0].cancel(reason)
                return await run
            run.cancel()  # the cluster is still starting: stop that
            with contextlib.suppress(asyncio.CancelledError):
                await run
            return _never_started(flow, reason)
        finally:
            interrupts.on_first(None)
            stopped.cancel()

    if interrupts.first:  # before the cluster even started: nothing ran
        status = _never_started(flow, f"cancelled by {interrupts.first}")
    else:
        try:
            status = asyncio.run(main())
        except (OSError, TimeoutError) as err:
            print(f"daskflow: cannot use the Dask cluster: {err}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            if interrupts.first:  # workers whose start was cut short
                stop_worker_processes()
    text, code = final(status)
    interrupts.deliver(text, code)
    return code


def _local_settings(flow: FlowRun, address: str | None, workers: int, threads: int) -> int | None:
    """The memory limit of each local worker; warns on stderr about settings that a local
    cluster cannot apply, and about more threads than this machine can run."""

    from ..engine.local import local_resources

    memory_limit, ignored = local_resources(flow.spec.cluster.resources)
    if address and memory_limit is not None:  # the workers exist already
        ignored, memory_limit = ["limits.memory", *ignored], None
    if ignored:
        names = ", ".join(f"cluster.resources.{k}" for k in ignored)
        why = (
            "the workers of --address exist already"
            if address
            else "local workers take only limits.memory; the rest applies on Kubernetes"
        )
        print(f"daskflow: warning: not applied: {names} ({why})", file=sys.stderr)
    cpus = os.cpu_count() or 1
    if not address and workers * threads > 4 * cpus:
        print(
            f"daskflow: warning: {workers} workers x {threads} threads is far more than the "
            f"{cpus} CPUs of this machine; the cluster starts slowly and runs no faster",
            file=sys.stderr,
        )
    return memory_limit


def cmd_crd(args: argparse.Namespace) -> int:
    from ..model.crd import flowrun_crd

    print(yaml.safe_dump(flowrun_crd(), sort_keys=False), end="")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``run``, ``validate`` and ``crd``."""
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

    crd = sub.add_parser("crd", help="print the FlowRun CustomResourceDefinition")
    crd.set_defaults(func=cmd_crd)
