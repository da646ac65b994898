"""Pure builders and bookkeeping of the Kubernetes layer, tested without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from daskflow.kube.builders import (
    build_dask_autoscaler_spec,
    build_dask_cluster_spec,
    build_runner_job,
    child_name,
    is_owned_by,
    service_account_problem,
)
from daskflow.kube.config import OperatorDefaults
from daskflow.kube.metrics import FlowRunMetrics
from daskflow.kube.runner import RunnerSettings, resolve_target
from daskflow.kube.status import merge_diff, succeeded_condition
from daskflow.model.validate import parse_flowrun

UID = "0f4e2a8c-1111-2222-3333-444455556666"


def flow(**spec: Any) -> Any:
    return parse_flowrun(
        {
            "apiVersion": "daskflow.io/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "etl-nightly", "namespace": "data", "uid": UID},
            "spec": {"tasks": [{"name": "a", "command": ["true"]}], **spec},
        }
    )


@given(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,251}[a-z0-9])?", fullmatch=True), st.uuids())
def test_child_names_are_deterministic_short_dns_labels(name: str, uid: Any) -> None:
    a, b = child_name(name, str(uid)), child_name(name, str(uid))
    assert a == b
    assert len(a) <= 53
    assert a[0].isalpha() and a[-1].isalnum()
    assert all(c.isalnum() or c == "-" for c in a)


def test_distinct_uids_give_distinct_names() -> None:
    assert child_name("x" * 80, UID) != child_name("x" * 80, UID.replace("0f", "1f"))


def test_dask_cluster_spec_is_owned_labelled_and_restricted() -> None:
    f = flow(
        image="flows:1",
        cluster={
            "workers": 3,
            "threadsPerWorker": 2,
            "env": {"A": "1"},
            "resources": {"limits": {"cpu": "2"}},
        },
    )
    spec = build_dask_cluster_spec(f, OperatorDefaults())
    meta = spec["metadata"]
    assert meta["name"] == child_name("etl-nightly", UID)
    assert meta["ownerReferences"][0]["uid"] == UID
    assert meta["labels"]["daskflow.io/flowrun"] == "etl-nightly"
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 3
    container = worker["spec"]["containers"][0]
    assert container["image"] == "flows:1"
    assert container["command"][:2] == ["dask", "worker"]
    assert container["command"][container["command"].index("--nthreads") + 1] == "2"
    assert container["env"] == [{"name": "A", "value": "1"}]
    assert container["resources"] == {"limits": {"cpu": "2"}}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert worker["spec"]["securityContext"]["runAsNonRoot"] is True
    service = spec["spec"]["scheduler"]["service"]
    assert service["selector"]["dask.org/cluster-name"] == meta["name"]
    assert is_owned_by(spec, UID)
    assert not is_owned_by(spec, UID.replace("0f", "1f"))


def test_adaptive_clusters_start_at_minimum_with_an_autoscaler() -> None:
    f = flow(cluster={"adaptive": {"minimum": 1, "maximum": 5}})
    assert build_dask_cluster_spec(f, OperatorDefaults())["spec"]["worker"]["replicas"] == 1
    scaler = build_dask_autoscaler_spec(f, "c")
    assert scaler is not None and scaler["spec"] == {"cluster": "c", "minimum": 1, "maximum": 5}
    assert build_dask_autoscaler_spec(flow(), "c") is None


def test_runner_job_runs_as_the_flowruns_account() -> None:
    defaults = OperatorDefaults(image="daskflow:1", runner_service_account="runner")
    job = build_runner_job(flow(), defaults, "local")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "runner"
    assert pod["containers"][0]["image"] == "daskflow:1"
    assert pod["restartPolicy"] == "Never"
    job = build_runner_job(flow(serviceAccountName="team", image="mine:2"), defaults, "local")
    pod = job["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["containers"][0]["image"]) == ("team", "mine:2")
    assert "DASKFLOW_SCHEDULER_ADDRESS" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_only_allowed_service_accounts_are_used() -> None:
    defaults = OperatorDefaults(runner_service_account="runner", allowed_service_accounts=("etl",))
    assert service_account_problem(flow(), defaults) is None
    assert service_account_problem(flow(serviceAccountName="runner"), defaults) is None
    assert service_account_problem(flow(serviceAccountName="etl"), defaults) is None
    problem = service_account_problem(flow(serviceAccountName="admin"), defaults)
    assert problem is not None and "'admin' is not allowed" in problem
    anything = OperatorDefaults(allowed_service_accounts=("*",))
    assert service_account_problem(flow(serviceAccountName="admin"), anything) is None


def test_backend_resolution() -> None:
    assert flow().spec.cluster.resolved_backend("local") == "local"
    assert flow(cluster={"backend": "kubernetes"}).spec.cluster.resolved_backend("local") == (
        "kubernetes"
    )
    assert flow(cluster={"address": "tcp://x:1"}).spec.cluster.resolved_backend("kubernetes") == (
        "address"
    )


def test_runner_target_prefers_settings_then_status_then_spec() -> None:
    f = flow(cluster={"backend": "address", "address": "tcp://a:1"})
    recorded = {"backend": "kubernetes", "cluster": "c-1"}
    assert resolve_target(f, recorded, RunnerSettings()) == (
        "kubernetes",
        "tcp://c-1-scheduler.data.svc:8786",
    )
    assert resolve_target(f, recorded, RunnerSettings(backend="local")) == ("local", None)
    assert resolve_target(f, {}, RunnerSettings()) == ("address", "tcp://a:1")
    # A runner started by hand, with nothing recorded and nothing in the spec: local
    assert resolve_target(flow(), {}, RunnerSettings()) == ("local", None)


def test_merge_diff_sends_only_what_changed() -> None:
    old = {"phase": "Running", "tasks": {"a": {"state": "Running"}, "b": {"state": "Pending"}}}
    new = {
        "phase": "Running",
        "tasks": {"a": {"state": "Succeeded", "result": 1}, "b": {"state": "Pending"}},
    }
    assert merge_diff(old, new) == {"tasks": {"a": {"state": "Succeeded", "result": 1}}}
    assert merge_diff(new, new) == {}
    assert merge_diff({"message": "x"}, {}) == {"message": None}


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=3),
        lambda c: st.dictionaries(st.text(max_size=2), c, max_size=3),
        max_leaves=8,
    ),
    st.recursive(
        st.none() | st.integers() | st.text(max_size=3),
        lambda c: st.dictionaries(st.text(max_size=2), c, max_size=3),
        max_leaves=8,
    ),
)
def test_merge_diff_applied_gives_the_new_document(old: Any, new: Any) -> None:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return
    # JSON merge patch cannot express a null value: statuses never hold one.
    if _has_none(new):
        return

    def apply(doc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = apply(out[k], v)
            else:
                out[k] = v if not isinstance(v, dict) else apply({}, v)
        return out

    assert apply(old, merge_diff(old, new)) == new


def _has_none(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, dict) and any(_has_none(v) for v in value.values())


def test_succeeded_condition_keeps_its_transition_time() -> None:
    running = succeeded_condition({"phase": "Running"}, {})
    assert running["status"] == "Unknown"
    again = succeeded_condition(
        {"phase": "Running"},
        {"conditions": [{**running, "lastTransitionTime": "2020-01-01T00:00:00Z"}]},
    )
    assert again["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    failed = succeeded_condition(
        {"phase": "Failed", "reason": "TasksFailed", "message": "m"}, {"conditions": [again]}
    )
    assert (failed["status"], failed["reason"]) == ("False", "TasksFailed")
    assert failed["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def _body(uid: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "namespace": "ns", "name": "n"},
        "spec": {"cluster": {"workers": 2}},
        "status": status,
    }


def _value(metrics: FlowRunMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_metrics_count_transitions_once() -> None:
    m = FlowRunMetrics()
    m.observe(_body("u1", {}))
    m.observe(
        _body(
            "u1",
            {
                "phase": "Running",
                "startTime": "2026-01-01T00:00:00Z",
                "tasks": {"a": {"state": "Running", "retries": 1}},
            },
        )
    )
    assert _value(m, "daskflow_flowruns_running", namespace="ns") == 1
    assert _value(m, "daskflow_cluster_workers", namespace="ns") == 2
    done = {
        "phase": "Succeeded",
        "startTime": "2026-01-01T00:00:00Z",
        "completionTime": "2026-01-01T00:00:10Z",
        "tasks": {
            "a": {
                "state": "Succeeded",
                "retries": 2,
                "startTime": "2026-01-01T00:00:01Z",
                "completionTime": "2026-01-01T00:00:09Z",
            }
        },
    }
    m.observe(_body("u1", done))
    m.observe(_body("u1", done))  # a repeated event counts nothing
    assert _value(m, "daskflow_flowruns_total", namespace="ns", phase="Succeeded") == 1
    assert _value(m, "daskflow_task_runs_total", namespace="ns", state="Succeeded") == 1
    assert _value(m, "daskflow_task_retries_total", namespace="ns") == 2
    assert (
        _value(m, "daskflow_flowrun_duration_seconds_sum", namespace="ns", phase="Succeeded") == 10
    )
    assert _value(m, "daskflow_flowruns_running", namespace="ns") == 0


def test_metrics_after_a_restart_do_not_count_history_again() -> None:
    started = datetime.now(UTC)
    m = FlowRunMetrics()
    old = (started - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = (started + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    m.observe(
        _body(
            "old",
            {
                "phase": "Failed",
                "startTime": old,
                "completionTime": old,
                "tasks": {"a": {"state": "Failed", "completionTime": old}},
            },
        ),
        since=started,
    )
    m.observe(
        _body(
            "new",
            {
                "phase": "Succeeded",
                "startTime": old,
                "completionTime": new,
                "tasks": {"a": {"state": "Succeeded", "completionTime": new}},
            },
        ),
        since=started,
    )
    assert _value(m, "daskflow_flowruns_total", namespace="ns", phase="Failed") == 0
    assert _value(m, "daskflow_flowruns_total", namespace="ns", phase="Succeeded") == 1
    assert _value(m, "daskflow_task_runs_total", namespace="ns", state="Failed") == 0


def test_overdue_runs_are_counted_as_time_passes() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    now = [start.timestamp()]
    m = FlowRunMetrics(clock=lambda: now[0])
    body = _body("u", {"phase": "Running", "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ")})
    body["spec"]["deadlineSeconds"] = 60
    m.observe(body)
    now[0] += 60
    m.tick()
    assert _value(m, "daskflow_flowruns_overdue", namespace="ns") == 0  # not yet
    now[0] += 1
    m.tick()  # no event: time alone makes the run overdue
    assert _value(m, "daskflow_flowruns_overdue", namespace="ns") == 1
    m.forget(body)
    assert _value(m, "daskflow_flowruns_overdue", namespace="ns") == 0


def test_no_metric_carries_a_flowrun_name_or_uid() -> None:
    m = FlowRunMetrics()
    m.observe(_body(UID, {"phase": "Failed", "tasks": {"a": {"state": "Failed"}}}))
    for family in m.registry.collect():
        if not family.name.startswith("daskflow_"):
            continue  # the process and interpreter collectors
        for sample in family.samples:
            assert UID not in sample.labels.values()
            assert set(sample.labels) <= {"namespace", "phase", "state", "backend", "reason", "le"}
