"""FlowRuns on real pods: the runner Job's pod drives a DaskCluster's scheduler and worker
pods that the chart's dask-kubernetes controller made from the project's image.

Each test is also checked against the Argo CD health script (Progressing while it runs,
Healthy at the end), on the FlowRun objects it polled from the API server.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.scenario import Scenario

from harness.helm import ROOT
from harness.realcluster import Install

EXAMPLES = ROOT / "examples"
KUBERNETES = {"backend": "kubernetes"}


def test_commands_example_on_real_pods(flows: Scenario) -> None:
    run = flows.given.flowrun(EXAMPLES / "commands.yaml", cluster=KUBERNETES)
    run.when.applied().finished()
    run.then.phase_is("Succeeded").tasks_are(
        {
            "list-names": "Succeeded",
            "greet": "Succeeded",
            "stats": "Succeeded",
            "summary": "Succeeded",
            "reverse": "Succeeded",
            "publish": "Skipped",
            "notify": "Skipped",
        }
    )
    # Real work on the workers: sh, sort, rev and a Python call from the image.
    assert run.result_of("list-names") == "gamma\ndelta\nbeta"
    assert run.result_of("reverse") == ["level", "desserts", "reward"]
    assert run.result_of("greet").startswith(f"HELLO FROM {run.name.upper()} ON ")
    assert run.seen_running == {"runner": 1, "scheduler": 1, "worker": 2}, run.seen_running
    run.events_include("Pending", "Running", "Succeeded")
    run.nothing_left().argocd_health_was("Progressing", "Healthy")


# The gate connects to the scheduler from a worker pod, through the Service name the
# controller gives workers, and waits for both workers: then the map spreads over both.
WAIT_FOR_TWO_WORKERS = (
    "import os; from distributed import Client; "
    "c = Client(os.environ['DASK_SCHEDULER_ADDRESS'], timeout=60); "
    "c.wait_for_workers(2, timeout=120); print(len(c.scheduler_info()['workers']))"
)
CHECK_ITEMS = (
    "import json, os; r = json.loads(os.environ['R']); "
    "print(json.dumps({'n': len(r), 'in_order': [int(x.split()[0]) for x in r] == "
    "[i * i for i in range(len(r))], 'hosts': sorted({x.split()[1] for x in r})}))"
)


def map_flow(items: int) -> dict[str, Any]:
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": "map"},
        "spec": {
            "parameters": {"items": list(range(items))},
            "cluster": {"backend": "kubernetes", "workers": 2},
            "deadlineSeconds": 600,
            "tasks": [
                {"name": "gate", "command": ["python3", "-c", WAIT_FOR_TWO_WORKERS]},
                {
                    "name": "square",
                    "map": "$(params.items)",
                    "dependsOn": ["gate"],
                    "command": ["sh", "-c", "echo $(( $(item) * $(item) )) $HOSTNAME"],
                },
                {
                    "name": "check",
                    "command": ["python3", "-c", CHECK_ITEMS],
                    "env": {"R": "$(tasks.square.result)"},
                },
            ],
        },
    }


def test_map_of_200_items_over_two_worker_pods(flows: Scenario) -> None:
    run = flows.given.flowrun(map_flow(200))
    run.when.applied().finished()
    run.then.phase_is("Succeeded")
    assert run.result_of("gate") == "2"
    square = run.status["tasks"]["square"]
    assert square["items"]["total"] == 200 and square["items"]["succeeded"] == 200, square
    check = json.loads(run.result_of("check"))
    assert check["n"] == 200 and check["in_order"], check
    # Every item ran in one of the two worker pods, and both took a share.
    assert set(check["hosts"]) == run.pod_names["worker"], (check, run.pod_names)
    # The runner reached the scheduler by its Service name.
    assert run.runner_env["DASKFLOW_SCHEDULER_ADDRESS"] == (
        f"tcp://{run.child}-scheduler.{run.namespace}.svc:8786"
    )
    run.nothing_left().argocd_health_was("Progressing", "Healthy")


def test_adaptive_workers_appear_for_the_work(flows: Scenario) -> None:
    flow = {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": "adaptive"},
        "spec": {
            "cluster": {"backend": "kubernetes", "adaptive": {"minimum": 0, "maximum": 2}},
            "deadlineSeconds": 600,
            "tasks": [
                {"name": "work", "map": list(range(6)), "command": ["sleep", "2"]},
                {"name": "after", "command": ["echo", "done"], "dependsOn": ["work"]},
            ],
        },
    }
    run = flows.given.flowrun(flow)
    run.when.applied()
    assert run.k.get("daskautoscaler", run.namespace, run.child) is not None
    cluster = run.k.get("daskcluster", run.namespace, run.child)
    assert cluster is not None and cluster["spec"]["worker"]["replicas"] == 0
    run.finished()
    run.then.phase_is("Succeeded").tasks_are({"work": "Succeeded", "after": "Succeeded"})
    assert 1 <= run.peak["worker"] <= 2, run.peak
    run.nothing_left().argocd_health_was("Progressing", "Healthy")


# -- metrics -------------------------------------------------------------------------------
def scrape(install: Install) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The operator's metrics, through the API server's proxy to its metrics Service."""
    text = install.kubectl.run(
        "get",
        "--raw",
        f"/api/v1/namespaces/{install.system_namespace}/services/"
        f"{install.release}-metrics:metrics/proxy/metrics",
    )
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_operator_metrics_move_with_the_run(flows: Scenario, installed: Install) -> None:
    ns = {"namespace": installed.namespace}
    before = scrape(installed)
    done = metric(before, "daskflow_task_runs_total", state="Succeeded", **ns)
    won = metric(before, "daskflow_flowruns_total", phase="Succeeded", **ns)
    run = flows.given.flowrun(
        {
            "apiVersion": "daskflow.io/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "metrics"},
            "spec": {
                "cluster": KUBERNETES,
                "deadlineSeconds": 600,
                "tasks": [
                    {"name": "first", "command": ["echo", "one"]},
                    {"name": "hold", "command": ["sleep", "15"], "dependsOn": ["first"]},
                ],
            },
        }
    )
    run.when.applied().task_reached("hold", "Running")

    def moved_with_the_run() -> dict[Any, float] | None:
        now = scrape(installed)
        running = metric(now, "daskflow_flowruns_running", **ns) >= 1
        return (
            now
            if running
            and metric(now, "daskflow_task_runs_total", state="Succeeded", **ns) == done + 1
            else None
        )

    run.eventually(moved_with_the_run, "the running gauge at 1 and one task counted")
    assert run.status["phase"] == "Running"  # those figures were scraped during the run
    run.finished().then.phase_is("Succeeded")

    def settled() -> dict[Any, float] | None:
        now = scrape(installed)
        return now if metric(now, "daskflow_flowruns_running", **ns) == 0 else None

    after = run.eventually(settled, "the running gauge back at 0")
    assert metric(after, "daskflow_flowruns_total", phase="Succeeded", **ns) == won + 1
    assert metric(after, "daskflow_task_runs_total", state="Succeeded", **ns) == done + 2
    run.nothing_left()
