"""Mistakes in a flow fail when the flow is defined, exported or run, never on a worker,
with a message that says what to do instead."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daskflow import Flow, FlowDefinitionError, Parameter, flow, shell, task
from daskflow.model.validate import ManifestError


@task
def extract(date: str) -> list[str]:
    return [date]


@task
def load(rows: list[Any]) -> int:
    return len(rows)


@task
def step() -> int:
    return 1


def traced(body: Any) -> None:
    """Define a flow around ``body`` and make its manifest."""
    flow(body).manifest()


def test_a_lambda_is_refused_with_how_to_fix() -> None:
    with pytest.raises(FlowDefinitionError, match="cannot take a lambda") as err:
        task(lambda x: x)
    assert "Define it with def at the top level of a module" in str(err.value)
    assert "test_errors.py:" in str(err.value)  # where, for daskflow export's sake


def test_a_nested_function_is_refused_with_how_to_fix() -> None:
    with pytest.raises(FlowDefinitionError) as err:

        @task
        def inner() -> None: ...

    assert str(err.value).startswith(
        "@task 'inner' is defined inside test_a_nested_function_is_refused_with_how_to_fix()"
    )
    assert "Move it to the top level of a module" in str(err.value)


def test_something_not_a_function_is_refused() -> None:
    with pytest.raises(FlowDefinitionError, match="needs a function defined with def"):
        task(print)  # type: ignore[arg-type]


def test_a_task_is_found_by_its_function_and_refused_when_it_is_not_there() -> None:
    again = task(extract.fn)  # the module's `extract` is a task of the same function
    with Flow("again") as made:
        again("x")
    assert made.manifest()["spec"]["tasks"][0]["call"] == f"{__name__}:extract"

    def plain(x: int) -> int:
        return x

    plain.__qualname__ = "nowhere"  # what a function renamed after its definition looks like
    orphan = task(plain)
    with Flow("orphan") as broken:
        orphan(1)
    with pytest.raises(
        FlowDefinitionError,
        match=rf"workers import it as {__name__}:nowhere, which is not this function",
    ):
        broken.manifest()


@pytest.mark.parametrize(
    ("use", "what", "fix"),
    [
        (lambda files: bool(files), "`if`, `and`, `or`, `not` or bool() on", "pass it as when="),
        (lambda files: len(files), "len() of", "Compute the length in a task"),
        (lambda files: list(files), "iterating over", "use its .map"),
        (lambda files: files[0], "indexing", "a task that picks the part"),
        (lambda files: "a" in files, "`in` on", "Test membership in a task"),
        (lambda files: files.upper(), "attribute .upper of", "Read the attribute in a task"),
        (lambda files: files - 1, "arithmetic or comparison on", "Compute it in a task"),
        (lambda files: files < 3, "arithmetic or comparison on", "Compute it in a task"),
        (lambda files: files == [], "comparing", "Compare in a task"),
        (lambda files: f"{files:>10}", "formatting with '>10'", "Format the value"),
    ],
)
def test_a_placeholder_used_as_a_value_says_what_to_write(use: Any, what: str, fix: str) -> None:
    def body() -> None:
        use(extract("2026"))

    with pytest.raises(FlowDefinitionError) as err:
        traced(body)
    message = str(err.value)
    assert message.startswith(f"{what} the result of task 'extract' (at test_errors.py:")
    assert "placeholders for values that exist only when the flow runs" in message
    assert fix in message


def test_a_parameter_used_as_a_value_is_named() -> None:
    def body(publish: bool = True) -> None:
        if publish:
            step()

    with pytest.raises(FlowDefinitionError, match=r"^`if`, .* on parameter 'publish'"):
        traced(body)


def test_arguments_that_do_not_fit_the_function_fail_at_definition() -> None:
    def body() -> None:
        load([], 2)

    with pytest.raises(FlowDefinitionError, match=r"task 'load': too many positional arguments"):
        traced(body)

    def mapped() -> None:
        extract.map(["a"], "b")

    with pytest.raises(
        FlowDefinitionError,
        match=r"the call does not fit extract\(date\) \(.map passes each item as the first",
    ):
        traced(mapped)


def test_a_value_json_cannot_carry_is_named_with_its_field() -> None:
    def body() -> None:
        load([Path("/tmp/x")])

    with pytest.raises(FlowDefinitionError) as err:
        traced(body)
    line = body.__code__.co_firstlineno + 1  # the call in the flow body, not manifest()'s
    assert str(err.value).startswith(
        f"tasks[0] (load).args[0][0]: a PosixPath is not JSON (at test_errors.py:{line})"
    )
    assert "convert it (str(path)" in str(err.value)

    def nan() -> None:
        load([float("nan")])

    with pytest.raises(FlowDefinitionError, match=r"args\[0\]\[0\]: nan is not a JSON number"):
        traced(nan)


def test_when_and_map_take_only_what_a_manifest_can_say() -> None:
    def bad_when() -> None:
        step(when=[1])

    with pytest.raises(FlowDefinitionError, match=r"tasks\[0\] \(step\).when: a list"):
        traced(bad_when)

    def bad_map() -> None:
        extract.map({"a": 1})

    with pytest.raises(FlowDefinitionError, match=r"tasks\[0\] \(extract\).map: cannot fan out"):
        traced(bad_map)


def test_a_cycle_has_the_same_message_as_daskflow_validate(tmp_path: Path) -> None:
    def body() -> None:
        a = step()
        b = load([a])
        a.after(b)

    with pytest.raises(ManifestError) as err:
        traced(body)
    assert err.value.source == "flow 'body'"
    # the same flow, hand-written, through the installed command
    path = tmp_path / "cycle.yaml"
    tasks = [
        {"name": "step", "call": f"{__name__}:step", "dependsOn": ["load"]},
        {"name": "load", "call": f"{__name__}:load", "args": [["$(tasks.step.result)"]]},
    ]
    doc = {"apiVersion": "daskflow.io/v1alpha1", "kind": "FlowRun", "spec": {"tasks": tasks}}
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "daskflow"), "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    problems = re.findall(r"^  - (.*)$", proc.stderr, re.M)
    assert problems == err.value.problems
    assert "dependency cycle: step depends on load, load depends on step" in problems[0]


def test_over_500_tasks_has_the_message_of_daskflow_validate() -> None:
    def body() -> None:
        for _ in range(501):
            step()

    with pytest.raises(ManifestError) as err:
        traced(body)
    assert err.value.problems == [
        "spec.tasks: List should have at most 500 items after validation, not 501"
    ]


def test_a_bad_task_name_gets_validate_s_suggestion() -> None:
    def body() -> None:
        step.with_options(name="Load_Data")()

    with pytest.raises(ManifestError) as err:
        traced(body)
    assert err.value.problems == [
        'tasks[0] (Load_Data).name: must be lowercase letters, digits and "-" (a DNS label), '
        'such as "load-data"'
    ]


def test_bad_option_values_are_named_as_validate_names_them() -> None:
    def body() -> None:
        step.with_options(retries=-1, timeout=0)()

    with pytest.raises(ManifestError) as err:
        traced(body)
    assert err.value.problems == [
        "tasks[0] (step).retries: Input should be greater than or equal to 0",
        "tasks[0] (step).timeoutSeconds: Input should be greater than 0",
    ]


def test_parameters_unknown_missing_or_of_the_wrong_kind() -> None:
    @flow
    def needs(date: str, n: int = 1) -> None:
        extract(date)

    with pytest.raises(
        FlowDefinitionError,
        match=r"flow 'needs' has no parameter 'dat' \(its parameters: date, n\)",
    ):
        needs.manifest(dat="x")
    with pytest.raises(
        FlowDefinitionError, match=r"parameter 'date' has no default: give its value"
    ):
        needs.manifest()
    assert needs.manifest(date="x")["spec"]["parameters"] == {"date": "x", "n": 1}

    with pytest.raises(FlowDefinitionError, match=r"parameter \*rest is not allowed"):

        @flow
        def star(*rest: str) -> None: ...

    with pytest.raises(FlowDefinitionError, match="outside a `with Flow"):
        Parameter("x")


def test_placeholders_of_another_flow_are_refused() -> None:
    with Flow("first") as first:
        files = extract("x")
    with Flow("second") as second:
        load(files)
    assert first.manifest()
    with pytest.raises(FlowDefinitionError, match="belongs to flow 'first', not 'second'"):
        second.manifest()


def test_records_outside_a_flow_and_nested_flows_are_refused() -> None:
    with pytest.raises(FlowDefinitionError, match=r"extract.map\(\) outside a flow body"):
        extract.map(["a"])
    with pytest.raises(FlowDefinitionError, match=r"shell\(\) outside a flow body"):
        shell(["date"])
    with pytest.raises(TypeError, match="when= is for a call inside a flow body"):
        step(when=True)

    def body() -> None:
        shell("echo hi")  # type: ignore[arg-type]

    with pytest.raises(FlowDefinitionError, match=r"the command is an argv list.*\["):
        traced(body)

    with (
        Flow("outer"),
        pytest.raises(FlowDefinitionError, match="flows do not nest"),
        Flow("inner"),
    ):
        pass


def test_an_empty_flow_and_a_flow_used_inside_its_block() -> None:
    with Flow("empty") as empty:
        pass
    with pytest.raises(ManifestError, match=r"spec\.tasks: List should have at least 1 item"):
        empty.manifest()
    with Flow("busy") as busy:
        step()
        with pytest.raises(FlowDefinitionError, match="inside its own `with` block"):
            busy.manifest()


def test_a_task_parameter_named_when_is_refused() -> None:
    with pytest.raises(FlowDefinitionError, match="its parameter 'when' clashes"):
        task(_takes_when)


def _takes_when(when: str) -> str:
    return when
