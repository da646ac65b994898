"""Validation: one clear message per problem, naming the task and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daskflow.model.validate import ManifestError, load_flowrun, parse_flowrun

from .helpers import call, manifest


def problems(raw: Any) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_flowrun(raw)
    return info.value.problems


def test_the_issue_example_validates() -> None:
    flow = parse_flowrun(
        manifest(
            [
                {
                    "name": "extract",
                    "call": "etl.tasks:extract",
                    "args": ["$(params.date)"],
                    "retries": 2,
                    "retryDelaySeconds": 5,
                    "timeoutSeconds": 600,
                },
                {
                    "name": "transform",
                    "map": "$(tasks.extract.result)",
                    "call": "etl.tasks:transform",
                    "args": ["$(item)"],
                },
                {
                    "name": "report",
                    "command": ["sh", "-c", "echo rows=$(tasks.transform.result)"],
                    "when": "$(params.publish)",
                    "dependsOn": ["transform"],
                },
            ],
            parameters={"date": "2026-11-26", "files": ["a.csv"], "publish": True},
            cluster={"workers": 2, "threadsPerWorker": 1},
            failFast=False,
            deadlineSeconds=3600,
        )
    )
    assert [t.name for t in flow.spec.tasks] == ["extract", "transform", "report"]
    assert flow.spec.tasks[0].retry_delay_seconds == 5
    assert flow.spec.tasks[2].depends_on == ["transform"]


def test_unknown_depends_on_names_task_and_field() -> None:
    raw = manifest([call("extract"), call("load", dependsOn=["extrct"])])
    assert problems(raw) == ['tasks[1] (load).dependsOn: unknown task "extrct"']


def test_unknown_task_in_a_reference_names_the_field() -> None:
    raw = manifest([call("a"), call("b", kwargs={"x": "$(tasks.nope.result)"})])
    assert problems(raw) == ['tasks[1] (b).kwargs: unknown task "nope"']


def test_duplicate_names() -> None:
    raw = manifest([call("a"), call("b"), call("a")])
    assert problems(raw) == ['tasks[2] (a).name: duplicate task name "a"']


@pytest.mark.parametrize(
    "task",
    [
        {"name": "a"},
        {"name": "a", "call": "m:f", "command": ["true"]},
    ],
)
def test_call_xor_command(task: dict[str, Any]) -> None:
    assert problems(manifest([task])) == ["tasks[0] (a).call: set exactly one of call or command"]


@pytest.mark.parametrize("bad", ["module", "module:", ":fn", "a b:c", "m:f.g.h", "1m:f", "m:f()"])
def test_bad_call_string(bad: str) -> None:
    assert problems(manifest([{"name": "a", "call": bad}])) == [
        'tasks[0] (a).call: must look like "module:attr" or "module:Class.attr"'
    ]


@pytest.mark.parametrize("good", ["m:f", "pkg.mod:fn", "pkg.mod:Class.method", "_m:_f"])
def test_good_call_strings(good: str) -> None:
    parse_flowrun(manifest([{"name": "a", "call": good}]))


def test_unknown_field_suggests_the_closest_known_one() -> None:
    raw = manifest([call("a", dependson=["b"], timeout=5, colour="red"), call("b", retires=3)])
    raw["spec"]["cluster"] = {"worker": 2}
    assert problems(raw) == [
        "spec.cluster.worker: unknown field (did you mean workers?)",
        "tasks[0] (a).dependson: unknown field (did you mean dependsOn?)",
        "tasks[0] (a).timeout: unknown field (did you mean timeoutSeconds?)",
        "tasks[0] (a).colour: unknown field",
        "tasks[1] (b).retires: unknown field (did you mean retries?)",
    ]


@pytest.mark.parametrize(
    ("name", "hint"),
    [("extract_data", ', such as "extract-data"'), ("__", ""), ("Load", ', such as "load"')],
)
def test_a_bad_task_name_says_what_a_name_may_hold(name: str, hint: str) -> None:
    assert problems(manifest([call(name)])) == [
        f'tasks[0] ({name}).name: must be lowercase letters, digits and "-" (a DNS label){hint}'
    ]


def test_unknown_spec_field() -> None:
    raw = manifest([call("a")], failfast=True)
    assert problems(raw) == ["spec.failfast: unknown field (did you mean failFast?)"]


def test_unknown_parameter() -> None:
    raw = manifest([call("a", args=["$(params.dat)"])], parameters={"date": "x"})
    assert problems(raw) == ['tasks[0] (a).args: unknown parameter "dat"']


def test_item_outside_a_mapped_task() -> None:
    raw = manifest([call("a", args=["$(item)"])])
    assert problems(raw) == ["tasks[0] (a).args: $(item) cannot be used in a task without map"]


@pytest.mark.parametrize("field", ["when", "map"])
def test_item_in_map_or_when_of_a_mapped_task(field: str) -> None:
    task = call("a", map=[1, 2], args=["$(item)"])
    task[field] = "$(item)"
    assert problems(manifest([task])) == [
        f"tasks[0] (a).{field}: $(item) cannot be used in {field}"
    ]


def test_map_over_a_parameter_that_is_not_a_list() -> None:
    raw = manifest([call("a", map="$(params.n)", args=["$(item)"])], parameters={"n": 3})
    assert problems(raw) == ['tasks[0] (a).map: parameter "n" is not a list']


@pytest.mark.parametrize("source", ["a,b", "$(flowrun.name)", "x $(params.l)"])
def test_map_must_be_a_list_or_one_reference(source: str) -> None:
    raw = manifest([call("a", map=source)], parameters={"l": [1]})
    (problem,) = problems(raw)
    assert problem.startswith("tasks[0] (a).map: must be a list or exactly one reference")


def test_env_only_for_commands() -> None:
    raw = manifest([call("a", env={"X": "1"})])
    assert problems(raw) == ["tasks[0] (a).env: only command tasks take env"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"retries": -1}, "tasks[0] (a).retries: Input should be greater than or equal to 0"),
        ({"retries": "many"}, "tasks[0] (a).retries: Input should be a valid integer"),
        ({"timeoutSeconds": 0}, "tasks[0] (a).timeoutSeconds: Input should be greater than 0"),
        ({"name": "Bad_Name"}, "tasks[0] (Bad_Name).name: must be lowercase letters, digits"),
        ({"args": "x"}, "tasks[0] (a).args: Input should be a valid list"),
        ({"map": 5}, "tasks[0] (a).map: must be a list or exactly one reference"),
        ({"env": {"A": 1}, "command": ["x"], "call": None}, "tasks[0] (a).env.A: Input should"),
    ],
)
def test_types_and_bounds(fields: dict[str, Any], expected: str) -> None:
    (problem,) = problems(manifest([{**call("a"), **fields}]))
    assert problem.startswith(expected)


def test_every_problem_is_reported_at_once() -> None:
    raw = manifest(
        [
            call("a", dependsOn=["x"]),
            call("b", args=["$(params.p)"]),
            {"name": "c"},
        ]
    )
    assert problems(raw) == [
        'tasks[0] (a).dependsOn: unknown task "x"',
        'tasks[1] (b).args: unknown parameter "p"',
        "tasks[2] (c).call: set exactly one of call or command",
    ]


def test_type_problems_and_whole_flow_problems_are_reported_together() -> None:
    raw = manifest(
        [
            call("a", retries=-1),
            call("b", dependsOn=["a", "nope"], args=["$(params.zz)", "$(tasks.a.result)"]),
            {"name": "c", "call": "m f"},
            call("d", dependsOn=["c"]),  # c did not parse, but it exists: not "unknown"
        ],
        parameters={"n": 3},
    )
    assert problems(raw) == [
        "tasks[0] (a).retries: Input should be greater than or equal to 0",
        'tasks[2] (c).call: must look like "module:attr" or "module:Class.attr"',
        'tasks[1] (b).dependsOn: unknown task "nope"',
        'tasks[1] (b).args: unknown parameter "zz"',
    ]


def test_self_dependency() -> None:
    assert problems(manifest([call("a", dependsOn=["a"])])) == [
        "tasks[0] (a).dependsOn: task depends on itself"
    ]
    assert problems(manifest([call("a", args=["$(tasks.a.result)"])])) == [
        "tasks[0] (a).args: task depends on itself"
    ]


def test_cycle_names_the_tasks_on_it_in_dependency_order() -> None:
    raw = manifest(
        [
            call("extract", dependsOn=["load"]),
            call("transform", args=["$(tasks.extract.result)"]),
            call("load", dependsOn=["transform"]),
            call("report", dependsOn=["load"]),  # downstream of the cycle, not on it
        ]
    )
    assert problems(raw) == [
        "tasks[0] (extract).dependsOn: dependency cycle: extract depends on load, "
        "load depends on transform, transform depends on extract"
    ]


def test_cycle_through_a_reference_names_that_field() -> None:
    raw = manifest([call("a", args=["$(tasks.b.result)"]), call("b", when="$(tasks.a.result)")])
    assert problems(raw) == ["tasks[0] (a).args: dependency cycle: a depends on b, b depends on a"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], "(root): a FlowRun manifest must be a mapping"),
        ({"kind": "FlowRun"}, "spec: Field required"),
        ({**manifest([call("a")]), "kind": "Flow"}, "kind: Input should be 'FlowRun'"),
        (manifest([]), "spec.tasks: List should have at least 1 item"),
        (manifest(["extract"]), "tasks[0]: Input should be a valid dictionary"),
        (manifest([{"call": "m:f"}]), "tasks[0].name: Field required"),
    ],
)
def test_document_level_problems(raw: Any, expected: str) -> None:
    assert problems(raw)[0].startswith(expected)


def test_error_text_is_one_message_listing_the_problems() -> None:
    with pytest.raises(ManifestError) as info:
        parse_flowrun(manifest([call("a", dependsOn=["b"])]), "flow.yaml")
    assert str(info.value) == 'flow.yaml is invalid:\n  - tasks[0] (a).dependsOn: unknown task "b"'


def test_load_flowrun_reads_yaml_and_applies_overrides(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(
        "apiVersion: daskflow.io/v1alpha1\nkind: FlowRun\nmetadata: {name: f}\n"
        "spec:\n  parameters: {n: 1, keep: k}\n  tasks:\n    - {name: a, call: 'm:f'}\n"
    )
    flow = load_flowrun(path, {"n": [5]})
    assert flow.spec.parameters == {"n": [5], "keep": "k"}


@pytest.mark.parametrize(
    ("parameters", "overrides", "expected"),
    [
        (
            "{n: 1, keep: k}",
            {"nn": 2, "n": 3, "x": 4},
            [
                '--set nn: flow.yaml declares no parameter "nn" (its parameters: n, keep)',
                '--set x: flow.yaml declares no parameter "x" (its parameters: n, keep)',
            ],
        ),
        ("null", {"n": 1}, ['--set n: flow.yaml declares no parameter "n" (it has none)']),
        ("{}", {"n": 1}, ['--set n: flow.yaml declares no parameter "n" (it has none)']),
    ],
)
def test_set_names_a_parameter_the_manifest_declares(
    tmp_path: Path, parameters: str, overrides: dict[str, Any], expected: list[str]
) -> None:
    (tmp_path / "flow.yaml").write_text(
        "apiVersion: daskflow.io/v1alpha1\nkind: FlowRun\nmetadata: {name: f}\n"
        f"spec:\n  parameters: {parameters}\n  tasks:\n    - {{name: a, call: 'm:f'}}\n"
    )
    with pytest.raises(ManifestError) as info:
        load_flowrun(tmp_path / "flow.yaml", overrides)
    assert info.value.source == "command line"
    assert info.value.problems == [
        p.replace("flow.yaml", str(tmp_path / "flow.yaml")) for p in expected
    ]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (
            "args",
            ["$(param.p)"],
            'args[0]: "$(param.p)" is not a valid reference: did you mean $(params.p)?',
        ),
        (
            "args",
            ["x", "$(tasks.src.output)"],
            'args[1]: "$(tasks.src.output)" is not a valid reference: '
            "did you mean $(tasks.src.result)?",
        ),
        (
            "kwargs",
            {"k": {"deep": ["$(tasks.SRC.result)"]}},
            'kwargs.k.deep[0]: "$(tasks.SRC.result)" is not a valid reference: '
            "did you mean $(tasks.src.result)?",
        ),
        (
            "kwargs",
            {"$(Params.p)": 1},
            'kwargs: "$(Params.p)" is not a valid reference: did you mean $(params.p)?',
        ),
        (
            "args",
            ["$(params)"],
            'args[0]: "$(params)" is not a valid reference: references are $(params.NAME), '
            "$(tasks.NAME.result), $(item), $(flowrun.name), $(flowrun.namespace)",
        ),
        (
            "map",
            "$(param.xs)",
            'map: "$(param.xs)" is not a valid reference: did you mean $(params.xs)?',
        ),
        (
            "when",
            "$(param.p)",
            'when: "$(param.p)" is not a valid reference: did you mean $(params.p)?',
        ),
    ],
)
def test_text_that_starts_like_a_reference_but_is_not_one_is_an_error(
    field: str, value: Any, expected: str
) -> None:
    raw = manifest([call("src"), call("load", **{field: value})], parameters={"p": 1, "xs": [1]})
    assert problems(raw) == [f"tasks[1] (load).{expected}"]


@pytest.mark.parametrize(
    "text",
    [
        "echo $(date +%s) $(ls | wc -l)",
        "$(cat file.txt)",
        "$(./run.sh) $(command run.sh)",
        "n=$(params.p) at $(date +%F)",
    ],
)
def test_shell_command_substitution_is_left_alone(text: str) -> None:
    flow = parse_flowrun(
        manifest([{"name": "a", "command": ["sh", "-c", text]}], parameters={"p": 1})
    )
    assert flow.spec.tasks[0].command == ["sh", "-c", text]


@pytest.mark.parametrize(
    "when",
    [
        "$(params.z) == 1",
        "$(params.z) != 0",
        "not $(params.z)",
        "$(params.z) and $(params.y)",
        "$(params.z) ",
        "x > 3",
        ["$(params.z)"],
        {"a": 1},
    ],
)
def test_when_takes_one_reference_or_a_literal_not_an_expression(when: Any) -> None:
    raw = manifest([call("a", when=when)], parameters={"z": 1, "y": 0})
    (problem,) = problems(raw)
    assert problem.startswith(
        f"tasks[0] (a).when: {json.dumps(when)} is an expression, "
        "which daskflow does not evaluate: "
    )
    assert 'compute a condition in a task and use "$(tasks.NAME.result)"' in problem


@pytest.mark.parametrize(
    "when", ["$(params.z)", True, False, 0, 1, None, "yes", "off", "$(tasks.b.result)"]
)
def test_when_with_one_reference_or_a_literal_validates(when: Any) -> None:
    parse_flowrun(manifest([call("a", when=when), call("b")], parameters={"z": 1}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [unclosed", "not valid YAML: did not find expected ',' or ']' at line 2, column 1"),
        ("", "no FlowRun in the file: it is empty"),
        ("# just a comment\n", "no FlowRun in the file: it is empty"),
        ("a: 1\n---\nb: 2\n", "expected exactly one FlowRun document, found 2"),
        ("a: *nope\n", "not valid YAML: found undefined alias"),
    ],
)
def test_load_flowrun_file_problems(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_flowrun(path)
    assert info.value.problems[0].startswith(expected)


def test_load_flowrun_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_flowrun(tmp_path / "nope.yaml")
    assert info.value.problems == ["cannot read file: No such file or directory"]


@pytest.mark.parametrize("address", ["tcp://10.0.0.1:8786", "sched:8786", "tls://[::1]:8786"])
def test_scheduler_addresses(address: str) -> None:
    flow = parse_flowrun(manifest([call("a")], cluster={"address": address}))
    assert flow.spec.cluster.address == address


@pytest.mark.parametrize("address", ["not-an-address", "tcp://host", "http://h:1", "h:port"])
def test_a_scheduler_address_needs_host_and_port(address: str) -> None:
    (problem,) = problems(manifest([call("a")], cluster={"address": address}))
    assert problem.startswith("spec.cluster.address: String should match pattern")
