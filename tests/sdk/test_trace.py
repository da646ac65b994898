"""Tracing a flow body into a FlowRun: references, names, nesting, map, when, after, options.

Every manifest made here has passed daskflow's validation (``manifest()`` runs it), and
some are read back by the installed ``daskflow validate``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from daskflow import Cluster, Flow, Parameter, flow, shell, task
from daskflow.model.validate import parse_flowrun

MODULE = __name__


@task(retries=2, retry_delay=5, timeout=600)
def extract(date: str) -> list[str]:
    return [f"/data/{date}/a.csv", f"/data/{date}/b.csv"]


@task
def transform(path: str, scale: int = 1) -> dict[str, Any]:
    return {"path": path, "scale": scale}


@task
def load(rows: list[dict[str, Any]]) -> int:
    return len(rows)


@task
def notify(n: int) -> str:
    return f"loaded {n}"


@task
def cleanup() -> None:
    return None


@task
def combine(config: dict[str, Any], items: list[Any]) -> dict[str, Any]:
    return {"config": config, "items": items}


@task(name="is-weekday")
def is_weekday_check(date: str) -> bool:
    return True


@flow(name="etl", cluster=Cluster(workers=4), image="registry.example.com/etl:1.2")
def etl(date: str = "2026-12-01", publish: bool = True) -> None:
    files = extract(date)
    rows = transform.map(files)
    n = load(rows)
    notify(n, when=publish)
    cleanup.after(n)


def tasks_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["spec"]["tasks"]}


def test_the_issue_example_becomes_this_flowrun() -> None:
    doc = etl.manifest()
    assert doc["apiVersion"] == "daskflow.io/v1alpha1"
    assert doc["kind"] == "FlowRun"
    assert doc["metadata"] == {"name": "etl"}
    spec = doc["spec"]
    assert spec["parameters"] == {"date": "2026-12-01", "publish": True}
    assert spec["cluster"] == {"workers": 4}
    assert spec["image"] == "registry.example.com/etl:1.2"
    assert spec["tasks"] == [
        {
            "name": "extract",
            "call": f"{MODULE}:extract",
            "args": ["$(params.date)"],
            "retries": 2,
            "retryDelaySeconds": 5,
            "timeoutSeconds": 600,
        },
        {
            "name": "transform",
            "call": f"{MODULE}:transform",
            "map": "$(tasks.extract.result)",
            "args": ["$(item)"],
        },
        {"name": "load", "call": f"{MODULE}:load", "args": ["$(tasks.transform.result)"]},
        {
            "name": "notify",
            "call": f"{MODULE}:notify",
            "args": ["$(tasks.load.result)"],
            "when": "$(params.publish)",
        },
        {"name": "cleanup", "call": f"{MODULE}:cleanup", "dependsOn": ["load"]},
    ]


def test_parameters_given_replace_defaults_and_the_body_is_traced_once() -> None:
    calls: list[str] = []

    @flow
    def counted(x: int = 1) -> None:
        calls.append("traced")
        load(x)

    first = counted.manifest(x=5)
    second = counted.manifest()
    assert first["spec"]["parameters"] == {"x": 5}
    assert second["spec"]["parameters"] == {"x": 1}
    assert first["spec"]["tasks"] == second["spec"]["tasks"]
    assert calls == ["traced"]


def test_placeholders_nested_in_lists_dicts_and_strings() -> None:
    @flow
    def nested(region: str = "eu", limit: int = 3) -> None:
        files = extract("2026-12-01")
        combine(
            {"region": region, "paths": [files, {"deep": [limit, files]}], "label": f"{region}-x"},
            items=[files, "literal", 1.5, None, True, (region, limit)],
        )

    combined = tasks_of(nested.manifest())["combine"]
    assert combined["args"] == [
        {
            "region": "$(params.region)",
            "paths": [
                "$(tasks.extract.result)",
                {"deep": ["$(params.limit)", "$(tasks.extract.result)"]},
            ],
            "label": "$(params.region)-x",
        }
    ]
    assert combined["kwargs"] == {
        "items": [
            "$(tasks.extract.result)",
            "literal",
            1.5,
            None,
            True,
            ["$(params.region)", "$(params.limit)"],
        ]
    }
    # and the engine sees the dependency those references imply
    flowrun = parse_flowrun(nested.manifest())
    from daskflow.model.graph import task_dependencies

    assert task_dependencies(flowrun.spec.tasks[1]) == ["extract"]


def test_repeated_calls_get_unique_names_and_with_options_overrides_one_call() -> None:
    @flow
    def repeated() -> None:
        a = transform("/a")
        b = transform("/b")
        c = transform.with_options(name="transform-eu", retries=5, timeout=30)("/c")
        d = transform("/d")
        load([a, b, c, d])

    named = tasks_of(repeated.manifest())
    assert list(named) == ["transform", "transform-2", "transform-eu", "transform-3", "load"]
    assert named["transform-eu"]["retries"] == 5
    assert named["transform-eu"]["timeoutSeconds"] == 30
    assert "retries" not in named["transform-3"]
    assert named["load"]["args"] == [
        [
            f"$(tasks.{n}.result)"
            for n in ("transform", "transform-2", "transform-eu", "transform-3")
        ]
    ]


def test_with_options_keeps_the_decorator_options_it_does_not_replace() -> None:
    @flow
    def opts() -> None:
        extract.with_options(retries=7)("2026")

    (only,) = opts.manifest()["spec"]["tasks"]
    assert (only["retries"], only["retryDelaySeconds"], only["timeoutSeconds"]) == (7, 5, 600)


def test_function_names_become_dns_labels_and_a_decorator_name_is_kept() -> None:
    @flow
    def named() -> None:
        is_weekday_check("2026")
        is_weekday_check("2027")

    assert [t["name"] for t in named.manifest()["spec"]["tasks"]] == ["is-weekday", "is-weekday-2"]


def test_map_over_a_parameter_a_literal_list_and_a_mapped_result_with_fixed_arguments() -> None:
    @flow
    def maps(paths: list[str] | None = None) -> None:
        over_param = transform.map(paths, 2)
        over_list = transform.map(["/x", "/y"], scale=3)
        load.map(over_param)
        load(over_list)

    doc = maps.manifest(paths=["/p", "/q"])
    named = tasks_of(doc)
    assert named["transform"]["map"] == "$(params.paths)"
    assert named["transform"]["args"] == ["$(item)", 2]
    assert named["transform-2"]["map"] == ["/x", "/y"]
    assert named["transform-2"]["kwargs"] == {"scale": 3}
    assert named["load"]["map"] == "$(tasks.transform.result)"


def test_when_takes_a_parameter_a_task_result_or_a_literal() -> None:
    @flow
    def conditions(publish: bool = False) -> None:
        ok = is_weekday_check("2026")
        notify(1, when=publish)
        notify(2, when=ok)
        notify(3, when=False)
        transform.map(["/a"], when=ok)

    named = tasks_of(conditions.manifest())
    assert named["notify"]["when"] == "$(params.publish)"
    assert named["notify-2"]["when"] == "$(tasks.is-weekday.result)"
    assert named["notify-3"]["when"] is False
    assert named["transform"]["when"] == "$(tasks.is-weekday.result)"


def test_after_orders_without_data_on_a_task_and_on_a_result() -> None:
    @flow
    def ordered() -> None:
        a = extract("2026")
        b = transform("/b")
        cleanup.after(a, b)
        load([b]).after(a)

    named = tasks_of(ordered.manifest())
    assert named["cleanup"]["dependsOn"] == ["extract", "transform"]
    assert "args" not in named["cleanup"]
    assert named["load"]["dependsOn"] == ["extract"]


def test_shell_records_command_tasks_with_placeholders_env_and_map() -> None:
    @flow
    def commands(greeting: str = "hello", words: list[str] | None = None) -> None:
        n = load([])
        shell(["sh", "-c", f"echo rows={n}"], name="report", env={"GREETING": greeting})
        shell(["date"])
        shell(["date"], retries=1)
        shell.map(words, ["sh", "-c", "echo '$(item)' | rev"], name="reverse")

    named = tasks_of(commands.manifest(words=["level", "drawer"]))
    assert named["report"] == {
        "name": "report",
        "command": ["sh", "-c", "echo rows=$(tasks.load.result)"],
        "env": {"GREETING": "$(params.greeting)"},
    }
    assert named["shell"] == {"name": "shell", "command": ["date"]}
    assert named["shell-2"]["retries"] == 1
    assert named["reverse"]["map"] == "$(params.words)"


def test_the_prefect_1_form_with_parameters() -> None:
    with Flow("My Distributed Flow", cluster=Cluster(workers=1, threads_per_worker=2)) as f:
        date = Parameter("date", default="2026-12-01")
        files = extract(date)
        load(transform.map(files))

    doc = f.manifest(date="2027-01-01")
    assert doc["metadata"]["name"] == "my-distributed-flow"
    assert doc["spec"]["parameters"] == {"date": "2027-01-01"}
    assert doc["spec"]["cluster"] == {"workers": 1, "threadsPerWorker": 2}
    assert [t["name"] for t in doc["spec"]["tasks"]] == ["extract", "transform", "load"]


def test_flow_settings_reach_the_spec() -> None:
    @flow(deadline=3600, fail_fast=True, ttl_after_finished=60, service_account="etl-runner")
    def settings() -> None:
        cleanup()

    spec = settings.manifest()["spec"]
    assert spec["deadlineSeconds"] == 3600
    assert spec["failFast"] is True
    assert spec["ttlSecondsAfterFinished"] == 60
    assert spec["serviceAccountName"] == "etl-runner"
    assert "parameters" not in spec


def test_a_task_called_outside_a_flow_runs_the_function() -> None:
    assert extract("2026") == ["/data/2026/a.csv", "/data/2026/b.csv"]  # type: ignore[comparison-overlap]
    assert transform.fn("/p", scale=2) == {"path": "/p", "scale": 2}


def test_to_yaml_reads_back_as_the_manifest_and_daskflow_validate_accepts_it(
    tmp_path: Path,
) -> None:
    text = etl.to_yaml(date="2027-02-03")
    assert yaml.safe_load(text) == etl.manifest(date="2027-02-03")
    path = tmp_path / "etl.yaml"
    path.write_text(text)
    daskflow = Path(sys.executable).parent / "daskflow"
    proc = subprocess.run([str(daskflow), "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "valid FlowRun 'etl' with 5 tasks" in proc.stdout
