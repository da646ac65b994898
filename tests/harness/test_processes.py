"""The process supervisor stops a child and everything it started, and says so when it
cannot; free ports can be bound."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil

from harness.processes import Supervised, alive, free_port
from harness.waiting import wait_for

# A shell whose children stay: one in its process group, one that left it with setsid.
FAMILY = "sleep 300 & setsid sleep 300 & echo started; wait"


def test_stop_ends_the_whole_tree_even_a_process_that_left_the_group(tmp_path: Path) -> None:
    proc = Supervised(["sh", "-c", FAMILY], tmp_path / "family.log")
    family = wait_for(proc.tree, 30, "the shell and its two sleeps", until=lambda t: len(t) == 3)
    assert len({p.pid for p in family}) == 3
    proc.stop(grace=1)
    assert alive(family) == []
    assert proc.log_tail() == "started"


def test_a_child_that_exited_leaves_no_process_of_its_group(tmp_path: Path) -> None:
    with Supervised(["sh", "-c", "sleep 300 & echo $!"], tmp_path / "orphan.log") as proc:
        assert proc.wait(30) == 0
        orphan = psutil.Process(int(wait_for(proc.log_tail, 30, "the orphan's pid")))
        assert alive([orphan]) == [orphan]
    assert alive([orphan]) == []


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
