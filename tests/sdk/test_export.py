"""``daskflow export module:flow``, run as the installed command in a user's project."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.newuser.conftest import UserProject, assert_clean_exit

FLOWS = """
from daskflow import flow, task


@task
def double(x: int) -> int:
    return 2 * x


@flow
def twice(x: int = 1) -> None:
    double(double(x))


def not_a_flow() -> None: ...
"""


@pytest.fixture
def flows(project: UserProject) -> UserProject:
    project.module("src/jobs/__init__.py", "")  # the src layout
    project.module("src/jobs/flows.py", FLOWS)
    return project


def test_export_prints_the_manifest_that_daskflow_validate_accepts(flows: UserProject) -> None:
    proc = flows.daskflow("export", "jobs.flows:twice", "--set", "x=21")
    assert_clean_exit(proc)
    doc = yaml.safe_load(proc.stdout)
    assert doc["spec"]["parameters"] == {"x": 21}
    assert doc["spec"]["tasks"] == [
        {"name": "double", "call": "jobs.flows:double", "args": ["$(params.x)"]},
        {"name": "double-2", "call": "jobs.flows:double", "args": ["$(tasks.double.result)"]},
    ]
    (flows.root / "twice.yaml").write_text(proc.stdout)
    check = flows.daskflow("validate", "twice.yaml")
    assert_clean_exit(check)
    as_json = flows.daskflow("export", "jobs.flows:twice", "--set", "x=21", "-o", "json")
    assert_clean_exit(as_json)
    assert json.loads(as_json.stdout) == doc


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("jobs/flows.py", "expected a module and a flow in it, module:name, such as myflow:etl"),
        ("jobs.nothing:twice", "no module 'jobs.nothing' here ("),
        ("jobs.flows:thrice", "module jobs.flows has no flow 'thrice' (its flows: twice)"),
        ("jobs.flows:not_a_flow", "jobs.flows:not_a_flow is a function, not a flow (its flows"),
        ("jobs.broken:f", "importing jobs.broken failed: ZeroDivisionError: division by zero"),
        ("jobs.flows:twice --set y=1", "flow 'twice' has no parameter 'y' (its parameters: x)"),
        ("jobs.cyclic:loop", "flow 'loop' is invalid:\n  - tasks[0] (double).dependsOn: "),
        ("jobs.typo:typo", "tracing the flow failed: NameError: name 'dubble' is not defined"),
        ("jobs.runs:runs", "importing jobs.runs runs the flow (.run() at its top level): put"),
    ],
)
def test_export_errors_name_the_problem_with_exit_code_2(
    flows: UserProject, ref: str, message: str
) -> None:
    flows.module("src/jobs/broken.py", "x = 1 / 0\n")
    flows.module(
        "src/jobs/cyclic.py",
        """
        from daskflow import flow
        from jobs.flows import double

        @flow
        def loop() -> None:
            a = double(1)
            a.after(double(a))
        """,
    )
    flows.module(
        "src/jobs/typo.py",
        """
        from daskflow import flow

        @flow
        def typo() -> None:
            dubble(1)
        """,
    )
    flows.module(
        "src/jobs/runs.py",
        """
        from daskflow import flow
        from jobs.flows import double

        @flow
        def runs() -> None:
            double(1)

        runs.run()  # Prefect 1 style: no __name__ test
        """,
    )
    proc = flows.daskflow("export", *ref.split())
    assert_clean_exit(proc, codes=(2,))
    assert proc.stdout == ""
    assert proc.stderr.startswith("daskflow export: ")
    assert message in proc.stderr
