"""Running the FlowRun health check in a stock Lua, the way Argo CD runs it.

``to_lua`` writes a JSON value as a Lua literal, as Argo CD's ``decodeValue`` turns the
live object into Lua values: objects and arrays become tables, JSON null becomes nil (a
missing key), numbers become numbers. ``run_health`` runs a health script on an object in
harness.lua under a given interpreter and returns the ``Health`` it reports.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HARNESS = HERE / "harness.lua"
HEALTH_LUA = REPO / "charts" / "daskflow" / "files" / "argocd" / "health.lua"
# Argo CD embeds gopher-lua, which implements Lua 5.1: lua5.1 rejects anything newer, and
# lua5.4 is the interpreter the issue asks for. Both come from Debian (hack/install-test-deps.d).
INTERPRETERS = ("lua5.4", "lua5.1")


@dataclass(frozen=True)
class Health:
    status: str
    message: str | None


class LuaError(AssertionError):
    """The script did not compile, raised an error or returned no valid health."""


def _string(text: str) -> str:
    out = ['"']
    for byte in text.encode("utf-8"):
        if 32 <= byte < 127 and byte not in (ord('"'), ord("\\")):
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")  # decimal escapes mean the same in Lua 5.1 and 5.4
    out.append('"')
    return "".join(out)


def to_lua(value: Any) -> str:
    """A Lua expression for a JSON value (dict keys must be strings)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a JSON number: {value!r}")
        # gopher-lua keeps every number as a float64 and prints 3.0 as "3"; so does Lua 5.4
        # with an integer. Write integral floats as integers to keep that.
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys are strings, not {key!r}")
            items.append(f"[{_string(key)}] = {to_lua(item)}")
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def interpreter(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run hack/install-test-deps.sh "
            "(hack/install-test-deps.d/45-lua.sh installs it)",
            pytrace=False,
        )
    return path


def run_lua(
    lua: str, script: Path, obj: dict[str, Any], mode: str = "argocd"
) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="daskflow-lua-") as tmp:
        literal = Path(tmp) / "object.lua"
        literal.write_text("return " + to_lua(obj) + "\n", encoding="utf-8")
        proc = subprocess.run(
            [interpreter(lua), str(HARNESS), str(script), str(literal), mode],
            capture_output=True,
            timeout=30,
            check=False,
        )
    # Decoded by hand: text mode would turn a "\r" in a message into "\n".
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode(errors="replace")
    )


def run_health(
    lua: str, obj: dict[str, Any], script: Path = HEALTH_LUA, mode: str = "argocd"
) -> Health:
    proc = run_lua(lua, script, obj, mode)
    if proc.returncode != 0:
        raise LuaError(f"{lua} {script.name} exited {proc.returncode}: {proc.stderr.strip()}")
    status, flag, message = proc.stdout.split("\n", 2)
    return Health(status, message if flag == "message" else None)
