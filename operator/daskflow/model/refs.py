"""The ``$(...)`` reference language used inside FlowRun manifests.

``$(params.NAME)``, ``$(tasks.NAME.result)``, ``$(item)``, ``$(flowrun.name)`` and
``$(flowrun.namespace)`` are references; anything else that looks like ``$(...)`` (shell
command substitution, say) is left alone. A string that is exactly one reference takes
the referenced value as it is; a reference inside a longer string is formatted into it
(strings as they are, other values as JSON). The syntax survives being embedded in Helm
charts, unlike ``{{ }}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
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
