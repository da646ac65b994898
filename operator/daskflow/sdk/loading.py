"""Finding a flow by ``module:name``, as ``daskflow export myflow:etl`` names it.

The module is imported as a user's project would have it: from the current directory and
its ``src/`` (the "src layout"), the same places ``daskflow run`` makes local workers import
from. Whatever goes wrong (no such module, an error in it, no such flow) is one message
that says which, never a traceback.
"""

from __future__ import annotations

import importlib
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from . import script
from .flows import Flow
from .trace import FlowDefinitionError

_REF = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")


def project_paths(base: Path | None = None) -> list[Path]:
    """Where a user's modules are imported from: ``base`` (default: the current
    directory), and its ``src/`` if there is one."""
    base = base or Path.cwd()
    return [base] + ([base / "src"] if (base / "src").is_dir() else [])


def load_flow(ref: str) -> Flow:
    """The :class:`Flow` named by ``module:name``; raises :class:`FlowDefinitionError`."""
    match = _REF.match(ref)
    if match is None:
        hint = f" (as {Path(ref.split(':')[0]).stem}:NAME)" if ".py" in ref else ""
        raise FlowDefinitionError(
            f"{ref!r}: expected a module and a flow in it, module:name, such as myflow:etl{hint}"
        )
    module_name, attr = match.groups()
    for path in reversed(project_paths()):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    script.exporting.append(module_name)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and f"{module_name}.".startswith(f"{err.name}."):
            where = ", ".join(str(p) for p in project_paths())
            raise FlowDefinitionError(
                f"{ref}: no module {err.name!r} here ({where}) nor installed"
            ) from None
        raise FlowDefinitionError(f"{ref}: importing {module_name} failed: {_said(err)}") from None
    except FlowDefinitionError:
        raise
    except Exception as err:
        raise FlowDefinitionError(f"{ref}: importing {module_name} failed: {_said(err)}") from None
    finally:
        script.exporting.pop()
    found = getattr(module, attr, None)
    if isinstance(found, Flow):
        return found
    flows = [name for name, value in vars(module).items() if isinstance(value, Flow)]
    known = f" (its flows: {', '.join(flows)})" if flows else " (it has none)"
    if found is None:
        raise FlowDefinitionError(f"{ref}: module {module_name} has no flow {attr!r}{known}")
    raise FlowDefinitionError(
        f"{ref} is a {type(found).__name__}, not a flow{known}: decorate the function "
        "with @flow, or define it with `with Flow(...) as NAME:`"
    )


def flow_manifest(ref: str, params: dict[str, Any]) -> dict[str, Any]:
    """The FlowRun of the flow named by ``module:name``, for a command line: whatever goes
    wrong, the flow's own code included, is a :class:`FlowDefinitionError` or a
    :class:`~daskflow.model.validate.ManifestError` with one message."""
    from ..model.validate import ManifestError

    flow = load_flow(ref)
    try:
        return flow.manifest(**params)
    except (FlowDefinitionError, ManifestError):
        raise
    except Exception as err:
        raise FlowDefinitionError(f"{ref}: tracing the flow failed: {_said(err)}") from None


def _said(err: BaseException) -> str:
    """An exception as ``Type: text (file.py:12)``, the line being the last of the user's."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "importlib" not in f.filename]
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"
