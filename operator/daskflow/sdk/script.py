"""Where the workers of a local run (``Flow.run()``) find the user's task functions.

Workers are other processes: they import each task by its module path. For a task of an
ordinary module, that is the module's name, found from the directory its top package is
in. For a task defined in the script being run (``python myflow.py``: module
``__main__``), it is the script's own module name, ``myflow``, found next to the script;
``python -m pkg.flows`` gives ``pkg.flows``. An interactive session has no module to import.

Local workers are started by multiprocessing, which imports the script again in each
worker process: a ``flow.run()`` at the script's top level, outside
``if __name__ == "__main__":``, would run there too. That is refused before any process
starts, as is a run started from inside a Dask worker, or by a module that ``daskflow
export`` imports.
"""

from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .trace import FlowDefinitionError

GUARD = 'if __name__ == "__main__":'
# The module daskflow is importing to find a flow in it (daskflow export, submit), if any.
exporting: list[str] = []


@dataclass
class LocalScript:
    """``module``: the name tasks of ``__main__`` are imported by (None: none);
    ``paths``: where workers import from."""

    module: str | None
    paths: list[Path] = field(default_factory=list)


def local_script(flow: str, targets: list[Any]) -> LocalScript:
    """Where the workers of a local run of ``flow`` import the functions of ``targets``
    (tasks) from; raises :class:`FlowDefinitionError` when they cannot, or when this
    process is no place to start a run."""
    _refuse_in_a_worker(flow)
    if exporting:
        raise FlowDefinitionError(
            f"flow {flow!r}: importing {exporting[-1]} runs the flow (.run() at its top level):"
            f" put the call under `{GUARD}`"
        )
    main = sys.modules.get("__main__")
    _refuse_unguarded(flow, main)
    script = _main_module(main)
    in_main = [t for t in targets if t.fn.__module__ == "__main__"]
    if in_main and script.module is None:
        raise FlowDefinitionError(
            f"task {in_main[0].name!r} is defined in __main__, which "
            f"{_why_not(main)}: local workers import tasks by module path. Move the tasks "
            "into a module."
        )
    paths = [Path.cwd(), *script.paths]
    for target in targets:
        root = _import_root(target.fn.__module__)
        if root is not None:
            paths.append(root)
    return LocalScript(script.module, list(dict.fromkeys(p for p in paths if os.path.isdir(p))))


def _refuse_in_a_worker(flow: str) -> None:
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return
    try:
        distributed.get_worker()
    except ValueError:
        return
    raise FlowDefinitionError(
        f"flow {flow!r}: .run() was called in a Dask worker (a task importing the flow's module?)"
        f": put the call under `{GUARD}`"
    )


def _refuse_unguarded(flow: str, main: Any) -> None:
    """Refuse a ``.run()`` that the script's top level makes outside ``__name__``'s test."""
    file = getattr(main, "__file__", None)
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals is not getattr(main, "__dict__", None):
        frame = frame.f_back  # type: ignore[assignment]
    if file is None or frame is None or frame.f_code.co_name != "<module>":
        return  # not called from the script's top level (a function, a test, a REPL)
    try:
        tree = ast.parse(Path(file).read_text())
    except (OSError, SyntaxError, ValueError):
        return
    line = frame.f_lineno
    for stmt in tree.body:
        if stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
            if isinstance(stmt, ast.If) and "__name__" in ast.unparse(stmt.test):
                return
            raise FlowDefinitionError(
                f"flow {flow!r}: .run() at the top level of {Path(file).name} (line {line}): "
                "local workers are processes that import the script again, and would run the "
                f"flow again. Put the call under `{GUARD}`"
            )


def _main_module(main: Any) -> LocalScript:
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":  # python -m pkg.mod
        return LocalScript(spec.name)
    file = getattr(main, "__file__", None)
    if file is None or _why_not(main):
        return LocalScript(None)
    return LocalScript(Path(file).stem, [Path(file).resolve().parent])


def _why_not(main: Any) -> str:
    """Why the script being run cannot be imported by its name; empty if it can."""
    file = getattr(main, "__file__", None)
    if file is None:
        return "is an interactive session (a notebook, a REPL)"
    stem = Path(file).stem
    if not stem.isidentifier():
        return f"runs {Path(file).name}, not a valid module name"
    if stem in sys.stdlib_module_names or stem in sys.modules:
        return f"runs {Path(file).name}, whose name is that of another module"
    return ""


def _import_root(module: str) -> Path | None:
    """The directory ``module`` is imported from (for a package's module, the one holding
    the top package)."""
    file = getattr(sys.modules.get(module), "__file__", None)
    if module == "__main__" or file is None:
        return None
    root = Path(file).resolve().parent
    for _ in range(module.count(".") + (Path(file).stem == "__init__")):
        root = root.parent
    return root
