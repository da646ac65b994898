"""Pure builders of the Kubernetes objects a FlowRun owns: names, labels, the DaskCluster,
its autoscaler, and the runner Job. No I/O here: each builder is tested directly.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ..engine import workerprocess
from ..model.spec import API_GROUP, API_VERSION, KIND, FlowRun
from .config import ADDRESS_ENV, BACKEND_ENV, STATUS_INTERVAL_ENV, OperatorDefaults

LABEL_FLOWRUN = "daskflow.io/flowrun"
LABEL_UID = "daskflow.io/flowrun-uid"
LABEL_COMPONENT = "daskflow.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "daskflow"
WORKER_PRELOAD = workerprocess.__name__  # the set-up of every Dask worker process
DASK_GROUP, DASK_VERSION = "kubernetes.dask.org", "v1"
CHILD_NAME_MAX = 53  # DaskCluster names become Service names with suffixes
RUNNER_UID = 10001


def child_name(name: str, uid: str, limit: int = CHILD_NAME_MAX) -> str:
    """A deterministic DNS-1035 name for a FlowRun's children: ``<name>-<uid hash>``."""
    digest = hashlib.sha256(uid.encode()).hexdigest()[:8]
    base = re.sub(r"[^a-z0-9-]", "-", name.lower())
    if not base or not base[0].isalpha():
        base = "fr-" + base
    base = base[: limit - len(digest) - 1].rstrip("-")
    return f"{base}-{digest}"


def flowrun_labels(flow: FlowRun, component: str) -> dict[str, str]:
    return {
        LABEL_FLOWRUN: flow.name[:63].rstrip("-_."),
        LABEL_UID: flow.metadata.uid or "",
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def owner_reference(flow: FlowRun) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": flow.name,
        "uid": flow.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(flow: FlowRun, name: str, labels: dict[str, str]) -> dict[str, Any]:
    """Metadata of a FlowRun's child: in its namespace, labelled, owned by it."""
    return {
        "name": name,
        "namespace": flow.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(flow)],
    }


def is_owned_by(obj: dict[str, Any], uid: str) -> bool:
    """Whether an existing object is the child of the FlowRun with this uid (adopt it, or
    delete it with the run) or a stranger's (leave it alone)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


def restricted_security_context() -> dict[str, Any]:
    """Container security context of the Pod Security Standards "restricted" profile."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNNER_UID,
        "runAsGroup": RUNNER_UID,
        "fsGroup": RUNNER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def service_account_problem(flow: FlowRun, defaults: OperatorDefaults) -> str | None:
    """Why the runner may not use the account the FlowRun names, or None if it may."""
    wanted = flow.spec.service_account_name
    allowed = defaults.allowed_service_accounts
    if wanted is None or wanted == defaults.runner_service_account or "*" in allowed:
        return None
    if wanted in allowed:
        return None
    return (
        f"spec.serviceAccountName {wanted!r} is not allowed: the operator allows "
        f"{defaults.runner_service_account!r}"
        + (f" and {', '.join(repr(a) for a in allowed)}" if allowed else "")
        + " (operator flag --allow-service-account)"
    )


def scheduler_address(cluster_name: str, namespace: str) -> str:
    """The in-cluster address of a DaskCluster's scheduler Service."""
    return f"tcp://{cluster_name}-scheduler.{namespace}.svc:8786"


def _env_list(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _dask_container(
    name: str, image: str, command: list[str], flow: FlowRun, defaults: OperatorDefaults
) -> dict[str, Any]:
    resources = flow.spec.cluster.resources
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": command,
        "env": _env_list(dict(flow.spec.cluster.env)),
        "securityContext": restricted_security_context(),
    }
    if resources is not None:
        container["resources"] = resources.model_dump(exclude_defaults=True)
    return container


def build_dask_cluster_spec(
    flow: FlowRun, defaults: OperatorDefaults, name: str | None = None
) -> dict[str, Any]:
    """The DaskCluster (dask-kubernetes) that runs this FlowRun's tasks."""
    name = name or child_name(flow.name, flow.metadata.uid or flow.name)
    image = flow.spec.image or defaults.image
    cluster = flow.spec.cluster
    workers = cluster.adaptive.minimum if cluster.adaptive else cluster.workers
    scheduler = _dask_container(
        "scheduler", image, ["dask", "scheduler", "--host", "0.0.0.0"], flow, defaults
    )
    scheduler["ports"] = [
        {"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
        {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"},
    ]
    scheduler["readinessProbe"] = {
        "httpGet": {"port": "http-dashboard", "path": "/health"},
        "periodSeconds": 2,
    }
    scheduler["livenessProbe"] = {
        "httpGet": {"port": "http-dashboard", "path": "/health"},
        "initialDelaySeconds": 15,
        "periodSeconds": 20,
    }
    worker = _dask_container(
        "worker",
        image,
        [
            "dask",
            "worker",
            "--name",
            "$(DASK_WORKER_NAME)",
            "--preload",  # labels what tasks print and log with their names, as local workers
            WORKER_PRELOAD,
            "--nthreads",
            str(cluster.threads_per_worker),
            "--dashboard-address",
            "8788",
        ],
        flow,
        defaults,
    )
    worker["ports"] = [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}]
    pod_security = restricted_pod_security_context()
    labels = flowrun_labels(flow, "dask")
    return {
        "apiVersion": f"{DASK_GROUP}/{DASK_VERSION}",
        "kind": "DaskCluster",
        "metadata": child_metadata(flow, name, labels),
        "spec": {
            "idleTimeout": 0,
            "worker": {
                "replicas": workers,
                "spec": {
                    "securityContext": pod_security,
                    "automountServiceAccountToken": False,
                    "containers": [worker],
                },
            },
            "scheduler": {
                "spec": {
                    "securityContext": pod_security,
                    "automountServiceAccountToken": False,
                    "containers": [scheduler],
                },
                "service": {
                    "type": "ClusterIP",
                    "selector": {
                        "dask.org/cluster-name": name,
                        "dask.org/component": "scheduler",
                    },
                    "ports": [
                        {
                            "name": "tcp-comm",
                            "protocol": "TCP",
                            "port": 8786,
                            "targetPort": "tcp-comm",
                        },
                        {
                            "name": "http-dashboard",
                            "protocol": "TCP",
                            "port": 8787,
                            "targetPort": "http-dashboard",
                        },
                    ],
                },
            },
        },
    }


def build_dask_autoscaler_spec(flow: FlowRun, cluster_name: str) -> dict[str, Any] | None:
    adaptive = flow.spec.cluster.adaptive
    if adaptive is None:
        return None
    return {
        "apiVersion": f"{DASK_GROUP}/{DASK_VERSION}",
        "kind": "DaskAutoscaler",
        "metadata": child_metadata(flow, cluster_name, flowrun_labels(flow, "dask")),
        "spec": {"cluster": cluster_name, "minimum": adaptive.minimum, "maximum": adaptive.maximum},
    }


def build_runner_job(flow: FlowRun, defaults: OperatorDefaults, backend: str) -> dict[str, Any]:
    """The Job whose pod runs ``daskflow runner`` for this FlowRun, as the user's account."""
    name = child_name(flow.name, flow.metadata.uid or flow.name)
    image = flow.spec.image or defaults.image
    labels = flowrun_labels(flow, "runner")
    env = [
        {"name": BACKEND_ENV, "value": backend},
        {"name": STATUS_INTERVAL_ENV, "value": f"{defaults.status_interval:g}"},
    ]
    if backend == "kubernetes":
        env.append({"name": ADDRESS_ENV, "value": scheduler_address(name, flow.namespace)})
    container = {
        "name": "runner",
        "image": image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": ["daskflow", "runner", "--namespace", flow.namespace, "--name", flow.name],
        "env": env,
        "resources": defaults.runner_resources,
        "securityContext": {**restricted_security_context(), "readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(flow, name, labels),
        "spec": {
            "backoffLimit": defaults.runner_backoff_limit,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": flow.spec.service_account_name
                    or defaults.runner_service_account,
                    "restartPolicy": "Never",
                    "securityContext": restricted_pod_security_context(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
