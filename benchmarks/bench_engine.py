#!/usr/bin/env python
"""Engine overhead benchmark: daskflow's FlowEngine against the same graph on raw Dask.

Scenarios (issue 2):

* ``fanout-N``: 1 source task -> N mapped trivial tasks -> 1 reduce, for each N in --sizes.
* ``chain-L``: L tasks, each taking the previous task's result (--chain).

Each scenario runs through ``FlowEngine(...).run()`` and, as "raw", straight on
``distributed`` with ``client.submit``/``client.map`` and futures as arguments. Both sides
share one warm LocalCluster (2 workers x 1 thread, processes), in this process and run.
Repetitions alternate the side that goes first (engine/raw, then raw/engine, ...) so that
load from anything else on the machine hits both sides alike; the scheduler is left idle
(every key released) before each timed run.

Per run it records wall time, CPU seconds of this process (the client; with the default
``--cluster inprocess`` the scheduler shares this process and its event loop, as under
``daskflow run``), CPU seconds of the workers and, with ``--cluster subprocess``, of the
scheduler; and the 1-minute load average before and after. It prints a table and writes
``benchmarks/results/engine-<label>.json``.

    .venv/bin/python benchmarks/bench_engine.py                 # make bench
    .venv/bin/python benchmarks/bench_engine.py --repeat 5 --label mybox
    .venv/bin/python benchmarks/bench_engine.py --sizes 1000 --chain 0 --profile /tmp/prof

Needs only the project's own dependencies. ``--profile DIR`` runs each scenario's engine
side once more after the timed runs, under cProfile (stdlib) or, with ``--profiler
pyinstrument``, pyinstrument (if installed), and writes the profiles to DIR (not the repo).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import gc
import hashlib
import io
import json
import logging
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import dask  # noqa: E402
import distributed  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import bench_tasks  # noqa: E402
from bench_common import git_state  # noqa: E402
from daskflow.engine.flow import FlowEngine  # noqa: E402
from daskflow.model.validate import parse_flowrun  # noqa: E402
from harness.processes import Supervised  # noqa: E402

WORKERS = 2
THREADS = 1
TARGET_RATIO = 1.25


# -- the cluster -----------------------------------------------------------------------
def _cluster_kwargs() -> dict[str, Any]:
    pythonpath = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {
        "n_workers": WORKERS,
        "threads_per_worker": THREADS,
        "processes": True,
        "dashboard_address": ":0",  # no fixed port: other clusters may run on this machine
        "worker_dashboard_address": None,
        "silence_logs": logging.CRITICAL,  # shutdown chatter; results are checked instead
        "env": {"PYTHONPATH": pythonpath},
    }


def serve_cluster() -> None:
    """--serve-cluster: run a LocalCluster in this (child) process until stdin closes."""
    with LocalCluster(**_cluster_kwargs()) as cluster:
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()


def _start_cluster_process() -> Supervised:
    return Supervised(
        [sys.executable, __file__, "--serve-cluster"],
        name="bench cluster",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@contextlib.asynccontextmanager
async def cluster_client(mode: str) -> AsyncIterator[Client]:
    if mode == "inprocess":
        async with (
            LocalCluster(asynchronous=True, **_cluster_kwargs()) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            yield client
        return
    proc = _start_cluster_process()
    try:
        assert proc.popen.stdout is not None
        address = (await asyncio.to_thread(proc.popen.stdout.readline)).strip()
        if not address:
            raise RuntimeError("the cluster process did not start")
        async with Client(address, asynchronous=True) as client:
            yield client
    finally:
        assert proc.popen.stdin is not None
        proc.popen.stdin.close()  # it closes its LocalCluster and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        proc.stop()


async def settle(client: Client, limit: float = 30.0) -> None:
    """Wait until the scheduler has forgotten every key (the previous run is released)."""
    gc.collect()
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if await client.run_on_scheduler(bench_tasks.scheduler_task_count) == 0:
            return
        await asyncio.sleep(0.05)
    print("warning: scheduler still holds tasks after the previous run", file=sys.stderr)


# -- the flows -------------------------------------------------------------------------
def fanout_manifest(n: int) -> dict[str, Any]:
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": f"bench-fanout-{n}"},
        "spec": {
            "parameters": {"n": n},
            "tasks": [
                {"name": "source", "call": "bench_tasks:make_items", "args": ["$(params.n)"]},
                {
                    "name": "work",
                    "map": "$(tasks.source.result)",
                    "call": "bench_tasks:inc",
                    "args": ["$(item)"],
                },
                {"name": "reduce", "call": "bench_tasks:total", "args": ["$(tasks.work.result)"]},
            ],
        },
    }


def chain_manifest(length: int) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [{"name": "t000", "call": "bench_tasks:inc", "args": [0]}]
    for i in range(1, length):
        tasks.append(
            {
                "name": f"t{i:03d}",
                "call": "bench_tasks:inc",
                "args": [f"$(tasks.t{i - 1:03d}.result)"],
            }
        )
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": f"bench-chain-{length}"},
        "spec": {"tasks": tasks},
    }


async def raw_fanout(client: Client, n: int) -> int:
    """The natural raw-Dask version: gather the source's list, map over it, reduce."""
    source = client.submit(bench_tasks.make_items, n, pure=False)
    items = await source
    mapped = client.map(bench_tasks.inc, items, pure=False)
    reduced = client.submit(bench_tasks.total, mapped, pure=False)
    result: int = await reduced
    return result


async def raw_chain(client: Client, length: int) -> int:
    fut = client.submit(bench_tasks.inc, 0, pure=False)
    for _ in range(1, length):
        fut = client.submit(bench_tasks.inc, fut, pure=False)
    result: int = await fut
    return result


class Scenario:
    def __init__(
        self,
        name: str,
        manifest: dict[str, Any],
        final_task: str,
        expected: int,
        raw: Callable[[Client], Awaitable[int]],
    ) -> None:
        self.name, self.final_task, self.expected, self.raw = name, final_task, expected, raw
        self.flow = parse_flowrun(manifest)
        self.tasks = len(manifest["spec"]["tasks"])


def scenarios(sizes: list[int], chain: int) -> list[Scenario]:
    out = []
    for n in sizes:
        out.append(
            Scenario(
                f"fanout-{n}",
                fanout_manifest(n),
                "reduce",
                n * (n + 1) // 2,
                lambda c, n=n: raw_fanout(c, n),
            )
        )
    if chain > 0:
        out.append(
            Scenario(
                f"chain-{chain}",
                chain_manifest(chain),
                f"t{chain - 1:03d}",
                chain,
                lambda c: raw_chain(c, chain),
            )
        )
    return out


async def run_engine(client: Client, sc: Scenario) -> dict[str, Any]:
    deliveries = 0

    def on_status(_: dict[str, Any]) -> None:  # what the operator's patcher would get
        nonlocal deliveries
        deliveries += 1

    status = await FlowEngine(sc.flow, client, on_status=on_status, status_interval=1.0).run()
    result = status["tasks"][sc.final_task].get("result")
    if status["phase"] != "Succeeded" or result != sc.expected:
        raise RuntimeError(
            f"{sc.name}: engine run ended {status['phase']} with {result!r}: "
            f"{status.get('message')}"
        )
    return {"deliveries": deliveries}


async def run_raw(client: Client, sc: Scenario) -> dict[str, Any]:
    result = await sc.raw(client)
    if result != sc.expected:
        raise RuntimeError(f"{sc.name}: raw run returned {result!r}, expected {sc.expected}")
    return {}


# -- measuring -------------------------------------------------------------------------
async def measure(client: Client, side: str, sc: Scenario, sched_separate: bool) -> dict[str, Any]:
    await settle(client)
    workers_before = await client.run(bench_tasks.cpu_time)
    sched_before = (
        await client.run_on_scheduler(bench_tasks.scheduler_cpu_time) if sched_separate else None
    )
    load_before = os.getloadavg()[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    extra = await (run_engine if side == "engine" else run_raw)(client, sc)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    load_after = os.getloadavg()[0]
    workers_after = await client.run(bench_tasks.cpu_time)
    out: dict[str, Any] = {
        "wall": round(wall, 4),
        "client_cpu": round(cpu, 4),
        "workers_cpu": round(sum(workers_after[w] - workers_before[w] for w in workers_after), 4),
        "load1": [round(load_before, 2), round(load_after, 2)],
        **extra,
    }
    if sched_before is not None:
        sched_after = await client.run_on_scheduler(bench_tasks.scheduler_cpu_time)
        out["scheduler_cpu"] = round(sched_after - sched_before, 4)
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for key in ("wall", "client_cpu", "workers_cpu", "scheduler_cpu"):
        values = [r[key] for r in runs if key in r]
        if values:
            out[f"median_{key}"] = round(statistics.median(values), 4)
    out["min_wall"] = min(r["wall"] for r in runs)
    out["median_load1"] = round(statistics.median(x for r in runs for x in r["load1"]), 2)
    return out


async def profile_engine(client: Client, sc: Scenario, directory: Path, profiler: str) -> str:
    """Run the engine side once more under a profiler; returns the profile's path."""
    await settle(client)
    if profiler == "pyinstrument":  # optional: pip install pyinstrument
        from pyinstrument import Profiler

        # async_mode="disabled": sample the whole event-loop thread, i.e. the engine *and*
        # the distributed client machinery it drives (and the in-process scheduler).
        sampler = Profiler(interval=0.0005, async_mode="disabled")
        sampler.start()
        await run_engine(client, sc)
        sampler.stop()
        path = directory / f"engine-{sc.name}.pyinstrument.txt"
        path.write_text(sampler.output_text(unicode=True, show_all=False))
        print(f"\n--- pyinstrument of the engine, {sc.name}: {path} ---")
        return str(path)
    prof = cProfile.Profile()
    prof.enable()
    await run_engine(client, sc)
    prof.disable()
    path = directory / f"engine-{sc.name}.prof"
    prof.dump_stats(path)
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
    print(f"\n--- cProfile of the engine, {sc.name} (by own time; full data in {path}) ---")
    print(text.getvalue().split("\n\n", 1)[-1].strip())
    return str(path)


# The engine's own code: the Dask adapter, its plan and reading of futures and mapped
# items, the worker side, and the run's state.
ENGINE_CODE = tuple(
    f"operator/daskflow/{m}.py"
    for m in (
        "engine/flow",
        "engine/plan",
        "engine/outcome",
        "engine/items",
        "engine/worker",
        "model/runstate",
    )
)


def _engine_fingerprint() -> dict[str, str]:
    """Which engine code was measured (the tree may be dirty)."""
    out = {}
    for rel in ENGINE_CODE:
        with contextlib.suppress(OSError):
            out[rel] = hashlib.sha256((ROOT / rel).read_bytes()).hexdigest()[:12]
    with contextlib.suppress(Exception):
        out["git_head"], dirty = git_state(ROOT)
        out["engine_tree_dirty"] = "yes" if dirty else "no"
    return out


def print_table(results: dict[str, Any]) -> None:
    sched = any("median_scheduler_cpu" in r["engine"] for r in results.values())
    head = (
        f"{'scenario':<13} {'tasks':>6} {'engine s':>9} {'raw s':>8} {'ratio':>6} {'(min)':>6} "
        f"{'cpu e/r s':>13} {'sched e/r s':>13} " * 1 + f"{'workers e/r s':>13} {'load1':>5}"
    )
    if not sched:
        head = head.replace(f"{'sched e/r s':>13} ", "")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        e, w = r["engine"], r["raw"]
        line = (
            f"{name:<13} {r['dask_tasks']:>6} {e['median_wall']:>9.3f} {w['median_wall']:>8.3f} "
            f"{r['ratio']:>6.2f} {r['ratio_of_minima']:>6.2f} "
            f"{e['median_client_cpu']:>6.2f}/{w['median_client_cpu']:<6.2f} "
        )
        if sched:
            line += f"{e['median_scheduler_cpu']:>6.2f}/{w['median_scheduler_cpu']:<6.2f} "
        line += f"{e['median_workers_cpu']:>6.2f}/{w['median_workers_cpu']:<6.2f} "
        print(line + f"{r['median_load1']:>5.2f}")
    print(
        f"ratio = median engine wall / median raw wall (target <= {TARGET_RATIO}); (min) = the "
        "same with the fastest run of each side; cpu = CPU seconds of this process (the client; "
        "with --cluster inprocess also the scheduler); load1 = median 1-min load average "
        "around the runs"
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run every scenario on one cluster; returns the report."""
    scs = scenarios(args.sizes, args.chain)
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {}
    profiles: list[str] = []
    async with cluster_client(args.cluster) as client:
        await client.wait_for_workers(WORKERS)
        sched_separate = args.cluster == "subprocess"
        for sc in scs:
            for _ in range(args.warmup):  # imports, connections, caches: both sides
                await measure(client, "engine", sc, sched_separate)
                await measure(client, "raw", sc, sched_separate)
            sides: dict[str, list[dict[str, Any]]] = {"engine": [], "raw": []}
            for rep in range(args.repeat):
                order = ("engine", "raw") if rep % 2 == 0 else ("raw", "engine")
                for side in order:
                    run = await measure(client, side, sc, sched_separate)
                    run["rep"], run["first"] = rep, order[0] == side
                    sides[side].append(run)
                    print(
                        f"  {sc.name:<14} rep {rep} {side:<6} wall {run['wall']:7.3f}s "
                        f"cpu {run['client_cpu']:6.3f}s load1 {run['load1'][0]:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
            engine, raw = summarize(sides["engine"]), summarize(sides["raw"])
            dask_tasks = (
                sc.tasks + int(sc.name.split("-")[1]) - 1
                if sc.name.startswith("fanout")
                else sc.tasks
            )
            results[sc.name] = {
                "dask_tasks": dask_tasks,
                "engine": engine,
                "raw": raw,
                "ratio": round(engine["median_wall"] / raw["median_wall"], 3),
                "ratio_of_minima": round(engine["min_wall"] / raw["min_wall"], 3),
                "cpu_ratio": round(engine["median_client_cpu"] / raw["median_client_cpu"], 3),
                "median_load1": round(
                    statistics.median(
                        x for r in sides["engine"] + sides["raw"] for x in r["load1"]
                    ),
                    2,
                ),
            }
        if args.profile:
            for sc in scs:
                profiles.append(await profile_engine(client, sc, Path(args.profile), args.profiler))
    report = {
        "label": args.label,
        "started": started.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "distributed": distributed.__version__,
            "dask": dask.__version__,
        },
        "cluster": {
            "mode": args.cluster,
            "workers": WORKERS,
            "threads_per_worker": THREADS,
            "processes": True,
        },
        "engine_code": _engine_fingerprint(),
        "repeat": args.repeat,
        "warmup": args.warmup,
        "target_ratio": TARGET_RATIO,
        "scenarios": results,
        "profiles": profiles,
    }
    return report


def write_report(report: dict[str, Any]) -> None:
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"engine-{report['label']}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print()
    print_table(report["scenarios"])
    print(f"\nwrote {path.relative_to(ROOT)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", "-R", type=int, default=3, help="timed runs per side (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per side first (default 1)")
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1000, 10000],
        help="fan-out widths, comma-separated (1000,10000)",
    )
    p.add_argument("--chain", type=int, default=50, help="chain length; 0 to skip (default 50)")
    p.add_argument(
        "--cluster",
        choices=("inprocess", "subprocess"),
        default="inprocess",
        help="scheduler in this process (as under `daskflow run`, default) or in a "
        "child process (separates client CPU from scheduler CPU)",
    )
    p.add_argument(
        "--label",
        default=platform.node() or "local",
        help="names the results file engine-<label>.json",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="after timing, profile the engine side once per scenario into DIR",
    )
    p.add_argument(
        "--profiler",
        choices=("cprofile", "pyinstrument"),
        default="cprofile",
        help="cprofile (stdlib, default) or pyinstrument (if installed)",
    )
    p.add_argument("--serve-cluster", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.serve_cluster:
        serve_cluster()
        sys.exit(0)
    if ARGS.profile:
        Path(ARGS.profile).mkdir(parents=True, exist_ok=True)
    write_report(asyncio.run(main(ARGS)))
