"""Turn a manifest into a :class:`FlowRun`, or into one clear message naming every problem.

Validation runs before any cluster starts. Each problem names the task and the field, as
``tasks[1] (load).dependsOn: unknown task "extrct"``, and all problems are reported at
once: a user fixes a manifest in one round trip, never by reading a traceback.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from .graph import REFERENCING_FIELDS, find_cycle, referenced_tasks, task_dependencies
from .reader import MAX_DEPTH, TOO_DEEP, Overflow, UnreadableManifest, read_manifest
from .refs import REFERENCE, REFERENCE_FORMS, bad_references, iter_refs, iter_strings, suggest
from .spec import FlowRun, TaskSpec

# A `when` that holds one of these, or a reference among other text, is an expression.
_OPERATOR = re.compile(r"==|!=|<|>|&&|\|\|")


class ManifestError(ValueError):
    """An invalid manifest; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "manifest") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is invalid:\n{lines}")


def _task_label(raw: Mapping[str, Any], index: int) -> str:
    tasks = raw.get("spec", {}).get("tasks") if isinstance(raw.get("spec"), Mapping) else None
    name = None
    if isinstance(tasks, list) and index < len(tasks) and isinstance(tasks[index], Mapping):
        name = tasks[index].get("name")
    return f"tasks[{index}] ({name})" if isinstance(name, str) else f"tasks[{index}]"


def _format_loc(raw: Mapping[str, Any], loc: tuple[int | str, ...]) -> str:
    parts = list(loc)
    if parts[:2] == ["spec", "tasks"] and len(parts) > 2 and isinstance(parts[2], int):
        head, parts = _task_label(raw, parts[2]), parts[3:]
    elif parts and parts[0] == "spec":
        head, parts = "spec", parts[1:]
    else:
        head = ""
    out = head
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


# Names pydantic puts in an error's location for the member of a union that failed.
_UNION_TAGS = frozenset({"function-after", "str", "float", "int", "bool"})


def _field_names(model: type[BaseModel]) -> set[str]:
    """The manifest's spelling of every field of ``model`` and of the models inside it."""
    names: set[str] = set()
    for field in model.model_fields.values():
        names.add(field.alias or "")
        for arg in (field.annotation, *get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _field_names(arg)
    return names - {""}


FIELD_NAMES = frozenset(_field_names(FlowRun))


def _did_you_mean(name: str, known: frozenset[str]) -> str:
    close = [k for k in known if k.lower() == name.lower()]
    close = close or difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    close = close or [k for k in known if k.startswith(name)]  # timeout: timeoutSeconds
    if len(close) > 1:
        return ""
    return f" (did you mean {close[0]}?)" if close else ""


def _pydantic_problems(raw: Mapping[str, Any], err: ValidationError) -> list[str]:
    problems = []
    for item in err.errors(include_url=False):
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))
        )
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field" + _did_you_mean(str(loc[-1]), FIELD_NAMES)
        elif item["type"] == "string_pattern_mismatch" and loc[-1:] == ("call",):
            msg = 'must look like "module:attr" or "module:Class.attr"'
        elif item["type"] == "string_pattern_mismatch" and loc[-1:] == ("name",):
            suggestion = re.sub(r"[^a-z0-9]+", "-", str(item["input"]).lower()).strip("-")
            msg = 'must be lowercase letters, digits and "-" (a DNS label)'
            msg += f', such as "{suggestion}"' if suggestion else ""
        elif loc[-1:] == ("map",) and item["type"] in ("list_type", "string_type"):
            msg = 'must be a list or exactly one reference such as "$(tasks.NAME.result)"'
        else:
            msg = re.sub(r" or instance of \w+$", "", msg)
        problems.append(f"{_format_loc(raw, loc)}: {msg}")
    return list(dict.fromkeys(problems))


def semantic_problems(flow: FlowRun) -> list[str]:
    """Checks that need the whole flow: names, references, cycles, call XOR command."""
    return _semantic(list(enumerate(flow.spec.tasks)), flow.spec.parameters)


def _semantic(
    tasks: list[tuple[int, TaskSpec]],
    params: Mapping[str, Any],
    names: Mapping[str, int] | None = None,
) -> list[str]:
    """The checks of :func:`semantic_problems` on the tasks that parsed, numbered as in the
    manifest; ``names`` maps every task name of the manifest to its first index (tasks that
    did not parse included), so that a reference to one of those is not reported unknown."""
    problems: list[str] = []
    index = dict(names) if names is not None else {}
    if names is None:
        for i, t in tasks:
            index.setdefault(t.name, i)
    by_index = dict(tasks)

    def label(i: int, task: TaskSpec) -> str:
        return f"tasks[{i}] ({task.name})"

    for i, task in tasks:
        where = label(i, task)
        if index[task.name] != i:
            problems.append(f'{where}.name: duplicate task name "{task.name}"')
        if (task.call is None) == (task.command is None):
            problems.append(f"{where}.call: set exactly one of call or command")
        if task.command is None and task.env:
            problems.append(f"{where}.env: only command tasks take env")
        for dep in task.depends_on:
            if dep not in index:
                problems.append(f'{where}.dependsOn: unknown task "{dep}"')
        problems += _reference_problems(where, task, params, index)
        for field in REFERENCING_FIELDS:
            for ref in iter_refs(getattr(task, field)):
                if ref.kind == "tasks" and ref.name not in index:
                    problems.append(f'{where}.{_alias(field)}: unknown task "{ref.name}"')
                elif ref.kind == "params" and ref.name not in params:
                    problems.append(f'{where}.{_alias(field)}: unknown parameter "{ref.name}"')
                elif ref.kind == "item" and (task.map is None or field in ("map", "when")):
                    why = "a task without map" if task.map is None else f"{field}"
                    problems.append(f"{where}.{_alias(field)}: $(item) cannot be used in {why}")
        if isinstance(task.map, str) and not any(bad_references(task.map)):
            source = next(iter_refs(task.map)) if REFERENCE.fullmatch(task.map) else None
            if source is not None and source.kind == "item":
                pass  # reported above
            elif source is None or source.kind not in ("params", "tasks"):
                problems.append(
                    f"{where}.map: must be a list or exactly one reference such as "
                    '"$(tasks.NAME.result)" or "$(params.NAME)"'
                )
            elif (
                source.kind == "params"
                and source.name in params
                and not isinstance(params[source.name], list)
            ):
                problems.append(f'{where}.map: parameter "{source.name}" is not a list')
    known = set(index)
    graph = {  # first task of each name only: a duplicate is reported above
        t.name: [d for d in task_dependencies(t) if d in known]
        for i, t in tasks
        if index[t.name] == i
    }
    for i, task in tasks:
        if index[task.name] == i and task.name in graph[task.name]:
            field = _edge_field(task, task.name)
            problems.append(f"{label(i, task)}.{field}: task depends on itself")
            graph[task.name].remove(task.name)
    cycle = find_cycle(graph)
    if cycle:
        first = by_index[index[cycle[0]]]
        steps = ", ".join(f"{a} depends on {b}" for a, b in itertools.pairwise(cycle))
        problems.append(
            f"{label(index[first.name], first)}.{_edge_field(first, cycle[1])}: "
            f"dependency cycle: {steps}"
        )
    return list(dict.fromkeys(problems))


def _reference_problems(
    where: str, task: TaskSpec, params: Mapping[str, Any], tasks: Mapping[str, int]
) -> list[str]:
    """Text that starts like a reference but is not one, and expressions in ``when``."""
    problems = []
    for field in REFERENCING_FIELDS:
        for path, text in iter_strings(getattr(task, field), _alias(field)):
            for bad in bad_references(text):
                meant = suggest(bad, params, tasks)
                hint = f"did you mean {meant}?" if meant else f"references are {REFERENCE_FORMS}"
                problems.append(f'{where}.{path}: "{bad}" is not a valid reference: {hint}')
    when = task.when
    if isinstance(when, list | dict) or (
        isinstance(when, str)
        and not REFERENCE.fullmatch(when)
        and list(bad_references(when)) != [when]  # one bad reference: reported above
        and ("$(" in when or _OPERATOR.search(when))
    ):
        problems.append(
            f"{where}.when: {json.dumps(when, ensure_ascii=False)} is an expression, which "
            "daskflow does not evaluate: when must be one reference alone or a literal, and "
            "the task runs if its value is true (compute a condition in a task and use "
            '"$(tasks.NAME.result)")'
        )
    return problems


def _edge_field(task: TaskSpec, dep: str) -> str:
    """The field through which ``task`` depends on ``dep`` (a reference wins)."""
    for field in REFERENCING_FIELDS:
        if dep in referenced_tasks(task, (field,)):
            return _alias(field)
    return "dependsOn"


def _alias(field: str) -> str:
    return {"depends_on": "dependsOn"}.get(field, field)


def parse_flowrun(raw: Any, source: str = "manifest") -> FlowRun:
    """Validate a decoded manifest and return the FlowRun, or raise :class:`ManifestError`."""
    if not isinstance(raw, Mapping):
        raise ManifestError(["(root): a FlowRun manifest must be a mapping"], source)
    too_big = _bound_problems(raw)
    if too_big:  # check nothing else: every other check walks these values
        raise ManifestError(too_big, source)
    try:
        flow = FlowRun.model_validate(raw)
    except ValidationError as err:
        problems = _pydantic_problems(raw, err) + _partial_semantic_problems(raw)
        raise ManifestError(list(dict.fromkeys(problems)), source) from None
    problems = semantic_problems(flow)
    if problems:
        raise ManifestError(problems, source)
    return flow


def _bound_problems(raw: Mapping[str, Any]) -> list[str]:
    """Values nested deeper than MAX_DEPTH, or that the file reader replaced by an
    :class:`Overflow`; each named by the field it is in."""
    problems = []
    stack: list[tuple[Any, tuple[int | str, ...], int]] = [(raw, (), 1)]
    while stack:
        value, loc, level = stack.pop()
        why = None
        if isinstance(value, Overflow):
            why = value.why
        elif isinstance(value, Mapping | list) and level > MAX_DEPTH:
            why = TOO_DEEP
        elif isinstance(value, Mapping):
            stack += [(v, (*loc, str(k)), level + 1) for k, v in reversed(list(value.items()))]
            stack += [(k, loc, level) for k in value if isinstance(k, Overflow)]
        elif isinstance(value, list):
            stack += [(v, (*loc, i), level + 1) for i, v in reversed(list(enumerate(value)))]
        if why is not None:
            field = loc[:4] if loc[:2] == ("spec", "tasks") else loc[:3]
            problems.append(f"{_format_loc(raw, field)}: {why}")
    return list(dict.fromkeys(problems))


def _partial_semantic_problems(raw: Mapping[str, Any]) -> list[str]:
    """The whole-flow checks on the tasks that parse, when others do not: so that one run
    of the validator reports every problem it can find."""
    spec = raw.get("spec")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("tasks"), list):
        return []
    params = spec.get("parameters")
    names: dict[str, int] = {}
    tasks: list[tuple[int, TaskSpec]] = []
    for i, item in enumerate(spec["tasks"]):
        if not isinstance(item, Mapping):
            continue
        if isinstance(item.get("name"), str):
            names.setdefault(item["name"], i)
        try:
            tasks.append((i, TaskSpec.model_validate(item)))
        except ValidationError:
            continue
    if not isinstance(params, Mapping):  # reported by pydantic; skip parameter checks
        return _semantic(tasks, _AnyParams(), names)
    return _semantic(tasks, params, names)


class _AnyParams(dict[str, Any]):
    """Parameters that could not be read: every name is taken to exist, and to be a list."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        return []


def load_flowrun(path: str | Path, overrides: Mapping[str, Any] | None = None) -> FlowRun:
    """Read one FlowRun from a YAML or JSON file; ``overrides`` replace parameters, each of
    which the manifest must declare (a misspelt ``--set`` name is an error)."""
    return parse_flowrun(load_manifest(path, overrides), str(path))


def load_manifest(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Any:
    """The manifest of a file as read, with ``overrides`` in ``spec.parameters`` (checked
    as :func:`load_flowrun` says, the rest unchecked: see :func:`parse_flowrun`)."""
    source = str(path)
    try:
        raw = read_manifest(path)
    except UnreadableManifest as err:
        raise ManifestError([str(err)], source) from None
    spec = raw.get("spec") if isinstance(raw, dict) else None
    declared = spec.get("parameters", {}) if isinstance(spec, dict) else None
    if overrides and isinstance(spec, dict) and isinstance(declared, Mapping | None):
        declared = declared or {}
        names = f"its parameters: {', '.join(map(str, declared))}" if declared else "it has none"
        unknown = [
            f'--set {name}: {source} declares no parameter "{name}" ({names})'
            for name in overrides
            if name not in declared
        ]
        if unknown:
            raise ManifestError(unknown, "command line")
        spec["parameters"] = {**declared, **overrides}
    return raw
