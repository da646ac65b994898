"""``daskflow operator`` and ``daskflow runner``: the processes that run in the cluster."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from .args import EXIT_FAILED, EXIT_INVALID, EXIT_OK

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
    from ..kube.builders import OperatorDefaults
    from ..kube.operator import OperatorConfig, run_operator

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
    settings = RunnerSettings(
        backend=args.backend or os.environ.get("DASKFLOW_BACKEND") or None,
        address=args.address or os.environ.get("DASKFLOW_SCHEDULER_ADDRESS") or None,
        status_interval=float(os.environ.get("DASKFLOW_STATUS_INTERVAL", args.status_interval)),
        may_write=lambda: not terminated,
    )

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


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``operator`` and ``runner``."""
    op = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    op.add_argument(
        "--runner",
        choices=("pod", "in-process"),
        default="pod",
        help="pod: a runner Job per FlowRun (default); in-process: trusted setups",
    )
    op.add_argument("--namespace", "-n", action="append", default=[])
    op.add_argument("--all-namespaces", "-A", action="store_true")
    op.add_argument(
        "--default-backend", choices=("kubernetes", "local", "address"), default="kubernetes"
    )
    op.add_argument(
        "--image",
        default="daskflow:latest",
        help="default image of runner and Dask pods (spec.image wins)",
    )
    op.add_argument("--image-pull-policy", default="IfNotPresent")
    op.add_argument("--runner-service-account", default="daskflow-runner")
    op.add_argument(
        "--allow-service-account",
        action="append",
        default=[],
        metavar="NAME",
        help="another account FlowRuns may name in spec.serviceAccountName ('*': any)",
    )
    op.add_argument("--status-interval", type=float, default=1.0)
    op.add_argument("--metrics-port", type=int, default=9090)
    op.add_argument("--health-port", type=int, default=8080)
    op.add_argument(
        "--bind-address", default="0.0.0.0", help="address of the metrics and health servers"
    )
    op.add_argument(
        "--peering",
        default="daskflow",
        help="name of the KopfPeering (ClusterKopfPeering with -A) that replicas share; "
        "created if missing and RBAC allows",
    )
    op.add_argument("--priority", type=int, help="peering priority (default: random)")
    op.add_argument(
        "--standalone", action="store_true", help="no peering object needed (one replica only)"
    )
    op.add_argument("--kubeconfig", help=CREDENTIALS)
    op.add_argument("--log-level", default="info")
    op.set_defaults(func=cmd_operator)

    rn = sub.add_parser("runner", help="drive one FlowRun (what the runner pod runs)")
    rn.add_argument("--namespace", required=True)
    rn.add_argument("--name", required=True)
    rn.add_argument("--backend", choices=("kubernetes", "local", "address"))
    rn.add_argument("--address")
    rn.add_argument("--status-interval", type=float, default=1.0)
    rn.add_argument("--kubeconfig", help=CREDENTIALS)
    rn.add_argument("--log-level", default="info")
    rn.set_defaults(func=cmd_runner)
