"""How long ``daskflow run`` takes to end after Ctrl-C in the middle of a large map (issue 7).

It writes a flow of ``N`` mapped ``time.sleep`` items (no module of its own, only the
standard library), runs the installed ``daskflow run -o json`` on it as a user would,
sends SIGINT once the map is running plus ``--after`` seconds, and records the time from
the signal to the exit, the exit code, the phase on stdout and any process left behind.
If the run has not ended ``--patience`` seconds after the first SIGINT, it sends a second
one and records how long that takes; whatever is still alive after that is killed.

    .venv/bin/python benchmarks/bench_cancel.py --items 20000 200000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from harness.processes import Supervised, alive  # noqa: E402

DASKFLOW = Path(sys.executable).parent / "daskflow"


def manifest(items: int, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": f"cancel-{items}"},
        "spec": {
            "cluster": {"workers": 2, "threadsPerWorker": 1},
            **spec,
            "tasks": [
                # operator.mul([0], N): a list of N zeros, with nothing but the stdlib
                {"name": "src", "call": "operator:mul", "args": [[0], items]},
                {
                    "name": "work",
                    "map": "$(tasks.src.result)",
                    "call": "time:sleep",
                    "args": [0.05],
                },
            ],
        },
    }


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """Read stderr lines until one contains ``needle``."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise RuntimeError(f"{needle!r} not seen: {''.join(lines)[-2000:]}")


def measure(items: int, after: float, patience: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flow.yaml"
        path.write_text(yaml.safe_dump(manifest(items)))
        run = Supervised(
            [str(DASKFLOW), "run", str(path), "-o", "json"],
            name="daskflow run",
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        proc = run.popen
        try:
            wait_for_line(proc, "work: Running", timeout=300)
            time.sleep(after)
            family = run.tree()
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
            out: dict[str, object] = {"items": items}
            try:
                stdout, stderr = proc.communicate(timeout=patience)
                out["first_sigint_to_exit_s"] = round(time.monotonic() - sent, 2)
            except subprocess.TimeoutExpired:
                out["first_sigint_to_exit_s"] = f"> {patience:g} (no exit)"
                proc.send_signal(signal.SIGINT)
                second = time.monotonic()
                try:
                    stdout, stderr = proc.communicate(timeout=30)
                    out["second_sigint_to_exit_s"] = round(time.monotonic() - second, 2)
                except subprocess.TimeoutExpired:
                    out["second_sigint_to_exit_s"] = "> 30 (no exit)"
                    stdout = stderr = ""
            out["exit_code"] = proc.returncode
            out["how"] = [line for line in stderr.splitlines() if line.startswith("daskflow:")]
            try:
                status = json.loads(stdout)
                out["phase"] = status["phase"]
                out["items_status"] = status["tasks"]["work"].get("items")
            except (ValueError, KeyError, TypeError):
                out["phase"] = None
            _, left = psutil.wait_procs(family, timeout=1.0)
            out["left_behind"] = [p.pid for p in alive(left)]
            return out
        finally:
            run.kill()
            for p in psutil.process_iter():
                # worker processes that left the group: anything still under our tmp dir
                try:
                    if p.cwd() == tmp:
                        p.kill()
                except (psutil.Error, OSError):
                    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--after", type=float, default=3.0, help="seconds into the map")
    parser.add_argument("--patience", type=float, default=120.0)
    args = parser.parse_args()
    for n in args.items:
        load = os.getloadavg()[0]
        result = measure(n, args.after, args.patience)
        result["load1_before"] = round(load, 2)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
