"""What a user sees of their run's status: running counts, error messages, the table."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import termios

from harness.processes import Supervised

from .conftest import RUN_TIMEOUT, SCRIPT, UserProject, assert_clean_exit


def test_running_items_never_exceed_the_threads_of_the_cluster(project: UserProject) -> None:
    """Dask queues tasks ahead on each worker; those are not running yet."""
    flow = project.manifest(
        "busy",
        [{"name": "work", "map": [0.3] * 40, "call": "time:sleep", "args": ["$(item)"]}],
        cluster={"workers": 2, "threadsPerWorker": 1},
    )
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc)
    shown = [int(n) for n in re.findall(r"\[(\d+) running\]", proc.stderr)]
    assert shown, proc.stderr  # the run lasts long enough to be seen running
    assert max(shown) <= 2, proc.stderr


def test_a_map_over_a_non_list_shows_no_daskflow_frames(project: UserProject) -> None:
    flow = project.manifest(
        "notalist",
        [
            {"name": "src", "call": "builtins:str", "args": [12345]},
            {"name": "work", "map": "$(tasks.src.result)", "call": "builtins:abs", "args": [1]},
        ],
    )
    proc = project.daskflow("run", flow.name, "-o", "json")
    assert_clean_exit(proc, codes=(1,))
    message = json.loads(proc.stdout)["tasks"]["work"]["message"]
    assert message == "TypeError: map: the result of task 'src' is a str, not a list"


def screen_lines(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: the few controls rich uses, applied."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", raw):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token.startswith("\x1b["):
            arg, op = token[2:-1], token[-1]
            if op == "A":
                row = max(row - int(arg or 1), 0)
            elif op == "K" and arg == "2":
                lines[row] = ""
            elif op == "K":
                lines[row] = lines[row][:col]
            else:
                assert op in "mhl", f"unexpected control {token!r}"  # colours, cursor shown
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return lines


def test_the_final_table_shows_once_on_a_terminal(project: UserProject) -> None:
    flow = project.manifest(
        "onscreen", [{"name": "nap", "map": [0.2] * 6, "call": "time:sleep", "args": ["$(item)"]}]
    )
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")} | {
        "TERM": "xterm-256color"
    }
    with Supervised(
        [str(SCRIPT), "run", flow.name],
        name="daskflow",
        cwd=project.root,
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
    ) as proc:
        os.close(child)
        chunks = []
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # the terminal closed: the command is gone
                break
            if not data:
                break
            chunks.append(data)
        os.close(main)
        assert proc.wait(timeout=RUN_TIMEOUT) == 0
    shown = screen_lines(b"".join(chunks).decode(errors="replace"))
    assert sum("onscreen: Succeeded" in line for line in shown) == 1, "\n".join(shown)
    assert any(line.startswith("│ nap ") for line in shown), "\n".join(shown)  # the table
