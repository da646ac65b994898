"""What ``daskflow run`` kills when a signal stops it (:mod:`daskflow.interrupt`).

Run in a process of its own: the function kills every child of the process that calls it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

# As Dask while a large LocalCluster starts: worker processes are started one by one from
# another thread, and go on being started while the command stops. Its own exit is
# os._exit, as the command's exit at once (no atexit clean-up of child processes).
SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, os, sys, threading, time
    from daskflow.interrupt import Interrupts, stop_worker_processes

    started = []

    def start_workers():
        context = multiprocessing.get_context("spawn")
        for _ in range(20):
            proc = context.Process(target=time.sleep, args=(120,), daemon=True)
            proc.start()
            started.append(proc.pid)
            time.sleep(0.2)

    if __name__ == "__main__":
        Interrupts().install()
        starter = threading.Thread(target=start_workers, daemon=True)
        starter.start()
        while len(started) < 2:
            time.sleep(0.05)
        killed = stop_worker_processes()
        time.sleep(1.5)  # the starter's chance to start more, as Dask's threads would
        with open(sys.argv[1], "w") as report:
            json.dump({"started": started, "killed": killed}, report)
        os._exit(0)
    """
)


def test_worker_processes_started_meanwhile_by_another_thread_do_not_survive(
    tmp_path: Path,
) -> None:
    script, output, report_file = tmp_path / "stopper.py", tmp_path / "output", tmp_path / "report"
    script.write_text(SCRIPT)
    with output.open("w") as out:  # a file: a pipe would stay open as long as a survivor
        code = subprocess.call(
            [sys.executable, str(script), str(report_file)], stdout=out, stderr=out, timeout=120
        )
    assert code == 0, output.read_text()
    report = json.loads(report_file.read_text())
    alive = [psutil.Process(pid) for pid in report["started"] if psutil.pid_exists(pid)]
    for leftover in alive:  # the test's own clean-up
        leftover.kill()
    assert not alive, report
    assert report["killed"] == len(report["started"]) >= 2
