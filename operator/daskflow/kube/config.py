"""What ``daskflow operator`` is told, and the default of each setting.

This is the one source of the operator's defaults: its code and its command line (which
shows them in ``daskflow operator --help``) read them here. Light to import on purpose: the
command line builds its parser from it without loading the operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

POD, IN_PROCESS = "pod", "in-process"
RUNNER_MODES = (POD, IN_PROCESS)
# What the operator tells each runner Job, for ``daskflow runner`` flags not given.
BACKEND_ENV = "DASKFLOW_BACKEND"
ADDRESS_ENV = "DASKFLOW_SCHEDULER_ADDRESS"
STATUS_INTERVAL_ENV = "DASKFLOW_STATUS_INTERVAL"


@dataclass(frozen=True)
class OperatorDefaults:
    """What the operator fills in where a FlowRun's spec is silent."""

    image: str = "daskflow:latest"
    backend: str = "kubernetes"
    runner_service_account: str = "daskflow-runner"
    # Accounts a FlowRun may name in spec.serviceAccountName, besides the default one.
    # "*" allows any: then creating a FlowRun is as strong as creating a pod as any account
    # of the namespace.
    allowed_service_accounts: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    status_interval: float = 1.0
    runner_backoff_limit: int = 3
    runner_resources: dict[str, Any] = field(
        default_factory=lambda: {"requests": {"cpu": "100m", "memory": "256Mi"}}
    )


@dataclass
class OperatorConfig:
    """Everything ``daskflow operator`` is told (its flags)."""

    runner: str = POD  # or IN_PROCESS
    namespaces: list[str] = field(default_factory=list)
    all_namespaces: bool = False
    defaults: OperatorDefaults = field(default_factory=OperatorDefaults)
    metrics_port: int = 9090
    health_port: int = 8080
    bind_address: str = "0.0.0.0"
    peering: str | None = "daskflow"
    priority: int | None = None
    kubeconfig: str | None = None
