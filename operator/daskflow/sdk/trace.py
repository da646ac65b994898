"""Tracing a flow body: task calls record nodes of a graph instead of running.

Inside a ``@flow`` function or a ``with Flow(...)`` block, calling a task appends a
:class:`Node` to the current :class:`Graph` and returns a :class:`Result`, a placeholder
for a value that exists only when the flow runs on Dask. Flow parameters are
:class:`Param` placeholders. Where a placeholder is passed (in arguments, nested in lists
and dicts, in ``when``, in f-strings) it becomes a manifest reference,
``$(tasks.NAME.result)`` or ``$(params.NAME)``: :func:`to_manifest` does that conversion.

A placeholder has no Python value during tracing, so using it as one (``if files:``,
``len(files)``, ``for f in files``, ``files[0]``, ``n + 1``) raises
:class:`FlowDefinitionError` at once, saying what to write instead; without that, a
truthiness test would silently pick one branch for every run.
"""

from __future__ import annotations

import contextvars
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

R = TypeVar("R", covariant=True)

# The graph being traced; None outside a flow body (a task called there simply runs).
_CURRENT: contextvars.ContextVar[Graph | None] = contextvars.ContextVar(
    "daskflow_trace", default=None
)
_SDK_DIR = str(Path(__file__).parent)


class FlowDefinitionError(ValueError):
    """A flow that cannot become a valid FlowRun; the message says how to fix it."""


def user_location() -> str:
    """`` (at file.py:12)`` for the innermost frame outside this package: where in the
    user's code the problem is, since ``daskflow export`` shows no traceback."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_SDK_DIR):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return ""
    return f" (at {Path(frame.f_code.co_filename).name}:{frame.f_lineno})"


def dns_name(text: str, limit: int = 63) -> str:
    """``text`` as a DNS label (a task name, a Kubernetes object name): lowercase letters,
    digits and ``-``, at most ``limit`` characters (``extract_data`` -> ``extract-data``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-")


class _Placeholder:
    """What tracing hands around instead of a value; see the module's docstring."""

    __slots__ = ()

    def _owner(self) -> Graph:
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    def reference(self) -> str:
        raise NotImplementedError

    def _misuse(self, what: str, fix: str) -> NoReturn:
        raise FlowDefinitionError(
            f"{what} {self._describe()}{user_location()}: in a flow body, task results and "
            f"parameters are placeholders for values that exist only when the flow runs. "
            f"{fix}"
        )

    def __str__(self) -> str:  # f"{workdir}/out": a reference inside a longer string
        return self.reference()

    def __format__(self, spec: str) -> str:
        if spec:
            self._misuse(f"formatting with {spec!r}", "Format the value inside a task.")
        return self.reference()

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        self._misuse("comparing", "Compare in a task and pass its result as when=.")


_BOOL_FIX = (
    "To run a task only if it is true, pass it as when= (notify(n, when=publish)); to test "
    "something else, compute the condition in a task and pass its result as when=."
)
_MISUSES = {
    "__bool__": ("`if`, `and`, `or`, `not` or bool() on", _BOOL_FIX),
    "__len__": ("len() of", "Compute the length in a task."),
    "__iter__": ("iterating over", "To run a task once per item, use its .map: t.map(files)."),
    "__contains__": ("`in` on", "Test membership in a task."),
    "__getitem__": ("indexing", "Pass the whole value to a task that picks the part it needs."),
}
_ARITHMETIC = [
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "add",
    "radd",
    "sub",
    "rsub",
    "mul",
    "rmul",
    "truediv",
    "rtruediv",
    "floordiv",
    "rfloordiv",
    "mod",
    "rmod",
    "pow",
    "rpow",
    "neg",
    "pos",
    "abs",
    "invert",
    "and",
    "rand",
    "or",
    "ror",
    "xor",
    "rxor",
    "int",
    "float",
    "index",
    "complex",
    "round",
]


def _install_misuses() -> None:
    """The operations a placeholder refuses. Set here, not in the class body, so that a
    type checker rejects them too (``len(files)`` is a mypy error in the user's module)."""

    def refuse(what: str, fix: str) -> Any:
        def method(self: _Placeholder, *_: object) -> NoReturn:
            self._misuse(what, fix)

        return method

    for name, (what, fix) in _MISUSES.items():
        setattr(_Placeholder, name, refuse(what, fix))
    for name in _ARITHMETIC:
        setattr(
            _Placeholder,
            f"__{name}__",
            refuse("arithmetic or comparison on", "Compute it in a task."),
        )

    def getattr_(self: _Placeholder, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        self._misuse(f"attribute .{attr} of", "Read the attribute in a task.")

    setattr(_Placeholder, "__getattr__", getattr_)  # noqa: B010 (hidden from type checkers)


_install_misuses()


class Param(_Placeholder):
    """A flow parameter while the flow is traced: ``$(params.NAME)`` where it is passed."""

    __slots__ = ("graph", "name")

    def __init__(self, graph: Graph, name: str) -> None:
        self.graph = graph
        self.name = name

    def _owner(self) -> Graph:
        return self.graph

    def _describe(self) -> str:
        return f"parameter {self.name!r}"

    def reference(self) -> str:
        return f"$(params.{self.name})"

    def __repr__(self) -> str:
        return f"Param({self.reference()!r})"


class Result(_Placeholder, Generic[R]):
    """The result of a task call while the flow is traced: ``$(tasks.NAME.result)`` where it
    is passed. ``R`` is the task function's return type (a mapped task's: a list of it)."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    @property
    def name(self) -> str:
        """The name of the task in the manifest."""
        name: str = self.node.name
        return name

    def after(self, *upstream: Result[Any]) -> Result[R]:
        """Run this task only after ``upstream`` tasks ended (``dependsOn``), without
        passing their values; returns the same result, so ``load(x).after(check)`` reads
        as it runs."""
        for up in upstream:
            if not isinstance(up, Result):
                raise FlowDefinitionError(
                    f"task {self.name!r}: .after() takes task results, got "
                    f"{type(up).__name__}{user_location()}"
                )
            self.node.graph.check_own(up, f"task {self.name!r}: .after()")
            self.node.depends_on.append(up.node)
        return self

    def _owner(self) -> Graph:
        return self.node.graph

    def _describe(self) -> str:
        return f"the result of task {self.name!r}"

    def reference(self) -> str:
        return f"$(tasks.{self.name}.result)"

    def __repr__(self) -> str:
        return f"Result({self.reference()!r})"


@dataclass(eq=False)
class Node:
    """One task call: the FlowRun task it becomes, with placeholders still in its values."""

    graph: Graph
    name: str
    fields: dict[str, Any]  # manifest fields: call or command, retries, timeoutSeconds...
    location: str = ""  # " (at file.py:12)": where the flow body made the call
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    depends_on: list[Node] = field(default_factory=list)


class Graph:
    """The tasks and parameters a flow body declared, in call order."""

    def __init__(self, flow_name: str, owner: object = None) -> None:
        self.flow_name = flow_name
        self.owner = owner  # the Flow being defined by a `with Flow(...)` block
        self.nodes: list[Node] = []
        self.params: dict[str, Param] = {}
        self._taken: dict[str, int] = {}

    def param(self, name: str) -> Param:
        return self.params.setdefault(name, Param(self, name))

    def add(self, base: str, fields: dict[str, Any]) -> Node:
        """A new node named ``base``, or ``base-2``, ``base-3``... if that name is taken
        (the same task called again)."""
        name, n = base, self._taken.get(base, 1)
        while name in self._taken:
            n += 1
            suffix = f"-{n}"
            name = base[: 63 - len(suffix)].rstrip("-") + suffix
        self._taken[base] = n
        self._taken.setdefault(name, 1)
        node = Node(self, name, fields, user_location())
        self.nodes.append(node)
        return node

    def check_own(self, value: _Placeholder, where: str) -> None:
        """``value`` must come from this graph: a result of another flow has no name here."""
        owner = value._owner()
        if owner is not self:
            raise FlowDefinitionError(
                f"{where}: {value._describe()} belongs to flow {owner.flow_name!r}, not "
                f"{self.flow_name!r}{user_location()}: a flow uses only its own task results "
                "and parameters"
            )


def current() -> Graph | None:
    """The graph being traced in this context, if any."""
    return _CURRENT.get()


class Tracing:
    """``with Tracing(graph):`` makes task calls record into ``graph``."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._token: contextvars.Token[Graph | None] | None = None

    def __enter__(self) -> Graph:
        if _CURRENT.get() is not None:
            raise FlowDefinitionError(
                f"flow {self.graph.flow_name!r} is being defined inside flow "
                f"{_CURRENT.get().flow_name!r}{user_location()}: "  # type: ignore[union-attr]
                "flows do not nest; call the tasks themselves"
            )
        self._token = _CURRENT.set(self.graph)
        return self.graph

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _CURRENT.reset(self._token)


_JSON_SCALARS = (str, int, bool, type(None))


class _Item:
    """Where a mapped task's item goes among its arguments: ``$(item)``."""

    def __repr__(self) -> str:
        return "$(item)"


ITEM = _Item()


def to_manifest(value: Any, graph: Graph, where: str, at: str | None = None) -> Any:
    """``value`` as manifest JSON: placeholders become references, tuples lists. Anything
    that JSON cannot carry is an error naming ``where`` (``tasks[2] (load).args[0]``) and
    ``at``, where the value was given (default: the caller's caller)."""
    at = user_location() if at is None else at
    if isinstance(value, _Placeholder):
        graph.check_own(value, where)
        return value.reference()
    if isinstance(value, _JSON_SCALARS):
        return value
    if value is ITEM:
        return "$(item)"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FlowDefinitionError(
                f"{where}: {value} is not a JSON number{at}: pass it as a string"
            )
        return value
    if isinstance(value, list | tuple):
        return [to_manifest(v, graph, f"{where}[{i}]", at) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str | _Placeholder):
                raise FlowDefinitionError(
                    f"{where}: key {key!r} is a {type(key).__name__}{at}: "
                    "the keys of a mapping in a manifest are strings"
                )
            text = to_manifest(key, graph, where, at)
            out[text] = to_manifest(item, graph, f"{where}.{text}", at)
        return out
    raise FlowDefinitionError(
        f"{where}: a {type(value).__name__} is not JSON{at}: a manifest carries "
        "str, int, float, bool, None, lists and dicts of them, and task results; convert "
        "it (str(path), date.isoformat()) or create it inside a task"
    )
