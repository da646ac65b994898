"""``daskflow operator`` and ``daskflow runner``: the processes that run in the cluster.

Their flags' defaults come from :mod:`daskflow.kube.config` (the operator's) and the model;
a flag always wins over the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ..kube.config import (
    ADDRESS_ENV,
    BACKEND_ENV,
    RUNNER_MODES,
    STATUS_INTERVAL_ENV,
    OperatorConfig,
    OperatorDefaults,
)
from ..model.spec import BACKENDS
from .args import EXIT_FAILED, EXIT_INVALID, EXIT_OK

T = TypeVar("T")

EXIT_TERMINATED = 128 + signal.SIGTERM  # daskflow runner, stopped by SIGTERM
CREDENTIALS = (
    "kubeconfig to log in with (default: $KUBECONFIG; without it, in a pod, the pod's "
    "ServiceAccount, elsewhere ~/.kube/config)"
)


def _configure_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def cmd_operator(args: argparse.Namespace) -> int:
    from ..kube.api import allow_api_depth
    from ..kube.operator import run_operator

    _configure_logging(args.log_level)
    allow_api_depth()
    if not args.namespace and not args.all_namespaces:
        print(
            "daskflow operator: give --namespace NS (repeatable) or --all-namespaces",
            file=sys.stderr,
        )
        return EXIT_INVALID
    defaults = OperatorDefaults(
        image=args.image,
        backend=args.default_backend,
        runner_service_account=args.runner_service_account,
        allowed_service_accounts=tuple(args.allow_service_account),
        image_pull_policy=args.image_pull_policy,
        status_interval=args.status_interval,
    )
    config = OperatorConfig(
        runner=args.runner,
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        defaults=defaults,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        bind_address=args.bind_address,
        peering=None if args.standalone else args.peering,
        priority=args.priority,
        kubeconfig=args.kubeconfig,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_operator(config))
    return EXIT_OK


def cmd_runner(args: argparse.Namespace) -> int:

    from ..kube.api import KubeApi, allow_api_depth
    from ..kube.runner import RunnerSettings, drive_flowrun
    from ..model.states import Phase

    _configure_logging(args.log_level)
    allow_api_depth()
    # SIGTERM (the pod is being deleted, the node drained): stop at once and write nothing,
    # so the run stays as it is for the Job's next pod, which resumes it. Without a handler
    # the runner, PID 1 of its container, would ignore SIGTERM and run on next to its
    # successor until SIGKILL.
    terminated: list[bool] = []
    try:
        interval = _flag_or_env(args.status_interval, STATUS_INTERVAL_ENV, _seconds)
        settings = RunnerSettings(
            backend=_flag_or_env(args.backend, BACKEND_ENV, _backend),
            address=_flag_or_env(args.address, ADDRESS_ENV, str),
            status_interval=OperatorDefaults.status_interval if interval is None else interval,
            may_write=lambda: not terminated,
        )
    except ValueError as err:
        print(f"daskflow runner: {err}", file=sys.stderr)
        return EXIT_INVALID

    async def main() -> dict[str, Any] | None:
        async with await KubeApi.connect(args.kubeconfig) as api:
            run = asyncio.ensure_future(drive_flowrun(api, args.namespace, args.name, settings))

            def on_sigterm() -> None:
                terminated.append(True)
                run.cancel()

            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
            try:
                return await run
            except asyncio.CancelledError:
                if terminated:
                    return None
                raise

    status = asyncio.run(main())
    if terminated:
        print("daskflow runner: terminated; the run is left for the next runner", file=sys.stderr)
        return EXIT_TERMINATED
    if status is None:
        return EXIT_FAILED
    return EXIT_OK if status.get("phase") == Phase.SUCCEEDED else EXIT_FAILED


ENVIRONMENT = f"""\
environment (a flag always wins over its variable):
  KUBECONFIG                  the kubeconfig file where --kubeconfig is not given; with
                              neither: in a pod, its ServiceAccount, else ~/.kube/config
  {BACKEND_ENV}            `daskflow runner --backend`, where not given
  {ADDRESS_ENV}  `daskflow runner --address`, where not given
  {STATUS_INTERVAL_ENV}    `daskflow runner --status-interval`, where not given
The operator sets the DASKFLOW_ variables on each runner Job: the run's backend, its
DaskCluster's scheduler address, and the operator's --status-interval.
"""


def _flag_or_env(flag: T | None, name: str, parse: Callable[[str], T]) -> T | None:
    """The flag's value if given, else the environment variable's (parsed), else None."""
    if flag is not None:
        return flag
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        return parse(raw)
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise ValueError(f"{name}={raw!r}: {err}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def _backend(text: str) -> str:
    if text not in BACKENDS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(BACKENDS)}, got {text!r}")
    return text


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default at the end of its help; the epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "(default" in text:
            return text
        return f"{text} (default: %(default)s)"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``operator`` and ``runner``."""
    config, defaults = OperatorConfig(), OperatorDefaults()
    op = sub.add_parser(
        "operator",
        help="run the Kubernetes operator (kopf)",
        description="Run the daskflow operator: it watches FlowRuns and supervises each one "
        "from start to TTL.",
        epilog=ENVIRONMENT,
        formatter_class=_HelpFormatter,
    )
    op.add_argument(
        "--runner",
        choices=RUNNER_MODES,
        default=config.runner,
        help="pod: a runner Job per FlowRun; in-process: the runs execute in the operator "
        "(trusted setups only)",
    )
    op.add_argument(
        "--namespace", "-n", action="append", default=[], help="a namespace to watch (repeatable)"
    )
    op.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    op.add_argument(
        "--default-backend",
        choices=BACKENDS,
        default=defaults.backend,
        help="backend of FlowRuns whose spec names none (and no cluster.address)",
    )
    op.add_argument(
        "--image",
        default=defaults.image,
        help="default image of runner and Dask pods (spec.image wins)",
    )
    op.add_argument(
        "--image-pull-policy",
        default=defaults.image_pull_policy,
        help="imagePullPolicy of runner and Dask pods",
    )
    op.add_argument(
        "--runner-service-account",
        default=defaults.runner_service_account,
        help="account of runner pods whose FlowRun names none",
    )
    op.add_argument(
        "--allow-service-account",
        action="append",
        default=list(defaults.allowed_service_accounts),
        metavar="NAME",
        help="another account FlowRuns may name in spec.serviceAccountName ('*': any)",
    )
    op.add_argument(
        "--status-interval",
        type=_seconds,
        default=defaults.status_interval,
        help="seconds between a running FlowRun's status updates",
    )
    op.add_argument(
        "--metrics-port", type=int, default=config.metrics_port, help="Prometheus metrics port"
    )
    op.add_argument(
        "--health-port", type=int, default=config.health_port, help="/healthz and /readyz port"
    )
    op.add_argument(
        "--bind-address",
        default=config.bind_address,
        help="address of the metrics and health servers",
    )
    op.add_argument(
        "--peering",
        default=config.peering,
        help="name of the KopfPeering (ClusterKopfPeering with -A) that replicas share; "
        "created if missing and RBAC allows",
    )
    op.add_argument("--priority", type=int, help="peering priority (default: random)")
    op.add_argument(
        "--standalone", action="store_true", help="no peering object needed (one replica only)"
    )
    op.add_argument("--kubeconfig", help=CREDENTIALS)
    op.add_argument("--log-level", default="info", help="debug, info, warning or error")
    op.set_defaults(func=cmd_operator)

    rn = sub.add_parser(
        "runner",
        help="drive one FlowRun (what the runner pod runs)",
        description="Drive one FlowRun to its end and write its status: what the runner "
        "Job's pod runs.",
        epilog=ENVIRONMENT,
        formatter_class=_HelpFormatter,
    )
    rn.add_argument("--namespace", required=True, help="the FlowRun's namespace")
    rn.add_argument("--name", required=True, help="the FlowRun's name")
    rn.add_argument(
        "--backend",
        choices=BACKENDS,
        help=f"default: ${BACKEND_ENV}, else what the operator recorded in the run's status, "
        "else the spec's (local if it names none)",
    )
    rn.add_argument("--address", help=f"the scheduler (default: ${ADDRESS_ENV})")
    rn.add_argument(
        "--status-interval",
        type=_seconds,
        help=f"seconds between status updates (default: ${STATUS_INTERVAL_ENV}, "
        f"else {defaults.status_interval:g})",
    )
    rn.add_argument("--kubeconfig", help=CREDENTIALS)
    rn.add_argument("--log-level", default="info", help="debug, info, warning or error")
    rn.set_defaults(func=cmd_runner)
