"""Careless or hostile input, as a new user types it: exit code 2 and one clear problem
per line naming the file (and the task and field), never a traceback, never a hang.

Every case runs the installed ``daskflow`` command; no cluster ever starts for bad input.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.model.test_input_bounds import BOMB

from .conftest import UserProject, assert_clean_exit

HANG_GUARD = 20  # seconds; a minute was the symptom, well under a second is the fix


def invalid(proc_stderr: str, source: str, *problems: str) -> None:
    """stderr is exactly the report: the source is invalid, then these problems."""
    lines = [f"{source} is invalid:", *(f"  - {p}" for p in problems)]
    assert proc_stderr.splitlines() == lines, proc_stderr


def write_bytes(project: UserProject, name: str, data: bytes) -> Path:
    path = project.root / name
    path.write_bytes(data)
    return path


GOOD = (
    b"apiVersion: daskflow.io/v1alpha1\nkind: FlowRun\nmetadata: {name: f}\n"
    b"spec:\n  tasks:\n    - name: a\n      call: 'mytasks:f'\n      args: ARGS\n"
)


def manifest_bytes(args: str) -> bytes:
    return GOOD.replace(b"ARGS", args.encode())


# -- files that cannot be read as a manifest --------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        (
            "latin1.yaml",
            manifest_bytes("[x]").replace(b"[x]", b"[caf\xe9]"),
            "not UTF-8 text: byte 0xe9 on line 8",
        ),
        # libyaml stops at 1,000 levels; the column depends on it, the rest does not
        (
            "deep.yaml",
            manifest_bytes("[" * 5000 + "]" * 5000),
            "not valid YAML: exceeded maximum nesting depth at line 8, column ",
        ),
        ("empty.yaml", b"", "no FlowRun in the file: it is empty"),
        ("list.yaml", b"- a\n- b\n", "(root): a FlowRun manifest must be a mapping"),
        (
            "two.yaml",
            manifest_bytes("[1]") + b"---\n" + manifest_bytes("[2]"),
            "expected exactly one FlowRun document, found 2",
        ),
    ],
)
def test_unreadable_files(
    project: UserProject, command: str, name: str, data: bytes, problem: str
) -> None:
    write_bytes(project, name, data)
    proc = project.daskflow(command, name)
    assert_clean_exit(proc, codes=(2,))
    head, line = proc.stderr.splitlines()
    assert head == f"{name} is invalid:"
    assert line.startswith(f"  - {problem}")
    assert proc.stdout == ""


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_directory_or_a_missing_file(project: UserProject, command: str) -> None:
    (project.root / "flows").mkdir()
    for name, why in (("flows", "Is a directory"), ("nope.yaml", "No such file or directory")):
        proc = project.daskflow(command, name)
        assert_clean_exit(proc, codes=(2,))
        invalid(proc.stderr, name, f"cannot read file: {why}")


def test_wrong_api_version_and_kind(project: UserProject) -> None:
    path = project.root / "wf.yaml"
    path.write_bytes(
        manifest_bytes("[1]")
        .replace(b"daskflow.io/v1alpha1", b"argoproj.io/v1alpha1")
        .replace(b"FlowRun", b"Workflow")
    )
    proc = project.daskflow("validate", "wf.yaml")
    assert_clean_exit(proc, codes=(2,))
    invalid(
        proc.stderr,
        "wf.yaml",
        "apiVersion: Input should be 'daskflow.io/v1alpha1'",
        "kind: Input should be 'FlowRun'",
    )


def test_nesting_too_deep_names_the_task_and_field(project: UserProject) -> None:
    write_bytes(project, "deep.yaml", manifest_bytes("[" * 200 + "]" * 200))
    proc = project.daskflow("validate", "deep.yaml")
    assert_clean_exit(proc, codes=(2,))
    invalid(proc.stderr, "deep.yaml", "tasks[0] (a).args: nested deeper than 100 levels")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_yaml_alias_bomb_is_rejected_quickly(project: UserProject, command: str) -> None:
    data = manifest_bytes(BOMB)
    assert len(data) < 800
    write_bytes(project, "bomb.yaml", data)
    started = time.monotonic()
    proc = project.daskflow(command, "bomb.yaml", timeout=HANG_GUARD)
    assert time.monotonic() - started < HANG_GUARD
    assert_clean_exit(proc, codes=(2,))
    invalid(
        proc.stderr,
        "bomb.yaml",
        "tasks[0] (a).args: more than 250,000 values (counting each use of a YAML alias in full)",
    )


# -- references, when, --set, --address ----------------------------------------------------


def test_typos_in_references_name_the_task_and_field(project: UserProject) -> None:
    project.manifest(
        "typos",
        [
            {"name": "src", "command": ["echo", "$(param.p)"]},
            {"name": "load", "call": "mytasks:f", "args": ["$(tasks.src.output)"]},
            {"name": "more", "call": "mytasks:f", "kwargs": {"x": "$(tasks.SRC.result)"}},
            {"name": "flag", "command": ["true"], "when": "$(params.z) == 1"},
        ],
        parameters={"p": 1, "z": 0},
    )
    proc = project.daskflow("validate", "typos.yaml")
    assert_clean_exit(proc, codes=(2,))
    invalid(
        proc.stderr,
        "typos.yaml",
        'tasks[0] (src).command[1]: "$(param.p)" is not a valid reference: '
        "did you mean $(params.p)?",
        'tasks[1] (load).args[0]: "$(tasks.src.output)" is not a valid reference: '
        "did you mean $(tasks.src.result)?",
        'tasks[2] (more).kwargs.x: "$(tasks.SRC.result)" is not a valid reference: '
        "did you mean $(tasks.src.result)?",
        'tasks[3] (flag).when: "$(params.z) == 1" is an expression, which daskflow does not '
        "evaluate: when must be one reference alone or a literal, and the task runs if its "
        'value is true (compute a condition in a task and use "$(tasks.NAME.result)")',
    )


def test_shell_command_substitution_still_works(project: UserProject) -> None:
    (project.root / "file.txt").write_text("from-file\n")
    project.manifest(
        "shell",
        [
            {
                "name": "sh",
                "command": ["sh", "-c", "echo $(cat file.txt) $(ls file.txt | wc -l) $(params.w)"],
            }
        ],
        parameters={"w": "word"},
        cluster={"workers": 1},
    )
    proc = project.daskflow("run", "shell.yaml", "-o", "json")
    assert_clean_exit(proc, codes=(0,))
    assert '"result": "from-file 1 word"' in proc.stdout


@pytest.mark.parametrize(
    ("parameters", "known"), [({"p": 1, "z": 0}, "its parameters: p, z"), (None, "it has none")]
)
def test_an_unknown_set_name_is_an_error(
    project: UserProject, parameters: dict[str, int] | None, known: str
) -> None:
    project.manifest("f", [{"name": "a", "command": ["true"]}], parameters=parameters)
    proc = project.daskflow("run", "f.yaml", "--set", "pp=2")
    assert_clean_exit(proc, codes=(2,))
    invalid(proc.stderr, "command line", f'--set pp: f.yaml declares no parameter "pp" ({known})')
    assert proc.stdout == ""


def test_a_set_value_nested_too_deep_names_the_parameter(project: UserProject) -> None:
    project.manifest("f", [{"name": "a", "command": ["true"]}], parameters={"p": 1})
    proc = project.daskflow("run", "f.yaml", "--set", "p=" + "[" * 150 + "]" * 150)
    assert_clean_exit(proc, codes=(2,))
    invalid(proc.stderr, "f.yaml", "spec.parameters.p: nested deeper than 100 levels")


def test_a_set_value_that_is_not_utf8(project: UserProject) -> None:
    project.manifest("f", [{"name": "a", "command": ["true"]}], parameters={"p": 1})
    proc = project.daskflow("run", "f.yaml", "--set", os.fsdecode(b"p=caf\xe9"))
    assert_clean_exit(proc, codes=(2,))
    invalid(proc.stderr, "command line", "--set p: not UTF-8 text")


@pytest.mark.parametrize("address", ["not-an-address", "tcp://host", "http://h:8786"])
def test_a_bad_address_is_an_error(project: UserProject, address: str) -> None:
    project.manifest("f", [{"name": "a", "command": ["true"]}])
    proc = project.daskflow("run", "f.yaml", "--address", address)
    assert_clean_exit(proc, codes=(2,))
    invalid(
        proc.stderr,
        "command line",
        f"--address {address!r}: expected a scheduler address such as tcp://HOST:PORT",
    )
    assert "never awaited" not in proc.stderr
