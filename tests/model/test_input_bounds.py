"""Reading a manifest is safe on any input: size, encoding, nesting and YAML aliases are
bounded, and each bound broken is one problem naming the task and field (or the line)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from daskflow.model.reader import MAX_DEPTH, MAX_MANIFEST_BYTES, MAX_VALUES, load_yaml
from daskflow.model.validate import ManifestError, load_flowrun, parse_flowrun

from .helpers import call, manifest

HEAD = "apiVersion: daskflow.io/v1alpha1\nkind: FlowRun\nmetadata: {name: f}\nspec:\n"
# A task's args list sits inside four containers: the document, spec, tasks and the task.
ARGS_LEVEL = 5


def file_problems(tmp_path: Path, text: str | bytes) -> list[str]:
    path = tmp_path / "flow.yaml"
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    with pytest.raises(ManifestError) as info:
        load_flowrun(path)
    assert info.value.source == str(path)
    return info.value.problems


def task_with_args(args_yaml: str, before: str = "") -> str:
    return f"{HEAD}{before}  tasks:\n    - name: a\n      call: 'm:f'\n      args: {args_yaml}\n"


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    text = task_with_args("[1]").encode().replace(b"m:f", b"m:f\xff")
    assert file_problems(tmp_path, text) == ["not UTF-8 text: byte 0xff on line 7"]


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + task_with_args("[é]").encode())
    assert load_flowrun(path).spec.tasks[0].args == ["é"]


def test_a_file_larger_than_the_limit_is_not_parsed(tmp_path: Path) -> None:
    filler = "#" * 1000 + "\n"
    text = task_with_args("[1]") + filler * (MAX_MANIFEST_BYTES // len(filler) + 1)
    assert file_problems(tmp_path, text) == [
        f"larger than {MAX_MANIFEST_BYTES >> 20} MiB, the limit"
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("dir", "cannot read file: Is a directory"), ("missing", "cannot read file: No such file")],
)
def test_a_path_that_is_not_a_file(tmp_path: Path, name: str, expected: str) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(ManifestError) as info:
        load_flowrun(tmp_path / name)
    (problem,) = info.value.problems
    assert problem.startswith(expected)


def test_nesting_at_the_limit_is_fine_and_one_more_level_is_not(tmp_path: Path) -> None:
    at_limit = nested(MAX_DEPTH - ARGS_LEVEL + 1)
    path = tmp_path / "ok.yaml"
    path.write_text(task_with_args(at_limit))
    assert load_flowrun(path).spec.tasks[0].args[0][0]  # parsed in full
    assert file_problems(tmp_path, task_with_args(f"[{at_limit}]")) == [
        f"tasks[0] (a).args: nested deeper than {MAX_DEPTH} levels"
    ]


def test_nesting_thousands_deep_is_one_yaml_problem_not_a_crash(tmp_path: Path) -> None:
    (problem,) = file_problems(tmp_path, task_with_args(nested(5000)))
    assert problem.startswith("not valid YAML: exceeded maximum nesting depth at line 8, column")


def test_the_same_depth_bound_holds_for_an_object_from_the_api_server() -> None:
    def deep(levels: int) -> Any:
        value: Any = []
        for _ in range(levels - 1):
            value = [value]
        return value

    at_limit = deep(MAX_DEPTH - ARGS_LEVEL + 1)
    parse_flowrun(manifest([call("a", args=at_limit)]))
    with pytest.raises(ManifestError) as info:
        parse_flowrun(manifest([call("a", kwargs={"k": deep(5000)})]), "FlowRun ns/f")
    assert info.value.problems == [f"tasks[0] (a).kwargs: nested deeper than {MAX_DEPTH} levels"]


BOMB = """
        - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
        - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
        - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
        - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
        - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
        - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
        - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
        - &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
        - &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]"""


def test_an_alias_bomb_is_rejected_at_once(tmp_path: Path) -> None:
    text = task_with_args(BOMB)
    assert len(text) < 1000  # 9**9 strings in under a kilobyte
    started = time.monotonic()
    problems = file_problems(tmp_path, text)
    assert time.monotonic() - started < 5  # the bound is checked per alias, not by walking
    assert problems == [
        f"tasks[0] (a).args: more than {MAX_VALUES:,} values "
        "(counting each use of a YAML alias in full)"
    ]


def test_aliases_within_the_bound_expand_as_usual(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(
        task_with_args(
            "[*x, *x, {<<: *m, b: 2}]", before="  parameters: {x: &x [1, 2], m: &m {a: 1}}\n"
        )
    )
    flow = load_flowrun(path)
    assert flow.spec.tasks[0].args == [[1, 2], [1, 2], {"a": 1, "b": 2}]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("&r [1, *r]", "a YAML alias inside its own anchor"),
        # an alias to a deep value, used deep down: the expansion is too deep
        (
            f"[&d {nested(60)}, {nested(45)[:45]}*d{nested(45)[45:]}]",
            f"nested deeper than {MAX_DEPTH} levels",
        ),
    ],
)
def test_aliases_that_break_a_bound(tmp_path: Path, args: str, expected: str) -> None:
    assert file_problems(tmp_path, task_with_args(args)) == [f"tasks[0] (a).args: {expected}"]


def test_an_alias_to_a_value_dropped_for_depth_is_reported_where_it_is_used(tmp_path: Path) -> None:
    deep = nested(MAX_DEPTH)
    text = task_with_args("[*d]", before=f"  parameters: {{d: &d {deep}}}\n")
    assert file_problems(tmp_path, text) == [
        f"spec.parameters.d: nested deeper than {MAX_DEPTH} levels",
        f"tasks[0] (a).args: nested deeper than {MAX_DEPTH} levels",
    ]


def test_json_manifests_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(manifest([call("a", args=[{"x": [1]}])])))
    assert load_flowrun(path).spec.tasks[0].args == [{"x": [1]}]


def test_load_yaml_keeps_the_bounds() -> None:
    assert load_yaml("[1, {a: b}]") == [1, {"a": "b"}]
    assert "Overflow" in repr(load_yaml(nested(MAX_DEPTH + 1)))
