"""The Grafana dashboard and the alert rules against real data.

A real operator (in-process runner, local backend) runs real FlowRuns on the test control
plane: two succeed (one after a retry), one fails after its retries. A real Prometheus
(Debian's binary, on loopback) scrapes the operator every second with
job="daskflow-operator" and loads the chart's alert rules. Then every query of every
panel of the chart's dashboard is executed through Prometheus's HTTP API, with the
dashboard's variables substituted as Grafana would, and must return data.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from daskflow.kube.metrics import FlowRunMetrics
from harness.controlplane import KubeCluster
from harness.kube import (
    ROOT,
    OperatorProcess,
    apply,
    get_flowrun,
    install_crds,
    operator_running,
    wait_for_phase,
)
from harness.waiting import wait_for
from tests.observability.conftest import ALERT_RULES, DASHBOARDS, OPERATOR_JOB, PrometheusServer

pytestmark = pytest.mark.timeout(900)

DASHBOARD = DASHBOARDS / "daskflow.json"
# Labels a daskflow series may carry: its own bounded ones, plus what Prometheus adds.
ALLOWED_LABELS = {"namespace", "phase", "state", "backend", "reason", "le", "job", "instance"}
REQUIRED_PANELS = {  # the list -> the dashboard's panel titles
    "runs by phase": "Runs by phase",
    "run durations": "Run duration",
    "task throughput": "Task throughput",
    "task failures and retries": "Task failures and retries",
    "cluster startup time": "Cluster startup time",
    "active runs and workers": "Active runs and requested workers",
    "operator health": "Operator up",
}


# -- the dashboard -------------------------------------------------------------------------
def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])  # panels of collapsed rows
    return out


def panel_queries() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of every panel."""
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in panels(load_dashboard())
        for target in panel.get("targets") or []
    ]


def render(expr: str, namespace: str, *, rate_interval: str = "15s", range_: str = "1h") -> str:
    """Substitute the dashboard's variables the way Grafana does."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": "5s",
        "__range": range_,
        "namespace": namespace,
        "job": OPERATOR_JOB,
    }

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"unknown variable ${name} in {expr}")
        return values[name]

    rendered = re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)
    assert "$" not in rendered, rendered
    return rendered


# -- the runs --------------------------------------------------------------------------------
def flowrun(name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"cluster": {"workers": 1}, "deadlineSeconds": 600, "tasks": tasks},
    }


def flaky_flow(name: str, workdir: Path, *, failures: int, retries: int) -> dict[str, Any]:
    """prepare -> flaky (fails ``failures`` times) -> publish; plus an independent task."""
    return flowrun(
        name,
        [
            {
                "name": "prepare",
                "call": "daskflow.examples.resilience:fresh_dir",
                "args": [str(workdir)],
            },
            {
                "name": "fetch",
                "call": "daskflow.examples.resilience:flaky",
                "kwargs": {
                    "marker_dir": "$(tasks.prepare.result)",
                    "name": "fetch",
                    "failures": failures,
                },
                "retries": retries,
                "retryDelaySeconds": 0.1,
            },
            {
                "name": "publish",
                "call": "daskflow.examples.resilience:identity",
                "args": ["$(tasks.fetch.result)"],
            },
            {"name": "side", "command": ["sh", "-c", "echo independent"]},
        ],
    )


def etl_flow(workdir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "etl-mapreduce.yaml").read_text())
    doc["metadata"]["name"] = "etl-ok"
    doc["spec"]["parameters"].update(files=3, rows=200, workdir=str(workdir))
    doc["spec"]["cluster"] = {"workers": 1}
    return doc


WARMUP = flowrun("warmup", [{"name": "hello", "command": ["sh", "-c", "echo hello"]}])


@dataclass
class Observed:
    kube: KubeCluster
    namespace: str
    operator: OperatorProcess
    prometheus: PrometheusServer
    before: str  # the operator's /metrics before the runs
    after: str  # ... and once every run had finished and been scraped
    at: float  # a time at which Prometheus has scraped the final values
    started: float
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> final object
    warmup: dict[str, Any] = field(default_factory=dict)


def _create_namespace(kube: KubeCluster) -> str:
    name = f"t-observability-{secrets.token_hex(3)}"
    with kube.api_client() as api:
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name


def _delete_namespace(kube: KubeCluster, name: str) -> None:
    with kube.api_client() as api:
        try:
            k8s.CoreV1Api(api).delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="module")
def observed(kube: KubeCluster, prometheus_server: Any) -> Iterator[Observed]:
    install_crds(kube)
    namespace = _create_namespace(kube)
    workdir = kube.work_dir / namespace
    try:
        with operator_running(kube, namespace) as op:
            prom: PrometheusServer = prometheus_server(
                {OPERATOR_JOB: f"127.0.0.1:{op.metrics_port}"}, rule_files=(ALERT_RULES,)
            )
            prom.wait_for(f'up{{job="{OPERATOR_JOB}"}} == 1')
            prom.wait_for(f'daskflow_flowruns_running{{namespace="{namespace}"}}')
            started = time.time()
            # A first run creates the histograms' series (the operator creates them only at
            # their first observation, which rate() and increase() then never see), as on
            # an operator that has been running for a while. See
            # test_first_observation_of_a_histogram_is_visible.
            apply(kube, WARMUP, namespace)
            warmup = wait_for_phase(kube, namespace, WARMUP["metadata"]["name"], timeout=300)
            prom.wait_for(
                f'daskflow_flowrun_duration_seconds_count{{namespace="{namespace}"}} >= 1'
            )
            time.sleep(2)
            before = op.metrics()
            docs = [
                etl_flow(workdir),
                flaky_flow("retry-ok", workdir, failures=1, retries=2),
                flaky_flow("retry-fails", workdir, failures=10, retries=2),
            ]
            for doc in docs:
                apply(kube, doc, namespace)
            runs = {
                doc["metadata"]["name"]: wait_for_phase(
                    kube, namespace, doc["metadata"]["name"], timeout=300
                )
                for doc in docs
            }
            # Prometheus has scraped the end of every run once it sees all three.
            prom.wait_for(f'sum(daskflow_flowruns_total{{namespace="{namespace}"}}) >= {len(docs)}')
            prom.wait_for(f'daskflow_flowruns_running{{namespace="{namespace}"}} == 0')
            time.sleep(2)  # a couple more scrapes, so rates over short windows see the end
            at = time.time()
            after = op.metrics()
            yield Observed(kube, namespace, op, prom, before, after, at, started, runs, warmup)
    finally:
        _delete_namespace(kube, namespace)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples(text).items() if n == name and want <= lbls)


# -- static checks of the dashboard --------------------------------------------------------
def test_dashboard_is_well_formed() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "daskflow"
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "namespace"):
        assert variables[name]["query"] == variables[name]["definition"]
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ns = variables["namespace"]
    assert ns["type"] == "query"
    assert ns["includeAll"] is True
    assert ns["allValue"] == ".*"
    assert ns["definition"].startswith("label_values(daskflow_flowruns_running")
    assert ns["definition"].endswith(", namespace)")
    every = panels(dashboard)
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = {p["title"] for p in every}
    missing = {k: v for k, v in REQUIRED_PANELS.items() if v not in titles}
    assert not missing, f"missing panels: {missing}"
    occupied: set[tuple[int, int]] = set()
    for panel in every:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("description"), panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()
    # the namespace filter is applied wherever the metric has a namespace label
    for title, _, expr in panel_queries():
        if re.search(r"daskflow_(flowrun|task|cluster_workers)", expr):
            assert 'namespace=~"$namespace"' in expr, (title, expr)


def test_dashboard_uses_only_metrics_the_operator_exports() -> None:
    registry = CollectorRegistry()
    FlowRunMetrics(registry)
    exported = {m.name for m in registry.collect()}  # without _total/_bucket/... suffixes
    for title, _, expr in panel_queries():
        for name in re.findall(r"\b(daskflow_\w+)\b", expr):
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert base in exported, f"{title}: {name} is not exported by the operator"


# -- every panel against real data ---------------------------------------------------------
@pytest.mark.parametrize(
    ("title", "ref", "expr"), panel_queries(), ids=[f"{t}:{r}" for t, r, _ in panel_queries()]
)
def test_panel_query_returns_data(observed: Observed, title: str, ref: str, expr: str) -> None:
    prom = observed.prometheus
    # Grafana's usual windows, for the test's namespace and for "All"
    for namespace in (observed.namespace, ".*"):
        query = render(expr, namespace)
        result = prom.query(query, at=observed.at)
        assert result, f"panel {title!r} ({ref}) returned no data: {query}"
    # A window that covers the runs: some value is a real number, not only NaN.
    query = render(expr, observed.namespace, rate_interval="5m", range_="1h")
    result = prom.query(query, at=observed.at)
    values = [float(s["value"][1]) for s in result]
    assert any(math.isfinite(v) for v in values), f"{title} ({ref}): {query} -> {result}"


def test_variable_queries_return_the_operator_and_namespace(observed: Observed) -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    found: dict[str, set[str]] = {}
    for name in ("job", "namespace"):
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variables[name]["definition"])
        assert match, variables[name]["definition"]
        selector = render(match.group(1), ".*")
        series = observed.prometheus.api(
            "series",
            **{
                "match[]": selector,
                "start": f"{observed.started - 600:.0f}",
                "end": f"{observed.at:.0f}",
            },
        )
        found[name] = {s[match.group(2)] for s in series if match.group(2) in s}
    assert OPERATOR_JOB in found["job"]
    assert observed.namespace in found["namespace"]


# -- the metrics move ------------------------------------------------------------------------
def test_metrics_move_during_real_runs(observed: Observed) -> None:
    before, after, ns = observed.before, observed.after, observed.namespace
    phases = Counter(run["status"]["phase"] for run in observed.runs.values())
    assert phases == {"Succeeded": 2, "Failed": 1}, {
        name: run["status"].get("phase") for name, run in observed.runs.items()
    }

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for phase in ("Succeeded", "Failed", "Cancelled"):
        assert moved("daskflow_flowruns_total", namespace=ns, phase=phase) == phases[phase]
        assert (
            moved("daskflow_flowrun_duration_seconds_count", namespace=ns, phase=phase)
            == phases[phase]
        )
    # the task counters agree with the tasks' final states in status
    tasks = [rec for run in observed.runs.values() for rec in run["status"]["tasks"].values()]
    states = Counter(rec["state"] for rec in tasks)
    assert states["Failed"] >= 1
    assert states["UpstreamFailed"] >= 1
    for state, count in states.items():
        assert moved("daskflow_task_runs_total", namespace=ns, state=state) == count, state
    retries = sum(int(rec.get("retries", 0)) for rec in tasks)
    assert retries >= 3  # one in retry-ok, two in retry-fails
    assert moved("daskflow_task_retries_total", namespace=ns) == retries
    timed = sum(
        1
        for rec in tasks
        if rec["state"] in ("Succeeded", "Failed")
        and rec.get("startTime")
        and rec.get("completionTime")
    )
    assert moved("daskflow_task_duration_seconds_count", namespace=ns) == timed
    assert moved("daskflow_cluster_startup_seconds_count", backend="local") == len(observed.runs)
    assert moved("daskflow_status_patches_total") >= len(observed.runs)
    assert value(after, "daskflow_reconcile_errors_total") == 0
    # the gauges went up while the runs ran, and are back to zero
    prom = observed.prometheus
    window = f"{int(observed.at - observed.started) + 5}s"
    for gauge in ("daskflow_flowruns_running", "daskflow_cluster_workers"):
        peak = prom.value(f'max_over_time({gauge}{{namespace="{ns}"}}[{window}])')
        assert peak >= 1, gauge
        assert value(after, gauge, namespace=ns) == 0, gauge
    assert value(after, "daskflow_flowruns_overdue", namespace=ns) == 0
    # and Prometheus saw the counters increase as well
    seen = prom.query(
        f'increase(daskflow_flowruns_total{{namespace="{ns}"}}[{window}])', at=observed.at
    )
    assert sum(float(s["value"][1]) for s in seen) > 0


def test_no_flowrun_name_or_uid_in_any_label(observed: Observed) -> None:
    everything = [*observed.runs.values(), observed.warmup]
    names = {run["metadata"]["name"] for run in everything}
    uids = {run["metadata"]["uid"] for run in everything}
    forbidden = names | uids

    def check(metric: str, labels: dict[str, str]) -> None:
        if metric.startswith("python_"):  # interpreter and GC collectors: fixed label sets
            return
        extra = set(labels) - ALLOWED_LABELS - {"__name__"}
        assert not extra, f"{metric} has unexpected labels {extra}"
        for key, val in labels.items():
            for bad in forbidden:
                assert bad not in val, f"{metric}{{{key}={val!r}}} carries a FlowRun's {bad!r}"

    # what the operator exports ...
    for family in text_string_to_metric_families(observed.after):
        for s in family.samples:
            check(s.name, s.labels)
    # ... and every daskflow series Prometheus stored during the runs
    series = observed.prometheus.api(
        "series",
        **{
            "match[]": '{__name__=~"daskflow_.*"}',
            "start": f"{observed.started - 60:.0f}",
            "end": f"{observed.at:.0f}",
        },
    )
    assert series
    for labels in series:
        check(labels["__name__"], labels)


# -- the alert rules against the same data -------------------------------------------------
def test_alert_rules_evaluate_cleanly_on_real_data(observed: Observed) -> None:
    prom = observed.prometheus
    groups = prom.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["name"] for r in rules} == {
        "DaskflowOperatorDown",
        "DaskflowFlowRunFailureRateHigh",
        "DaskflowFlowRunOverdue",
        "DaskflowReconcileErrors",
    }
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert not rule.get("lastError"), rule
    # every metric an alert selects is scraped under the documented job label
    for rule in rules:
        for name in set(re.findall(r"\b(daskflow_\w+|up)\{", rule["query"])):
            found = prom.query(f'{name}{{job="{OPERATOR_JOB}"}}', at=observed.at)
            assert found, f"{rule['name']}: no {name} series with job={OPERATOR_JOB}"
    # a healthy operator: neither down nor erroring, nothing overdue
    active = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]}
    assert not active & {
        "DaskflowOperatorDown",
        "DaskflowReconcileErrors",
        "DaskflowFlowRunOverdue",
    }, active


def test_first_observation_of_a_histogram_is_visible(observed: Observed) -> None:
    # The only Failed run of the namespace: the counter (created at zero) shows it...
    ns, prom = observed.namespace, observed.prometheus
    window = f"{int(observed.at - observed.started) + 5}s"
    failed = f'namespace="{ns}", phase="Failed"'
    runs = prom.value(f"increase(daskflow_flowruns_total{{{failed}}}[{window}])")
    assert runs > 0
    # ... and so should the histogram of the same runs' durations.
    timed = prom.value(f"increase(daskflow_flowrun_duration_seconds_count{{{failed}}}[{window}])")
    assert timed > 0


def test_overdue_gauge_counts_a_silent_run_past_its_deadline(kube: KubeCluster) -> None:
    """Pod mode, and a runner that reported Running once and then went silent (no kubelet
    runs the runner Job here, so the test writes that status itself)."""
    install_crds(kube)
    namespace = _create_namespace(kube)
    try:
        with operator_running(kube, namespace, runner="pod") as op:
            doc = flowrun("silent", [{"name": "t", "command": ["true"]}])
            doc["spec"]["deadlineSeconds"] = 2
            apply(kube, doc, namespace)
            wait_for(
                lambda: (get_flowrun(kube, namespace, "silent") or {}).get("status"),
                30,
                "the operator's first status",
            )
            started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            status = {"status": {"phase": "Running", "startTime": started}}
            kube.kubectl(
                "patch",
                "flowrun",
                "silent",
                "-n",
                namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps(status),
                check=True,
            )

            # The operator ends the run DEADLINE_GRACE (10 s) after its deadline; until then
            # it is Running and past its deadline, and the gauge should say so.
            def overdue() -> bool:
                return value(op.metrics(), "daskflow_flowruns_overdue", namespace=namespace) >= 1

            wait_for(overdue, 9, "daskflow_flowruns_overdue to count the run", interval=0.5)
    finally:
        _delete_namespace(kube, namespace)
