"""The ``$(...)`` reference language used inside FlowRun manifests.

``$(params.NAME)``, ``$(tasks.NAME.result)``, ``$(item)``, ``$(flowrun.name)`` and
``$(flowrun.namespace)`` are references. A string that is exactly one reference takes
the referenced value as it is; a reference inside a longer string is formatted into it
(strings as they are, other values as JSON). The syntax survives being embedded in Helm
charts, unlike ``{{ }}``.

Shell command substitution uses the same ``$(``, so a typo in a reference would silently
reach the task as text. The rule that tells them apart: ``$(`` starts a reference when it
is followed by a dotted name up to ``)`` (``$(a.b)``, ``$(a.b.c)``; spaces around the name
allowed), or by one of the words ``params``, ``param``, ``parameters``, ``tasks``, ``task``,
``item``, ``items``, ``flowrun`` (any case) and then ``.``, ``)`` or the end of the string.
Such text must be a valid reference (:func:`bad_references` finds the ones that are not;
validation rejects them). Anything else, ``$(date +%s)``, ``$(ls | wc -l)``,
``$(cat file.txt)``, ``$(./run.sh)``, is left alone for the shell.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

REFERENCE = re.compile(
    r"\$\((?:"
    r"params\.(?P<param>[A-Za-z_][A-Za-z0-9_-]*)"
    r"|tasks\.(?P<task>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)\.result"
    r"|(?P<item>item)"
    r"|flowrun\.(?P<flowrun>name|namespace)"
    r")\)"
)

LOOKS_LIKE_REFERENCE = re.compile(
    r"\$\(\s*(?:"
    r"[A-Za-z_][\w-]*(?:\.[\w-]*)+\s*\)"
    r"|(?i:params?|parameters?|tasks?|items?|flowruns?)\s*(?=[.)]|$)"
    r")"
)
REFERENCE_FORMS = (
    "$(params.NAME), $(tasks.NAME.result), $(item), $(flowrun.name), $(flowrun.namespace)"
)
_ROOTS = {
    "params": "params",
    "param": "params",
    "parameters": "params",
    "tasks": "tasks",
    "task": "tasks",
    "item": "item",
    "items": "item",
    "flowrun": "flowrun",
}


@dataclass(frozen=True)
class Ref:
    """One parsed reference: ``kind`` is params, tasks, item or flowrun."""

    kind: str
    name: str = ""


def _ref(match: re.Match[str]) -> Ref:
    for kind in ("param", "task", "flowrun"):
        if match.group(kind) is not None:
            return Ref({"param": "params", "task": "tasks"}.get(kind, kind), match.group(kind))
    return Ref("item")


def iter_refs(value: Any) -> Iterator[Ref]:
    """Every reference anywhere inside a JSON-like value."""
    if isinstance(value, str):
        for match in REFERENCE.finditer(value):
            yield _ref(match)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from iter_refs(key)
            yield from iter_refs(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_refs(item)


def iter_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string inside a JSON-like value, mapping keys included, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from iter_strings(key, path)
            yield from iter_strings(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from iter_strings(item, f"{path}[{i}]")


def bad_references(text: str) -> Iterator[str]:
    """Each part of ``text`` that starts like a reference (see the module's rule) but is
    not a valid one, from its ``$(`` to its ``)`` (or to the next ``$(`` or line end)."""
    for match in LOOKS_LIKE_REFERENCE.finditer(text):
        if REFERENCE.match(text, match.start()) is None:
            span = re.match(r"\$\([^)\n]*?(?:\)|(?=\$\()|$)", text[match.start() :], re.M)
            yield span.group(0).rstrip() if span else text[match.start() :]


def suggest(bad: str, params: Collection[str], tasks: Collection[str]) -> str | None:
    """The valid reference a bad one most likely meant, given the flow's names; or None."""
    parts = [p.strip() for p in bad[2:].removesuffix(")").split(".")]
    root = _closest(parts[0].lower(), _ROOTS)
    rest = [p for p in parts[1:] if p]
    if root is None:
        return None
    kind = _ROOTS[root]
    if kind == "item":
        return "$(item)"
    if kind == "flowrun":
        field = _closest(rest[0].lower(), ("name", "namespace")) if rest else None
        return f"$(flowrun.{field})" if field else None
    if kind == "params":
        name = _closest(rest[0], params) if rest else None
        return f"$(params.{name})" if name else None
    name = _closest(rest[0].lower(), tasks) if rest else None
    return f"$(tasks.{name}.result)" if name else None


def _closest(word: str, options: Collection[str]) -> str | None:
    """``word`` if it is an option, else the option it most resembles, case aside."""
    if word in options:
        return word
    folded = {option.lower(): option for option in options}
    found = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.7)
    return folded[found[0]] if found else None


def format_value(value: Any) -> str:
    """How a value reads inside a longer string: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def substitute(
    value: Any, lookup: Callable[[Ref], Any], kinds: frozenset[str] | None = None
) -> Any:
    """Replace the references in ``value`` whose kind is in ``kinds`` (all when None).

    ``lookup`` maps a reference to its value. Containers are rebuilt, never mutated.
    """

    def wanted(ref: Ref) -> bool:
        return kinds is None or ref.kind in kinds

    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole is not None:
            ref = _ref(whole)
            return lookup(ref) if wanted(ref) else value

        def repl(match: re.Match[str]) -> str:
            ref = _ref(match)
            return format_value(lookup(ref)) if wanted(ref) else match.group(0)

        return REFERENCE.sub(repl, value)
    if isinstance(value, Mapping):
        return {_key(k, lookup, kinds): substitute(v, lookup, kinds) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(item, lookup, kinds) for item in value]
    return value


def _key(key: Any, lookup: Callable[[Ref], Any], kinds: frozenset[str] | None) -> Any:
    """A mapping key with its references replaced; always a string if it was one."""
    if not isinstance(key, str):
        return key
    out = substitute(key, lookup, kinds)
    return out if isinstance(out, str) else format_value(out)
