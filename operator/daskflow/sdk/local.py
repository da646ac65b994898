"""The one way a flow runs on this machine: ``daskflow run`` and ``Flow.run()`` both call
:func:`run_flowrun`.

It starts a fresh LocalCluster (or uses an address), runs the FlowRun on it with the
engine, shows progress and what the tasks print on stderr, and ends it cleanly on Ctrl-C
or SIGTERM (see :mod:`daskflow.interrupt`): the first signal cancels the run, a second one,
or a run not ended a few seconds later, exits at once with the status known so far.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..interrupt import Interrupts, stop_worker_processes
from ..model.runstate import end_run
from ..model.spec import FlowRun
from ..model.states import Phase


def exit_code(status: dict[str, Any]) -> int:
    """``daskflow run``'s exit code for a final status: 0 Succeeded, 1 otherwise."""
    return 0 if status["phase"] == Phase.SUCCEEDED else 1


def never_started(flow: FlowRun, message: str) -> dict[str, Any]:
    """The status of a run cancelled before its engine started: every task Cancelled."""
    return end_run({}, Phase.CANCELLED, "Cancelled", message, [t.name for t in flow.spec.tasks])


def run_flowrun(
    flow: FlowRun,
    *,
    import_paths: Sequence[str | Path],
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    output: str | None = None,
    interval: float = 0.25,
    keep_results: bool = False,
    interrupts: Interrupts | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``flow`` to its end and return its final status and, with ``keep_results``,
    the full value of every task that succeeded.

    ``workers``, ``threads`` and ``address`` override the manifest's cluster settings.
    With ``output`` (table, json or yaml), the final status is printed on stdout as soon
    as the run ends, before the cluster closes. ``interrupts`` are the command's signal
    handling, installed before the manifest was read; without it, handling is installed
    for the run's duration if this is the main thread, and a signal that cancelled the
    run is raised again afterwards (KeyboardInterrupt for Ctrl-C). Called where an event
    loop runs (a notebook), the run gets a thread of its own. Raises OSError or
    TimeoutError when the Dask cluster cannot be used.
    """
    if _loop_running():  # a notebook's event loop: asyncio.run cannot run inside it
        with concurrent.futures.ThreadPoolExecutor(1, "daskflow-run") as pool:
            return pool.submit(
                run_flowrun,
                flow,
                import_paths=import_paths,
                workers=workers,
                threads=threads,
                address=address,
                output=output,
                interval=interval,
                keep_results=keep_results,
                interrupts=interrupts,
            ).result()
    own = interrupts is None
    handler = interrupts or Interrupts()
    if own and threading.current_thread() is threading.main_thread():
        handler.install()
    try:
        status, results = _run(
            flow, handler, import_paths, workers, threads, address, output, interval, keep_results
        )
    finally:
        if own:
            handler.uninstall()
    if own and handler.first:  # cancelled by a signal: now act on it as the caller would
        signal.raise_signal(signal.Signals[handler.first])
    return status, results


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run(
    flow: FlowRun,
    interrupts: Interrupts,
    import_paths: Sequence[str | Path],
    workers: int | None,
    threads: int | None,
    address: str | None,
    output: str | None,
    interval: float,
    keep_results: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..engine.deaths import slot_dir
    from ..engine.flow import FlowEngine  # imports distributed: only for a valid flow
    from ..engine.local import dask_client
    from ..progress import Progress, render_status

    # Dask's own logs would bury the progress; LocalCluster restores this level on close.
    logging.getLogger("distributed").setLevel(logging.CRITICAL)

    workers = workers if workers is not None else max(flow.spec.cluster.workers, 1)
    threads = threads or flow.spec.cluster.threads_per_worker
    address = address or flow.spec.cluster.address
    memory_limit = _local_settings(flow, address, workers, threads)
    engines: list[FlowEngine] = []
    results: dict[str, Any] = {}
    paths = [Path(p).resolve() for p in import_paths]

    def final(status: dict[str, Any]) -> tuple[str, int]:
        """The status as printed on stdout, and the exit code that goes with it."""
        text = render_status(status, output or "table", flow.name)
        return (text if output in ("table", None) else text + "\n"), exit_code(status)

    def known_status() -> tuple[str, int]:
        """What an exit at once prints: the status so far, unfinished tasks Cancelled."""
        reason = f"cancelled by {interrupts.first}"
        status = engines[0].status() if engines else never_started(flow, reason)
        names = [t.name for t in flow.spec.tasks]
        return final(end_run(status, Phase.CANCELLED, "Cancelled", reason, names))

    interrupts.on_exit(known_status)
    # On a terminal that shows the final table too, the live table goes away at the end.
    transient = output == "table" and sys.stdout.isatty()

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
                    import_paths=paths,
                    env=dict(flow.spec.cluster.env),
                    memory_limit=memory_limit,
                    task_output=progress.task_output,
                ) as client:
                    engine = FlowEngine(
                        flow,
                        client,
                        on_status=progress.update,
                        status_interval=interval,
                        keep_results=keep_results,
                    )
                    engines.append(engine)
                    status = await engine.run()
                    progress.close()
                    if output is not None:  # out before the cluster closes (it may take long)
                        interrupts.deliver(*final(status))
                    if keep_results:
                        results.update(engine.results())
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
            return never_started(flow, reason)
        finally:
            interrupts.on_first(None)
            stopped.cancel()

    if interrupts.first:  # before the cluster even started: nothing ran
        status = never_started(flow, f"cancelled by {interrupts.first}")
    else:
        try:
            status = asyncio.run(main())
        finally:
            if interrupts.first:  # workers whose start was cut short
                stop_worker_processes()
    if output is not None:
        interrupts.deliver(*final(status))
    return status, results


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
