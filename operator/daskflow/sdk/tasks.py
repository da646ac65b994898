"""``@task`` and ``shell``: the two kinds of FlowRun task, written as Python.

A :class:`Task` wraps a function defined at the top level of a module. Called in a flow
body, it records a task (``call: "module:function"``) and returns a placeholder; called
anywhere else, it simply runs the function, which is also how a Dask worker runs it after
importing it by that module path. So a task must be importable by its module path: a
lambda or a function defined inside another function is refused when it is decorated, and
one defined in ``__main__`` is resolved, or refused, when the manifest is made (see
:func:`call_path`).

``shell`` records a command task (``command: [...]``). It is a function rather than a
``@task(command=...)`` form on purpose: a command has no Python body, and ``shell([...])``
shows the argv that runs, placeholders and all, where the flow uses it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .trace import ITEM, FlowDefinitionError, Graph, Node, Result, current, dns_name, user_location

P = ParamSpec("P")
R = TypeVar("R")


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()  # an argument not given (None is a value: when=None is false)


@dataclass(frozen=True)
class TaskOptions:
    """Per-task settings; None means not set, so the manifest's defaults apply."""

    name: str | None = None
    retries: int | None = None
    retry_delay: float | None = None
    retry_backoff: float | None = None
    retry_jitter: float | None = None
    timeout: float | None = None

    def merged(self, other: TaskOptions) -> TaskOptions:
        given = {k: v for k, v in dataclasses.asdict(other).items() if v is not None}
        return dataclasses.replace(self, **given)

    def fields(self) -> dict[str, Any]:
        """The manifest fields of the options that are set."""
        names = {
            "retries": "retries",
            "retry_delay": "retryDelaySeconds",
            "retry_backoff": "retryBackoff",
            "retry_jitter": "retryJitter",
            "timeout": "timeoutSeconds",
        }
        return {
            names[k]: v for k, v in dataclasses.asdict(self).items() if k in names and v is not None
        }


def _check_importable(fn: Callable[..., Any]) -> None:
    """Refuse, when it is decorated, a function a worker could never import by name."""
    name = getattr(fn, "__qualname__", None)
    if not inspect.isfunction(fn) or name is None:
        raise FlowDefinitionError(
            f"@task needs a function defined with def, got {type(fn).__name__}"
            f"{user_location()}: workers import a task by its module path (module:function)"
        )
    if fn.__name__ == "<lambda>":
        raise FlowDefinitionError(
            f"@task cannot take a lambda{user_location()}: workers import a task by its module "
            "path (module:function), and a lambda has no name there. Define it with def at "
            "the top level of a module."
        )
    if "<locals>" in name:
        outer = name.split(".<locals>")[0]
        raise FlowDefinitionError(
            f"@task {fn.__name__!r} is defined inside {outer}(){user_location()}: workers import "
            "a task by its module path (module:function), and a function inside another one "
            "has none. Move it to the top level of a module."
        )
    if "when" in inspect.signature(fn).parameters:
        raise FlowDefinitionError(
            f"@task {fn.__name__!r}: its parameter 'when' clashes with the when= of a task "
            f"call{user_location()}; rename the parameter"
        )


def call_path(task: Task[Any, Any], main: str | None) -> str:
    """``module:qualname`` by which a worker imports ``task``. A task defined in
    ``__main__`` (a script run with ``python script.py``) is imported as ``main`` (the
    script's module name, for a local run), or refused when ``main`` is None (a manifest
    for a cluster, whose workers never saw the script)."""
    fn = task.fn
    module = fn.__module__
    if module == "__main__" and main is None:
        raise FlowDefinitionError(
            f"task {fn.__name__!r} is defined in __main__, the script being run: a cluster's "
            "workers import tasks by module path and cannot import a script. Export the "
            "flow by its module name instead (daskflow export myflow:flow, with the script "
            "as myflow.py), or move the tasks into a module that the image contains."
        )
    found: Any = sys.modules.get(module)
    for part in fn.__qualname__.split("."):
        found = getattr(found, part, None)
    if not (found is fn or (isinstance(found, Task) and found.fn is fn)):
        raise FlowDefinitionError(
            f"task {fn.__name__!r}: workers import it as {module}:{fn.__qualname__}, which is "
            "not this function there (was the task made with task(f) under another name, or "
            "the name bound to something else?). Decorate it with @task where it is defined."
        )
    return f"{main if module == '__main__' else module}:{fn.__qualname__}"


def _record(
    graph: Graph,
    base: str,
    options: TaskOptions,
    fields: dict[str, Any],
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    when: Any = UNSET,
    over: Any = UNSET,
) -> Node:
    node = graph.add(options.name or base, {**fields})
    if over is not UNSET:
        node.fields["map"] = over
    node.args, node.kwargs = list(args), dict(kwargs or {})
    if when is not UNSET:
        node.fields["when"] = when
    node.fields.update(options.fields())
    return node


class Task(Generic[P, R]):
    """A function that runs as a task of a flow. Made by :func:`task`."""

    def __init__(self, fn: Callable[P, R], options: TaskOptions) -> None:
        _check_importable(fn)
        self._fn = fn
        self.options = options
        functools.update_wrapper(self, fn)

    @property
    def fn(self) -> Callable[P, R]:
        """The function itself: ``extract.fn("2026-12-01")`` runs it here and now."""
        return self._fn

    @property
    def name(self) -> str:
        """The task's name in the manifest (its first call's; later ones get -2, -3...)."""
        return self.options.name or dns_name(self._fn.__name__)

    def __repr__(self) -> str:
        return f"<task {self.name!r}: {self._fn.__module__}.{self._fn.__qualname__}>"

    def __call__(self, *args: Any, when: Any = UNSET, **kwargs: Any) -> Result[R]:
        """In a flow body: record a call of this task and return a placeholder for its
        result; ``when`` (a parameter or a task result) makes it run only if true.
        Elsewhere (a worker, a unit test): run the function."""
        graph = current()
        if graph is None:
            if when is not UNSET:
                raise TypeError(f"{self.name}(): when= is for a call inside a flow body")
            result: Any = self._fn(*args, **kwargs)
            return result  # type: ignore[no-any-return]
        self._check_arguments(args, kwargs)
        node = _record(
            graph, self.name, self.options, {"call": self}, args=args, kwargs=kwargs, when=when
        )
        return Result(node)

    def map(self, over: Any, /, *args: Any, when: Any = UNSET, **kwargs: Any) -> Result[list[R]]:
        """Fan-out: one run per item of ``over`` (a task result, a parameter or a list),
        the item being the first argument; ``args`` and ``kwargs`` go to every run as
        they are. The result is the list of the item results, in item order."""
        graph = current()
        if graph is None:
            raise FlowDefinitionError(
                f"{self.name}.map() outside a flow body{user_location()}: .map records a "
                "fan-out inside a @flow function or a `with Flow(...)` block"
            )
        self._check_arguments((ITEM, *args), kwargs, mapped=True)
        node = _record(
            graph,
            self.name,
            self.options,
            {"call": self},
            args=(ITEM, *args),
            kwargs=kwargs,
            when=when,
            over=over,
        )
        return Result(node)

    def after(self, *upstream: Result[Any]) -> Result[R]:
        """Call this task with no arguments, after ``upstream`` tasks (``dependsOn``):
        ``cleanup.after(n)``. With arguments: ``cleanup(x).after(n)``."""
        return self().after(*upstream)

    def with_options(
        self,
        *,
        name: str | None = None,
        retries: int | None = None,
        retry_delay: float | None = None,
        retry_backoff: float | None = None,
        retry_jitter: float | None = None,
        timeout: float | None = None,
    ) -> Task[P, R]:
        """The same task with some options replaced, for one call or a few:
        ``transform.with_options(name="transform-eu", retries=5)(path)``."""
        new = TaskOptions(name, retries, retry_delay, retry_backoff, retry_jitter, timeout)
        return Task(self._fn, self.options.merged(new))

    def _check_arguments(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], mapped: bool = False
    ) -> None:
        signature = inspect.signature(self._fn)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as err:
            bare = signature.replace(
                parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                return_annotation=signature.empty,
            )
            item = " (.map passes each item as the first argument)" if mapped else ""
            raise FlowDefinitionError(
                f"task {self.name!r}: {err}{user_location()}: the call does not fit "
                f"{self._fn.__name__}{bare}{item}"
            ) from None


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    retries: int | None = None,
    retry_delay: float | None = None,
    retry_backoff: float | None = None,
    retry_jitter: float | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int | None = None,
    retry_delay: float | None = None,
    retry_backoff: float | None = None,
    retry_jitter: float | None = None,
    timeout: float | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Make a function a task: ``@task`` or ``@task(retries=2, retry_delay=5, timeout=600)``.

    ``retry_delay`` is the first delay in seconds, ``retry_backoff`` its growth factor,
    ``retry_jitter`` a random extra fraction, ``timeout`` the limit of each attempt in
    seconds; ``name`` the task's name in the manifest (default: the function's, with
    ``_`` as ``-``).
    """
    options = TaskOptions(name, retries, retry_delay, retry_backoff, retry_jitter, timeout)
    if fn is not None:
        return Task(fn, options)

    def decorate(f: Callable[P, R]) -> Task[P, R]:
        return Task(f, options)

    return decorate


class Shell:
    """Command tasks: ``shell(["sh", "-c", "..."])`` records a process to run on a worker;
    its result is its stdout without the trailing newline."""

    def __call__(
        self,
        command: Sequence[Any],
        *,
        name: str = "shell",
        env: Mapping[str, Any] | None = None,
        when: Any = UNSET,
        retries: int | None = None,
        retry_delay: float | None = None,
        retry_backoff: float | None = None,
        retry_jitter: float | None = None,
        timeout: float | None = None,
    ) -> Result[str]:
        """Record a command task: ``command`` is its argv (placeholders allowed, also inside
        strings: ``f"echo rows={n}"``), ``env`` extra environment; the rest as for
        :func:`task`. Repeated calls get ``shell``, ``shell-2``...: better give a ``name``."""
        options = TaskOptions(name, retries, retry_delay, retry_backoff, retry_jitter, timeout)
        return Result(self._record(command, env, when, UNSET, options))

    def map(
        self,
        over: Any,
        command: Sequence[Any],
        /,
        *,
        name: str = "shell",
        env: Mapping[str, Any] | None = None,
        when: Any = UNSET,
        retries: int | None = None,
        retry_delay: float | None = None,
        retry_backoff: float | None = None,
        retry_jitter: float | None = None,
        timeout: float | None = None,
    ) -> Result[list[str]]:
        """A command once per item of ``over``; ``$(item)`` in its text is the item:
        ``shell.map(words, ["sh", "-c", "echo '$(item)' | rev"], name="reverse")``."""
        options = TaskOptions(name, retries, retry_delay, retry_backoff, retry_jitter, timeout)
        return Result(self._record(command, env, when, over, options))

    @staticmethod
    def _record(
        command: Sequence[Any],
        env: Mapping[str, Any] | None,
        when: Any,
        over: Any,
        options: TaskOptions,
    ) -> Node:
        graph = current()
        if graph is None:
            raise FlowDefinitionError(
                f"shell() outside a flow body{user_location()}: it records a command task "
                "inside a @flow function or a `with Flow(...)` block"
            )
        if isinstance(command, str):
            raise FlowDefinitionError(
                f"shell({command!r}): the command is an argv list{user_location()}, such as "
                f'["sh", "-c", {command!r}]'
            )
        fields: dict[str, Any] = {"command": list(command)}
        if env:
            fields["env"] = dict(env)
        return _record(graph, "shell", options, fields, when=when, over=over)


shell = Shell()
