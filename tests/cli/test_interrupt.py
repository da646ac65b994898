"""What ``daskflow run`` kills when a signal stops it (:mod:`daskflow.interrupt`).

Run in a process of its own: the function kills every child of the process that calls it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from daskflow.interrupt import EXIT_INTERRUPTED, FINAL_ATTEMPTS

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


# The main thread in a long C call that does not return to Python for signals (here a
# sigwait, which glibc resumes after a handler) while a Ctrl-C and then a SIGTERM come.
# The final status is read from another thread; ``fail`` times it raises first (the run
# changes it meanwhile).
SIGNALLED = textwrap.dedent(
    """
    import signal, sys
    from daskflow.interrupt import Interrupts

    interrupts = Interrupts()
    fail = int(sys.argv[1])

    def final():
        global fail
        if fail:
            fail -= 1
            raise RuntimeError("dictionary changed size during iteration")
        return f"cancelled by {interrupts.first}\\n", 1

    if __name__ == "__main__":
        interrupts.install()
        interrupts.on_exit(final)
        print("busy", flush=True)
        signal.sigwait({signal.SIGUSR1})  # never comes
    """
)


def signalled_while_busy(tmp_path: Path, fail: int) -> tuple[int, str, str]:
    script = tmp_path / "busy.py"
    script.write_text(SIGNALLED)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(fail)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "busy\n"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # two signals in a row may arrive as one
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def test_a_second_signal_counts_as_second_while_the_main_thread_is_busy(
    tmp_path: Path,
) -> None:
    code, stdout, stderr = signalled_while_busy(tmp_path, fail=0)
    assert code == EXIT_INTERRUPTED, (code, stdout, stderr)
    assert stderr == "daskflow: second SIGTERM: exiting at once\n"
    assert stdout == "cancelled by SIGINT\n"


def test_a_status_read_that_races_with_the_run_is_tried_again(tmp_path: Path) -> None:
    code, stdout, stderr = signalled_while_busy(tmp_path, fail=FINAL_ATTEMPTS - 1)
    assert code == EXIT_INTERRUPTED, (code, stdout, stderr)
    assert stdout == "cancelled by SIGINT\n", stderr


def test_a_status_that_cannot_be_read_is_told_on_stderr(tmp_path: Path) -> None:
    code, stdout, stderr = signalled_while_busy(tmp_path, fail=FINAL_ATTEMPTS)
    assert code == EXIT_INTERRUPTED, (code, stdout, stderr)
    assert stdout == ""
    assert stderr.splitlines() == [
        "daskflow: second SIGTERM: exiting at once",
        "daskflow: cannot print the status: RuntimeError: dictionary changed size during iteration",
    ]
