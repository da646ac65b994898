"""``daskflow submit``, ``get``, ``logs``, ``cancel`` and ``delete``: FlowRuns on a cluster, as
``daskflow run`` shows them locally. Thin commands over :mod:`daskflow.remote`.

Every failure is one line on stderr: exit code 2 for what the user can fix (no kubeconfig,
no FlowRun CRD, RBAC, a run that does not exist, an invalid manifest), 1 when the API
server cannot be reached or fails, and, as ``daskflow run``, 0/1 for a followed run that
Succeeded or not.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..interrupt import EXIT_INTERRUPTED
from ..model.validate import ManifestError
from .args import EXIT_FAILED, EXIT_INVALID, EXIT_OK, parse_set

if TYPE_CHECKING:
    from ..remote import Connection, Run

Command = Callable[[argparse.Namespace], int]


def _reports_errors(command: Command) -> Command:
    """The command, its failures told in one line with their exit code."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from ..remote import RemoteError

        try:
            return command(args)
        except ManifestError as err:
            print(err, file=sys.stderr)
            return EXIT_INVALID
        except RemoteError as err:
            print(f"daskflow {args.command}: {err}", file=sys.stderr)
            return err.exit_code

    return run


def _connect(args: argparse.Namespace, namespace: str | None = None) -> Connection:
    from ..kube.api import allow_api_depth
    from ..remote import Connection, Target

    allow_api_depth()  # a FlowRun nested as deep as the API server stores still reads
    return Connection(Target(args.namespace or namespace, args.context, args.kubeconfig))


def _load(ref: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a FILE, or of a flow written in Python (``module:flow``)."""
    from ..model.validate import load_manifest

    if Path(ref).exists() or ":" not in ref:
        doc = load_manifest(ref, overrides)
        if not isinstance(doc, dict):
            raise ManifestError(["(root): a FlowRun manifest must be a mapping"], ref)
        return doc
    from ..sdk.loading import flow_manifest
    from ..sdk.trace import FlowDefinitionError

    try:
        return flow_manifest(ref, overrides)
    except FlowDefinitionError as err:
        raise ManifestError([str(err)], "command line") from None


def _watch(conn: Connection, name: str, output: str) -> int:
    """Follow the run with ``daskflow run``'s live progress; its final status on stdout."""
    from ..model.states import Phase
    from ..progress import Progress, render_status
    from ..remote import follow

    transient = output == "table" and sys.stdout.isatty()
    try:
        with Progress(name, transient=transient) as progress:
            run = follow(conn, name, progress.update)
    except KeyboardInterrupt:
        print(
            f"daskflow: stopped watching {name}; it goes on in the cluster "
            f"(daskflow cancel {name} stops it)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    text = render_status(run.status, output, name)
    print(text, end="" if output == "table" else "\n")
    return EXIT_OK if run.phase == Phase.SUCCEEDED else EXIT_FAILED


@_reports_errors
def cmd_submit(args: argparse.Namespace) -> int:
    from ..remote import create, prepare

    manifest = prepare(
        _load(args.flow, parse_set(args.set)),
        name=args.name,
        generate_name=args.generate_name,
        source=args.flow,
    )
    with _connect(args, manifest["metadata"].get("namespace")) as conn:
        run = create(conn, manifest)
        told = f"flowrun.daskflow.io/{run.name} created in namespace {run.namespace}"
        print(told, file=sys.stderr if args.watch else sys.stdout)
        return _watch(conn, run.name, args.output) if args.watch else EXIT_OK


@_reports_errors
def cmd_get(args: argparse.Namespace) -> int:
    from ..progress import render_status
    from ..remote import Run, get, list_runs

    with _connect(args) as conn:
        if args.name and args.watch:
            return _watch(conn, args.name, args.output)
        if args.name:
            run = Run.of(get(conn, args.name))
            text = render_status(run.status, args.output, run.name)
            print(text, end="" if args.output == "table" else "\n")
            return EXIT_OK
        rows = [_row(obj) for obj in list_runs(conn)]
        if args.output != "table":
            print(_dump(rows, args.output))
        elif rows or not args.watch:
            print(_table(rows) if rows else f"No FlowRuns in namespace {conn.namespace}.")
        if args.watch:
            return _watch_list(conn, rows)
        return EXIT_OK


def _watch_list(conn: Connection, shown: list[dict[str, str]]) -> int:
    """A line for each run that appears or changes phase or progress, as ``kubectl -w``."""
    from ..remote import list_runs

    last = {row["name"]: (row["phase"], row["tasks"]) for row in shown}
    try:
        while True:
            time.sleep(1.0)
            for obj in list_runs(conn):
                row = _row(obj)
                if last.get(row["name"]) != (row["phase"], row["tasks"]):
                    last[row["name"]] = (row["phase"], row["tasks"])
                    print(_table([row], header=False), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK


def _row(obj: dict[str, Any]) -> dict[str, str]:
    from ..model.status import format_duration
    from ..remote import Run

    run = Run.of(obj)
    status = run.status
    total = len(((obj.get("spec") or {}).get("tasks")) or [])
    done = sum(1 for t in (status.get("tasks") or {}).values() if t.get("state") == "Succeeded")
    start = status.get("startTime")
    duration = status.get("duration") or (format_duration(start, None) if start else "")
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    return {
        "name": run.name,
        "phase": run.phase,
        "tasks": f"{done}/{total}",
        "duration": duration,
        "age": format_duration(created, None) if created else "",
    }


def _table(rows: list[dict[str, str]], header: bool = True) -> str:
    columns = ("name", "phase", "tasks", "duration", "age")
    lines = [[c.upper() for c in columns]] if header else []
    lines += [[row[c] for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in lines) + 3 for i in range(len(columns))]
    if not header:  # one row below an earlier table: keep its columns roughly aligned
        widths = [max(w, 12) for w in widths]
    return "\n".join(
        "".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _dump(value: Any, output: str) -> str:
    if output == "json":
        return json.dumps(value, indent=2)
    return yaml.safe_dump(value, sort_keys=False).rstrip("\n")


@_reports_errors
def cmd_cancel(args: argparse.Namespace) -> int:
    from ..remote import cancel

    with _connect(args) as conn:
        run: Run = cancel(conn, args.name)
    note = f" (already {run.phase}: nothing to stop)" if run.finished else ""
    print(f"flowrun.daskflow.io/{run.name} cancel requested{note}")
    return EXIT_OK


@_reports_errors
def cmd_delete(args: argparse.Namespace) -> int:
    from ..remote import delete

    with _connect(args) as conn:
        delete(conn, args.name)
    print(f"flowrun.daskflow.io/{args.name} deleted")
    return EXIT_OK


@_reports_errors
def cmd_logs(args: argparse.Namespace) -> int:
    from ..remote import RemoteError
    from ..remote.logs import NoLogs, pods, read_all, task_filter

    show = task_filter(args.task)
    with _connect(args) as conn:
        found = pods(conn, args.name)
        if not found:
            raise RemoteError(
                f'FlowRun "{args.name}" has no pods in namespace "{conn.namespace}": they are '
                "deleted when the run ends, and an operator run with --runner in-process runs "
                "flows inside its own pod",
                EXIT_FAILED,
            )
        read, unreadable = set(), set()
        try:
            for pod, line in read_all(conn, found, follow=args.follow):
                if isinstance(line, NoLogs):
                    print(f"daskflow logs: {line}", file=sys.stderr, flush=True)
                    unreadable.add(pod)
                elif isinstance(line, RemoteError):
                    raise line
                else:
                    read.add(pod)
                    if show(line):
                        print(f"[{pod}] {line}", flush=args.follow)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    return EXIT_FAILED if len(unreadable - read) == len(found) else EXIT_OK


def _cluster_options() -> argparse.ArgumentParser:
    """The options every cluster command takes: where the FlowRuns are."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("cluster (found as kubectl finds it)")
    group.add_argument(
        "-n",
        "--namespace",
        help="namespace of the FlowRuns (default: the context's, else default)",
    )
    group.add_argument("--context", help="kubeconfig context (default: the current one)")
    group.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)",
    )
    return options


def _output(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--output",
        "-o",
        choices=("table", "json", "yaml"),
        default="table",
        help=f"format of {what} on stdout (default: table)",
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``submit``, ``get``, ``logs``, ``cancel`` and ``delete``."""
    common = [_cluster_options()]
    submit = sub.add_parser(
        "submit",
        parents=common,
        help="create a FlowRun on the cluster (--watch: follow it as daskflow run does)",
        description="Create a FlowRun on the cluster, after checking it as daskflow validate "
        "does. With --watch, show its progress on stderr as daskflow run does, and its final "
        "status on stdout. Exit codes: 0 created (with --watch: Succeeded), 1 Failed or "
        "Cancelled or the API server unreachable, 2 invalid input or refused by the cluster.",
    )
    submit.add_argument(
        "flow",
        metavar="FILE|MODULE:FLOW",
        help="the FlowRun manifest (YAML or JSON), or a flow written in Python, myflow:etl",
    )
    submit.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a parameter (the value is parsed as YAML)",
    )
    naming = submit.add_mutually_exclusive_group()
    naming.add_argument("--name", help="the FlowRun's name (default: the manifest's)")
    naming.add_argument(
        "--generate-name",
        metavar="PREFIX",
        help="let the API server name it PREFIX plus a random suffix",
    )
    submit.add_argument("--watch", "-w", action="store_true", help="follow the run to its end")
    _output(submit, "the final status (with --watch)")
    submit.set_defaults(func=cmd_submit)

    get = sub.add_parser(
        "get",
        parents=common,
        help="show a FlowRun's tasks, or list the FlowRuns of the namespace",
        description="With NAME: the run's tasks, as daskflow run shows them (-o json: its "
        "status, as daskflow run -o json prints it); --watch follows it to its end, exit "
        "code 0 if it Succeeded, 1 if not. Without NAME: the FlowRuns of the namespace "
        "(name, phase, tasks succeeded/total, duration, age); --watch adds a line per change.",
    )
    get.add_argument("name", nargs="?", metavar="NAME", help="a FlowRun (default: all)")
    _output(get, "the run's status or the list")
    get.add_argument("--watch", "-w", action="store_true", help="follow changes (Ctrl-C stops)")
    get.set_defaults(func=cmd_get)

    logs = sub.add_parser(
        "logs",
        parents=common,
        help="show the logs of a FlowRun's runner and Dask pods (--task: one task's output)",
        description="Show the logs of a FlowRun's pods (runner, Dask scheduler, workers), each "
        "line prefixed with [pod/NAME]. What a Python task prints or logs is in the log of the "
        "pod that ran it, labelled [TASK] or [TASK ITEM]; --task shows only those lines. Pods "
        "are deleted when the run ends, and their logs with them. Exit codes: 0 logs shown, "
        "1 none could be read (no pods, none started), 2 invalid input or refused.",
    )
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("--task", "-t", metavar="TASK", help="only what this task printed or logged")
    logs.add_argument(
        "--follow", "-f", action="store_true", help="stream the logs until the pods end"
    )
    logs.set_defaults(func=cmd_logs)

    cancel = sub.add_parser(
        "cancel",
        parents=common,
        help="cancel a FlowRun (sets spec.cancel)",
        description="Set spec.cancel on a FlowRun: the operator stops its running tasks and "
        "the run ends Cancelled within seconds.",
    )
    cancel.add_argument("name", metavar="NAME")
    cancel.set_defaults(func=cmd_cancel)

    delete = sub.add_parser(
        "delete",
        parents=common,
        help="delete a FlowRun (stops it first if running)",
        description="Delete a FlowRun; the operator stops the run and removes its Dask "
        "cluster and runner first.",
    )
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(func=cmd_delete)
