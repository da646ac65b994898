#!/usr/bin/env python
"""Operator benchmark: daskflow's kopf operator on a real etcd + kube-apiserver (issue 3, §6).

It starts its own test control plane (``harness/controlplane.py``; the binaries come from
``hack/build-testenv.sh`` or ``$KUBEBUILDER_ASSETS``), installs the CRDs and runs
``daskflow operator`` as a subprocess authenticated as its least-privileged ServiceAccount,
exactly as the test suite does (``harness/kube.py``). A Python watch on the FlowRuns
(in this process) timestamps every resourceVersion the API server hands out.

Scenarios (``--only`` picks some):

* ``latency``: ``kubectl apply`` of a 10-task chain (``bench_tasks:inc``) -> phase Succeeded,
  in-process runner + local backend, ``--reps`` times. The total includes the start of a fresh
  LocalCluster (2 workers x 1 thread) inside the operator; the split uses
  ``status.runner.clusterStartupSeconds`` and the moment phase Running was first seen.
* ``map``: a 1,000-item mapped FlowRun (source -> map inc -> total, as bench_engine.py's
  fan-out) through the operator, against the same FlowRun through ``FlowEngine`` alone on an
  identical fresh LocalCluster (2x1) in this process; ``--map-reps`` times each, alternating
  which side goes first.
* ``patches``: status patches per second per FlowRun during a long-ish run (``--patch-items``
  mapped ``time:sleep(--patch-sleep)`` items on 2 workers): resourceVersion changes that changed
  ``.status``, and the operator's ``daskflow_status_patches_total``.
* ``status``: the largest status, for a ``--wide-tasks``-task FlowRun whose tasks each return a
  ``--result-bytes`` string (``builtins:str.zfill``): the final ``kubectl get -o json`` object
  and the largest ``.status`` seen on the watch.
* ``memory``: operator RSS (psutil) idle and with ``--pods`` concurrent small FlowRuns in pod
  mode with the kubernetes backend (a runner Job and a DaskCluster each; no kubelet runs, so
  they stay Pending), plus the operator's CPU and the API requests it makes meanwhile.

Every figure carries the load averages around it: the machine is shared. It prints a table and
writes ``benchmarks/results/operator-<label>.json``.

    .venv/bin/python benchmarks/bench_operator.py                       # everything
    .venv/bin/python benchmarks/bench_operator.py --reps 5 --map-reps 7 --label mybox
    .venv/bin/python benchmarks/bench_operator.py --only memory --pods 100
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import psutil  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from bench_common import git_state  # noqa: E402
from daskflow.model.validate import parse_flowrun  # noqa: E402
from harness.controlplane import ControlPlane, KubeCluster  # noqa: E402
from harness.kube import OperatorProcess, apply, install_crds, operator_running  # noqa: E402

GROUP, VERSION, PLURAL = "daskflow.io", "v1alpha1", "flowruns"
WORKERS, THREADS = 2, 1
IMAGE = "registry.example/flows:1.0"  # pod mode only: never pulled, no kubelet runs
TERMINAL = ("Succeeded", "Failed", "Cancelled")
SCENARIOS = ("latency", "map", "patches", "status", "memory")
LAST_APPLIED = "metadata.annotations[kubectl.kubernetes.io/last-applied-configuration]"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": med(values), "min": round(min(values), 3), "max": round(max(values), 3)}


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


# -- the flows -------------------------------------------------------------------------
def flowrun(name: str, tasks: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {
            "cluster": {"workers": WORKERS, "threadsPerWorker": THREADS},
            "tasks": tasks,
            **spec,
        },
    }


def chain_flow(name: str, length: int = 10) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [{"name": "t00", "call": "bench_tasks:inc", "args": [0]}]
    for i in range(1, length):
        tasks.append(
            {
                "name": f"t{i:02d}",
                "call": "bench_tasks:inc",
                "args": [f"$(tasks.t{i - 1:02d}.result)"],
            }
        )
    return flowrun(name, tasks)


def map_flow(name: str, n: int) -> dict[str, Any]:
    """The fan-out of bench_engine.py: source -> n mapped inc -> total."""
    doc = flowrun(
        name,
        [
            {"name": "source", "call": "bench_tasks:make_items", "args": ["$(params.n)"]},
            {
                "name": "work",
                "map": "$(tasks.source.result)",
                "call": "bench_tasks:inc",
                "args": ["$(item)"],
            },
            {"name": "reduce", "call": "bench_tasks:total", "args": ["$(tasks.work.result)"]},
        ],
    )
    doc["spec"]["parameters"] = {"n": n}
    return doc


def sleepy_flow(name: str, items: int, seconds: float) -> dict[str, Any]:
    return flowrun(
        name,
        [
            {"name": "sleep", "map": [seconds] * items, "call": "time:sleep", "args": ["$(item)"]},
            {"name": "done", "call": "bench_tasks:total", "args": [[1, 2]], "dependsOn": ["sleep"]},
        ],
    )


def wide_flow(name: str, tasks: int, result_bytes: int, chained: bool = False) -> dict[str, Any]:
    """``tasks`` tasks, each returning a ``result_bytes``-character string: independent (they
    all finish within a status interval or two), or each ``dependsOn`` the one before (results
    trickle in, so the status grows patch by patch up to its size budget)."""
    return flowrun(
        name,
        [
            {
                "name": f"r{i:03d}",
                "call": "builtins:str.zfill",
                "args": [f"r{i:03d}", result_bytes],
                **({"dependsOn": [f"r{i - 1:03d}"]} if chained and i else {}),
            }
            for i in range(tasks)
        ],
    )


def small_flow(name: str) -> dict[str, Any]:
    doc = flowrun(
        name,
        [
            {"name": "a", "command": ["echo", "a"]},
            {"name": "b", "command": ["echo", "$(tasks.a.result)"]},
            {"name": "c", "command": ["echo", "$(tasks.b.result)"]},
        ],
        image=IMAGE,
    )
    doc["spec"]["cluster"]["startupTimeoutSeconds"] = 3600  # no kubelet: it never starts
    return doc


# -- watching FlowRuns -----------------------------------------------------------------
@dataclass
class Seen:
    """One watch event of one FlowRun."""

    t: float  # time.perf_counter() when it arrived here
    type: str
    name: str
    rv: str
    phase: str | None
    status_changed: bool
    status_bytes: int
    object_bytes: int
    runner: dict[str, Any]


class Watcher:
    """A watch on the FlowRuns of a namespace, in a thread of this process."""

    def __init__(self, kube: KubeCluster, namespace: str) -> None:
        self.namespace = namespace
        self.api = kube.api_client()
        self.custom = k8s.CustomObjectsApi(self.api)
        self.events: list[Seen] = []
        self.latest: dict[str, dict[str, Any]] = {}
        self.largest: dict[str, tuple[int, dict[str, Any]]] = {}  # name -> (bytes, status)
        self.largest_object: dict[str, tuple[int, dict[str, Any]]] = {}
        self._status_hash: dict[str, str] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._rv = ""
        self._thread = threading.Thread(target=self._run, name=f"watch-{namespace}", daemon=True)

    def __enter__(self) -> Watcher:
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        self._rv = listed["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self.api.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            w = k8s_watch.Watch()
            try:
                for ev in w.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    resource_version=self._rv,
                    timeout_seconds=20,
                    allow_watch_bookmarks=True,
                ):
                    self._record(ev)
                    if self._stop.is_set():
                        w.stop()
                        break
            except ApiException as err:
                if err.status == 410:  # too old: start again from now (not expected here)
                    log(f"watch {self.namespace}: 410 Gone, relisting")
                    listed = self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL
                    )
                    self._rv = listed["metadata"]["resourceVersion"]
                else:
                    log(f"watch {self.namespace}: {err.status} {err.reason}")
                    time.sleep(0.5)
            except Exception as err:  # connection trouble: reconnect from the last rv
                log(f"watch {self.namespace}: {type(err).__name__}: {err}")
                time.sleep(0.5)

    def _record(self, ev: dict[str, Any]) -> None:
        t = time.perf_counter()
        obj = ev["object"]
        kind = ev["type"]
        rv = (obj.get("metadata") or {}).get("resourceVersion", "")
        if kind == "BOOKMARK":
            self._rv = rv
            return
        if kind == "ERROR":
            raise ApiException(status=obj.get("code", 500), reason=obj.get("message", ""))
        self._rv = rv
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        text = compact(status) if status else ""
        digest = hashlib.sha1(text.encode()).hexdigest()
        changed = kind == "MODIFIED" and digest != self._status_hash.get(name)
        self._status_hash[name] = digest
        size = len(text.encode())
        if size > self.largest.get(name, (0, {}))[0]:
            self.largest[name] = (size, status)
        obj_size = len(compact(obj).encode())
        if obj_size > self.largest_object.get(name, (0, {}))[0]:
            self.largest_object[name] = (obj_size, obj)
        seen = Seen(
            t,
            kind,
            name,
            rv,
            status.get("phase"),
            changed,
            size,
            obj_size,
            dict(status.get("runner") or {}),
        )
        with self._cond:
            self.events.append(seen)
            self.latest[name] = obj
            self._cond.notify_all()

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float) -> Any:
        with self._cond:
            found = self._cond.wait_for(predicate, timeout)
        if not found:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        return found

    def of(self, name: str) -> list[Seen]:
        with self._cond:
            return [e for e in self.events if e.name == name]

    def first(self, name: str, phases: tuple[str, ...]) -> Seen | None:
        return next((e for e in self.of(name) if e.phase in phases), None)

    def wait_phase(self, name: str, phases: tuple[str, ...], timeout: float) -> Seen:
        seen: Seen = self.wait(
            f"{name} to reach {phases}", lambda: self.first(name, phases), timeout
        )
        return seen


def object_parts(obj: dict[str, Any]) -> dict[str, int]:
    """Compact JSON bytes of the big parts of an object."""
    meta = obj.get("metadata") or {}
    return {
        "spec": len(compact(obj.get("spec") or {}).encode()),
        "status": len(compact(obj.get("status") or {}).encode()),
        "metadata.managedFields": len(compact(meta.get("managedFields") or []).encode()),
        **{
            f"metadata.annotations[{k}]": len(v.encode())
            for k, v in (meta.get("annotations") or {}).items()
        },
    }


def analyse(watcher: Watcher, name: str) -> dict[str, Any]:
    """What the watch saw of one finished FlowRun: phases, status patches, sizes."""
    evs = watcher.of(name)
    added = next(e for e in evs if e.type == "ADDED")
    running = next((e for e in evs if e.phase == "Running"), None)
    done = next(e for e in evs if e.phase in TERMINAL)
    upto = [e for e in evs if e.t <= done.t]
    patches = [e for e in upto if e.status_changed]
    meta_only = [e for e in upto if e.type == "MODIFIED" and not e.status_changed]
    out: dict[str, Any] = {
        "phase": done.phase,
        "t_added": added.t,
        "t_running": running.t if running else None,
        "t_done": done.t,
        "status_patches": len(patches),
        "metadata_only_updates": len(meta_only),
        "cluster_startup_s": done.runner.get("clusterStartupSeconds"),
        "largest_status_bytes": max((e.status_bytes for e in upto), default=0),
        "largest_object_bytes": max((e.object_bytes for e in upto), default=0),
    }
    if running is not None:
        during = [e.t for e in patches if running.t <= e.t <= done.t]
        span = done.t - running.t
        out["running_to_done_s"] = round(span, 3)
        # the first patch (Running) opens the span, so count the ones after it
        out["patches_per_s"] = round((len(during) - 1) / span, 3) if span > 0 else None
        out["max_patches_in_1s"] = max(
            (sum(1 for u in during if t <= u < t + 1.0) for t in during), default=0
        )
        gaps = [b - a for a, b in itertools.pairwise(during)]
        out["min_gap_between_patches_s"] = round(min(gaps), 3) if gaps else None
        out["median_gap_between_patches_s"] = round(statistics.median(gaps), 3) if gaps else None
    return out


# -- the operator ----------------------------------------------------------------------
def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rss(pid: int) -> dict[str, float]:
    """RSS in MiB of the process, and of the process with all its descendants."""
    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    kids = 0
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            kids += child.memory_info().rss
    return {
        "rss_mib": round(own / 2**20, 1),
        "rss_with_children_mib": round((own + kids) / 2**20, 1),
    }


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@contextlib.contextmanager
def operator(
    kube: KubeCluster,
    namespace: str,
    runner: str,
    backend: str,
    status_interval: float,
    logs: Path | None,
) -> Iterator[OperatorProcess]:
    """``daskflow operator`` as its own ServiceAccount, its start timed, the warnings of its
    log kept (and the log copied to ``logs``)."""
    image = ("--image", IMAGE) if runner == "pod" else ()
    log_path = kube.work_dir / f"operator-{namespace}.log"
    t0 = time.perf_counter()
    try:
        with operator_running(
            kube,
            namespace,
            runner=runner,
            backend=backend,
            extra=image,
            status_interval=status_interval,
            show_log=False,
        ) as op:
            log(
                f"operator ({runner}/{backend}) ready in {time.perf_counter() - t0:.1f}s, "
                f"pid {op.proc.pid if op.proc else '?'}"
            )
            yield op
    finally:
        LOG_WARNINGS[namespace] = log_warnings(log_path)
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(log_path, logs / log_path.name)


LOG_WARNINGS: dict[str, dict[str, int]] = {}


def log_warnings(path: Path) -> dict[str, int]:
    """WARNING/ERROR lines of an operator log, without their timestamps, counted."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            for level in (" WARNING ", " ERROR ", " CRITICAL "):
                if level in line:
                    msg = level.strip() + " " + line.split(level, 1)[1][:300]
                    counts[msg] = counts.get(msg, 0) + 1
    return counts


def create_namespace(kube: KubeCluster, name: str) -> None:
    apply(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def kubectl_apply(kube: KubeCluster, namespace: str, doc: dict[str, Any]) -> float:
    """``kubectl apply`` of a manifest; returns the perf_counter() just before kubectl ran."""
    text = json.dumps(doc)
    t0 = time.perf_counter()
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=text)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {result.stderr}")
    return t0


def create(custom: k8s.CustomObjectsApi, namespace: str, doc: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    return t0


def wait_torn_down(op: OperatorProcess, timeout: float = 60.0) -> float:
    """Wait until the operator's LocalCluster (its spawned nannies and workers) is gone, so
    that its teardown does not overlap the next measurement; returns the seconds waited.
    (multiprocessing's resource tracker stays: it is not counted.)"""
    assert op.proc is not None

    def spawned() -> int:
        count = 0
        for child in psutil.Process(op.proc.pid).children(recursive=True):  # type: ignore[union-attr]
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(child.cmdline()):
                    count += 1
        return count

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        with contextlib.suppress(psutil.Error):
            if not spawned():
                break
        time.sleep(0.2)
    return round(time.perf_counter() - t0, 2)


def check_succeeded(watcher: Watcher, name: str) -> dict[str, Any]:
    obj = watcher.latest[name]
    status = obj.get("status") or {}
    if status.get("phase") != "Succeeded":
        raise RuntimeError(f"{name} ended {status.get('phase')}: {status.get('message')}")
    return status


# -- scenarios -------------------------------------------------------------------------
def run_latency(
    kube: KubeCluster, ns: str, watcher: Watcher, op: OperatorProcess, reps: int
) -> dict[str, Any]:
    assert op.proc is not None
    runs = []
    for rep in range(reps):
        name = f"latency-{rep}"
        load0 = loadavg()
        t0 = kubectl_apply(kube, ns, chain_flow(name))
        watcher.wait_phase(name, TERMINAL, 300)
        load1 = loadavg()
        status = check_succeeded(watcher, name)
        assert status["tasks"]["t09"]["result"] == 10, status["tasks"]["t09"]
        a = analyse(watcher, name)
        startup = a["cluster_startup_s"] or 0.0
        run = {
            "rep": rep,
            "apply_to_succeeded_s": round(a["t_done"] - t0, 3),
            "created_to_succeeded_s": round(a["t_done"] - a["t_added"], 3),
            "kubectl_apply_s": round(a["t_added"] - t0, 3),
            "created_to_running_s": round(a["t_running"] - a["t_added"], 3),
            "cluster_startup_s": startup,
            # the operator's share before the engine runs: pick-up, daemon start, first patch
            "operator_overhead_s": round(a["t_running"] - a["t_added"] - startup, 3),
            "after_cluster_up_s": a["running_to_done_s"],
            "status_patches": a["status_patches"],
            "metadata_only_updates": a["metadata_only_updates"],
            "operator_rss_after": rss(op.proc.pid),
            "load_before": load0,
            "load_after": load1,
        }
        run["teardown_wait_s"] = wait_torn_down(op)
        runs.append(run)
        log(
            f"latency rep {rep}: apply->Succeeded {run['apply_to_succeeded_s']:.2f}s "
            f"(cluster {startup:.2f}s, after cluster up {run['after_cluster_up_s']:.2f}s) "
            f"load {load0[0]:.2f}"
        )
    out: dict[str, Any] = {"tasks": 10, "reps": reps, "runs": runs}
    for key in (
        "apply_to_succeeded_s",
        "created_to_succeeded_s",
        "kubectl_apply_s",
        "cluster_startup_s",
        "operator_overhead_s",
        "after_cluster_up_s",
    ):
        out[key] = spread([r[key] for r in runs])
    out["load1"] = spread([x for r in runs for x in (r["load_before"][0], r["load_after"][0])])
    return out


# The engine alone runs in a child started with ``python -c``: LocalCluster workers are
# spawned (distributed's default), and a spawned child re-imports its parent's __main__ file,
# which for this script means kubernetes, cryptography and the test harness: seconds of extra
# cluster start on a busy 2-core machine that the operator (whose __main__ is the small
# ``daskflow`` entry point) does not pay. ``-c`` has no file to re-import.
ENGINE_CHILD = r"""
import asyncio, json, sys, time
from daskflow.engine.flow import FlowEngine
from daskflow.engine.local import dask_client
from daskflow.model.validate import parse_flowrun

args = json.loads(sys.stdin.read())

async def main():
    flow = parse_flowrun(args["doc"])
    t0 = time.perf_counter()
    async with dask_client(workers=args["workers"], threads_per_worker=args["threads"],
                           import_paths=[args["path"]]) as client:
        t1 = time.perf_counter()
        status = await FlowEngine(flow, client).run()
        t2 = time.perf_counter()
    print(json.dumps({"total_s": round(t2 - t0, 3), "cluster_startup_s": round(t1 - t0, 3),
                      "after_cluster_up_s": round(t2 - t1, 3), "phase": status["phase"],
                      "message": status.get("message"),
                      "result": status["tasks"]["reduce"].get("result")}))

asyncio.run(main())
"""


def engine_alone(doc: dict[str, Any]) -> dict[str, Any]:
    """``FlowEngine(flow, client).run()`` on a fresh ``dask_client(workers=2,
    threads_per_worker=1)``, no status sink, in a fresh child process."""
    parse_flowrun(doc)  # fail here, not in the child, on a bad manifest
    payload = json.dumps({"doc": doc, "workers": WORKERS, "threads": THREADS, "path": str(HERE)})
    proc = subprocess.run(
        [sys.executable, "-c", ENGINE_CHILD],
        input=payload,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"engine child failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if out.pop("phase") != "Succeeded":
        raise RuntimeError(f"engine alone did not succeed: {out.get('message')}")
    out.pop("message")
    return out


def run_map(
    kube: KubeCluster, ns: str, watcher: Watcher, op: OperatorProcess, reps: int, items: int
) -> dict[str, Any]:
    custom = k8s.CustomObjectsApi(kube.api_client())
    expected = items * (items + 1) // 2
    sides: dict[str, list[dict[str, Any]]] = {"operator": [], "engine": []}
    for rep in range(reps):
        order = ("operator", "engine") if rep % 2 == 0 else ("engine", "operator")
        for side in order:
            load0 = loadavg()
            if side == "operator":
                name = f"map-{items}-{rep}"
                t0 = create(custom, ns, map_flow(name, items))
                watcher.wait_phase(name, TERMINAL, 900)
                status = check_succeeded(watcher, name)
                if status["tasks"]["reduce"].get("result") != expected:
                    raise RuntimeError(f"{name}: reduce = {status['tasks']['reduce']}")
                a = analyse(watcher, name)
                run = {
                    "total_s": round(a["t_done"] - t0, 3),
                    "cluster_startup_s": a["cluster_startup_s"],
                    "after_cluster_up_s": a["running_to_done_s"],
                    "status_patches": a["status_patches"],
                    "patches_per_s": a["patches_per_s"],
                    "largest_status_bytes": a["largest_status_bytes"],
                    "teardown_wait_s": wait_torn_down(op),
                }
            else:
                run = engine_alone(map_flow(f"map-{items}-engine", items))
                if run.pop("result") != expected:
                    raise RuntimeError("engine alone: wrong result")
            run.update(rep=rep, first=order[0] == side, load_before=load0, load_after=loadavg())
            sides[side].append(run)
            log(
                f"map {items} rep {rep} {side:<8}: total {run['total_s']:.2f}s, cluster "
                f"{run['cluster_startup_s']:.2f}s, after up {run['after_cluster_up_s']:.2f}s "
                f"load {load0[0]:.2f}"
            )
    custom.api_client.close()
    out: dict[str, Any] = {"items": items, "reps": reps}
    for side, runs in sides.items():
        out[side] = {
            "runs": runs,
            **{
                k: spread([r[k] for r in runs])
                for k in ("total_s", "cluster_startup_s", "after_cluster_up_s")
            },
        }
    out["ratio_total"] = round(
        out["operator"]["total_s"]["median"] / out["engine"]["total_s"]["median"], 3
    )
    out["ratio_after_cluster_up"] = round(
        out["operator"]["after_cluster_up_s"]["median"]
        / out["engine"]["after_cluster_up_s"]["median"],
        3,
    )
    # the same, pairing the two sides of each repetition (less exposed to load drifting)
    pairs = [
        o["after_cluster_up_s"] / e["after_cluster_up_s"]
        for o, e in zip(sides["operator"], sides["engine"], strict=True)
    ]
    out["ratio_after_cluster_up_per_rep"] = [round(x, 3) for x in pairs]
    out["ratio_after_cluster_up_median_of_pairs"] = med(pairs)
    out["ratio_total_per_rep"] = [
        round(o["total_s"] / e["total_s"], 3)
        for o, e in zip(sides["operator"], sides["engine"], strict=True)
    ]
    out["load1"] = spread(
        [
            x
            for runs in sides.values()
            for r in runs
            for x in (r["load_before"][0], r["load_after"][0])
        ]
    )
    return out


def run_patches(
    kube: KubeCluster,
    ns: str,
    watcher: Watcher,
    op: OperatorProcess,
    items: int,
    seconds: float,
    status_interval: float,
) -> dict[str, Any]:
    custom = k8s.CustomObjectsApi(kube.api_client())
    name = f"patches-{items}"
    before = metric(op.metrics(), "daskflow_status_patches_total")
    load0 = loadavg()
    create(custom, ns, sleepy_flow(name, items, seconds))
    watcher.wait_phase(name, TERMINAL, 900)
    load1 = loadavg()
    check_succeeded(watcher, name)
    time.sleep(1.0)  # the operator's own watch may lag ours
    after = metric(op.metrics(), "daskflow_status_patches_total")
    custom.api_client.close()
    a = analyse(watcher, name)
    out = {
        "items": items,
        "item_seconds": seconds,
        "status_interval": status_interval,
        "running_to_done_s": a["running_to_done_s"],
        "status_patches": a["status_patches"],
        "metadata_only_updates": a["metadata_only_updates"],
        "patches_per_s": a["patches_per_s"],
        "max_patches_in_1s": a["max_patches_in_1s"],
        "min_gap_between_patches_s": a["min_gap_between_patches_s"],
        "median_gap_between_patches_s": a["median_gap_between_patches_s"],
        "metric_status_patches_delta": after - before,
        "load_before": load0,
        "load_after": load1,
    }
    log(
        f"patches: {a['status_patches']} status patches in {a['running_to_done_s']:.1f}s "
        f"running = {a['patches_per_s']}/s (metric delta {after - before:g}) load {load0[0]:.2f}"
    )
    return out


def run_status_size(
    kube: KubeCluster,
    ns: str,
    watcher: Watcher,
    op: OperatorProcess,
    tasks: int,
    result_bytes: int,
    shape: str,
) -> dict[str, Any]:
    name = f"wide-{tasks}-{shape}"
    doc = wide_flow(name, tasks, result_bytes, chained=shape == "chained")
    load0 = loadavg()
    t0 = kubectl_apply(kube, ns, doc)
    watcher.wait_phase(name, TERMINAL, 900)
    load1 = loadavg()
    check_succeeded(watcher, name)
    time.sleep(1.0)
    got = kube.kubectl("get", "flowrun", name, "-n", ns, "-o", "json", check=True).stdout
    obj = json.loads(got)
    status = obj["status"]
    kept = sum(1 for t in status["tasks"].values() if "result" in t)
    # kubectl hides managedFields by default; the API server stores (and watches send) them
    full = json.loads(
        kube.kubectl(
            "get", "flowrun", name, "-n", ns, "-o", "json", "--show-managed-fields", check=True
        ).stdout
    )
    parts = object_parts(full)
    largest_obj = watcher.largest_object[name][1]
    a = analyse(watcher, name)
    largest_bytes, largest = watcher.largest[name]
    largest_kept = sum(1 for t in (largest.get("tasks") or {}).values() if "result" in t)
    out = {
        "tasks": tasks,
        "result_bytes": result_bytes,
        "shape": shape,
        "spec_bytes": len(compact(doc["spec"]).encode()),
        "apply_to_succeeded_s": round(a["t_done"] - t0, 3),
        "final_object_kubectl_json_bytes": len(got.encode()),
        "final_object_compact_bytes": len(compact(obj).encode()),
        "final_object_with_managed_fields_compact_bytes": len(compact(full).encode()),
        "final_object_parts_compact_bytes": parts,
        "largest_object_compact_bytes": a["largest_object_bytes"],
        "largest_object_parts_compact_bytes": object_parts(largest_obj),
        "final_status_bytes": len(compact(status).encode()),
        "final_status_kubectl_json_bytes": len(json.dumps(status, indent=4).encode()),
        "final_results_kept": kept,
        "final_truncated": bool(status.get("truncated")),
        "largest_status_bytes": largest_bytes,
        "largest_status_results_kept": largest_kept,
        "largest_status_truncated": bool(largest.get("truncated")),
        "status_patches": a["status_patches"],
        "metadata_only_updates": a["metadata_only_updates"],
        "patches_per_s": a["patches_per_s"],
        "operator_rss_after": rss(op.proc.pid) if op.proc else None,
        "load_before": load0,
        "load_after": load1,
    }
    log(
        f"status ({shape}): largest {largest_bytes} B ({largest_kept} results), final "
        f"{out['final_status_bytes']} B ({kept} results, truncated={out['final_truncated']}) "
        f"load {load0[0]:.2f}"
    )
    return out


def apiserver_requests(kube: KubeCluster) -> dict[str, float]:
    """apiserver_request_total by verb/resource, for the resources daskflow touches."""
    text = kube.kubectl("get", "--raw", "/metrics", check=True).stdout
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            kv.split("=", 1)
            for kv in line[line.index("{") + 1 : line.index("}")].replace('"', "").split(",")
        )
        if labels.get("resource") not in ("jobs", "daskclusters", "flowruns", "events"):
            continue
        key = f"{labels.get('verb')} {labels.get('resource')}" + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def sample_rss(pid: int, seconds: float, every: float = 1.0) -> list[dict[str, Any]]:
    samples = []
    end = time.perf_counter() + seconds
    while True:
        with contextlib.suppress(psutil.Error):
            samples.append(
                {
                    **rss(pid),
                    "threads": psutil.Process(pid).num_threads(),
                    "t": round(time.perf_counter(), 2),
                }
            )
        if time.perf_counter() >= end:
            return samples
        time.sleep(every)


def run_memory(
    kube: KubeCluster,
    ns: str,
    status_interval: float,
    count: int,
    window: float,
    rounds: int,
    logs: Path | None,
) -> dict[str, Any]:
    custom = k8s.CustomObjectsApi(kube.api_client())
    cp_pids = kube.pids() if isinstance(kube, ControlPlane) else {}
    out: dict[str, Any] = {"flowruns": count, "mode": "pod", "backend": "kubernetes", "rounds": []}
    with (
        Watcher(kube, ns) as watcher,
        operator(kube, ns, "pod", "kubernetes", status_interval, logs) as op,
    ):
        assert op.proc is not None
        pid = op.proc.pid
        time.sleep(5)  # let it settle: peering, first watch lists
        load0 = loadavg()
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        idle = sample_rss(pid, 10)
        out["idle"] = {
            "rss_mib": spread([s["rss_mib"] for s in idle]),
            "threads": idle[-1]["threads"],
            "cpu_percent": round(100 * (cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0), 1),
            "load_before": load0,
            "load_after": loadavg(),
        }
        log(f"memory: idle RSS {out['idle']['rss_mib']['median']} MiB, load {load0[0]:.2f}")
        for rnd in range(rounds):
            out["rounds"].append(
                memory_round(kube, custom, watcher, ns, pid, cp_pids, count, window, rnd)
            )
    custom.api_client.close()
    out["busy"] = out["rounds"][0]
    out["after_delete"] = out["rounds"][-1]["after_delete"]
    return out


def memory_round(
    kube: KubeCluster,
    custom: k8s.CustomObjectsApi,
    watcher: Watcher,
    ns: str,
    pid: int,
    cp_pids: dict[str, int],
    count: int,
    window: float,
    rnd: int,
) -> dict[str, Any]:
    """Create ``count`` FlowRuns, wait until each has its Job and DaskCluster, sample the
    operator for ``window`` seconds, then delete them all (through the finalizer)."""
    names = [f"small-{rnd}-{i:03d}" for i in range(count)]
    load0 = loadavg()
    t_create = time.perf_counter()
    for name in names:
        create(custom, ns, small_flow(name))
    t_created = time.perf_counter()

    def all_pending() -> bool:
        return all((watcher.latest.get(n, {}).get("status") or {}).get("runner") for n in names)

    watcher.wait(f"{count} FlowRuns to get a runner Job", all_pending, 600)
    t_pending = time.perf_counter()
    first_status = []  # per FlowRun: ADDED -> status with its runner Job recorded
    for n in names:
        evs = watcher.of(n)
        added = next(e.t for e in evs if e.type == "ADDED")
        first_status.append(next(e.t for e in evs if e.runner) - added)
    log(
        f"memory round {rnd}: {count} created in {t_created - t_create:.1f}s, all Pending with "
        f"Job + DaskCluster after {t_pending - t_create:.1f}s"
    )
    jobs = custom.list_namespaced_custom_object("batch", "v1", ns, "jobs")["items"]
    clusters = custom.list_namespaced_custom_object(
        "kubernetes.dask.org", "v1", ns, "daskclusters"
    )["items"]
    req0, cpu0, t0 = apiserver_requests(kube), cpu_seconds(pid), time.perf_counter()
    cp_cpu0 = {k: cpu_seconds(v) for k, v in cp_pids.items()}
    busy = sample_rss(pid, window)
    elapsed = time.perf_counter() - t0
    req1, cpu1 = apiserver_requests(kube), cpu_seconds(pid)
    cp_cpu1 = {k: cpu_seconds(v) for k, v in cp_pids.items()}
    load1 = loadavg()
    phases: dict[str, int] = {}
    for n in names:
        ph = (watcher.latest[n].get("status") or {}).get("phase", "?")
        phases[ph] = phases.get(ph, 0) + 1
    out: dict[str, Any] = {
        "round": rnd,
        "jobs": len(jobs),
        "daskclusters": len(clusters),
        "phases": phases,
        "create_s": round(t_created - t_create, 2),
        "all_pending_after_s": round(t_pending - t_create, 2),
        "added_to_pending_status_s": spread(first_status),
        "window_s": round(elapsed, 1),
        "rss_mib": spread([s["rss_mib"] for s in busy]),
        "rss_first_mib": busy[0]["rss_mib"],
        "rss_last_mib": busy[-1]["rss_mib"],
        "threads": spread([s["threads"] for s in busy]),
        "cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "control_plane_cpu_percent": {
            k: round(100 * (cp_cpu1[k] - cp_cpu0[k]) / elapsed, 1) for k in cp_pids
        },
        "api_requests_per_s": {
            k: round((req1.get(k, 0) - req0.get(k, 0)) / elapsed, 1)
            for k in sorted(req1)
            if req1.get(k, 0) - req0.get(k, 0) > 0
        },
        "load_before": load0,
        "load_after": load1,
    }
    log(
        f"memory round {rnd}: busy RSS {out['rss_mib']}, threads {out['threads']}, "
        f"cpu {out['cpu_percent']}%, requests/s {out['api_requests_per_s']} load {load1[0]:.2f}"
    )
    # Then delete them all (the finalizer goes through the operator) and look again.
    t_del = time.perf_counter()
    for name in names:
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    gone: float | None
    try:
        watcher.wait(
            "the FlowRuns to be gone",
            lambda: all(any(e.type == "DELETED" for e in watcher.of(n)) for n in names),
            300,
        )
        gone = round(time.perf_counter() - t_del, 2)
    except TimeoutError:
        gone = None
    time.sleep(5)
    after = sample_rss(pid, 5)
    out["after_delete"] = {
        "deleted_after_s": gone,
        "rss_mib": spread([s["rss_mib"] for s in after]),
        "threads": after[-1]["threads"],
        "load": loadavg(),
    }
    log(f"memory round {rnd}: all deleted after {gone}s; RSS then {out['after_delete']['rss_mib']}")
    return out


# -- report ----------------------------------------------------------------------------
def environment(kube: ControlPlane | None) -> dict[str, Any]:
    import distributed
    import kopf

    out: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "distributed": distributed.__version__,
        "kopf": getattr(kopf, "__version__", "?"),
        "memory_total_mib": round(psutil.virtual_memory().total / 2**20),
    }
    with contextlib.suppress(Exception):
        from harness.controlplane import KUBE_VERSION

        out["kube_apiserver"] = KUBE_VERSION
        out["git_head"], out["operator_tree_dirty"] = git_state(ROOT)
    # which code was measured, since the tree may be dirty
    for rel in (
        "engine/flow.py",
        "engine/worker.py",
        "kube/operator.py",
        "kube/runner.py",
        "kube/status.py",
        "model/status.py",
    ):
        with contextlib.suppress(OSError):
            out.setdefault("code_sha256_12", {})[rel] = hashlib.sha256(
                (ROOT / "operator" / "daskflow" / rel).read_bytes()
            ).hexdigest()[:12]
    if kube is not None and kube.startup_seconds is not None:
        out["control_plane_startup_s"] = round(kube.startup_seconds, 1)
    return out


def fmt(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def print_table(report: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    r = report["results"]
    if "latency" in r:
        x = r["latency"]
        load = fmt(x["load1"])
        rows += [
            (
                f"10-task chain: kubectl apply -> Succeeded, s (R={x['reps']})",
                fmt(x["apply_to_succeeded_s"]),
                load,
            ),
            (
                "  of which LocalCluster start (clusterStartupSeconds), s",
                fmt(x["cluster_startup_s"]),
                load,
            ),
            (
                "  of which operator before the engine (pick-up, 1st patch), s",
                fmt(x["operator_overhead_s"]),
                load,
            ),
            (
                "  of which after the cluster is up (Running -> Succeeded), s",
                fmt(x["after_cluster_up_s"]),
                load,
            ),
            ("  of which kubectl apply itself, s", fmt(x["kubectl_apply_s"]), load),
        ]
    if "map" in r:
        x = r["map"]
        load = fmt(x["load1"])
        rows += [
            (
                f"{x['items']}-item map via operator, total s (R={x['reps']})",
                fmt(x["operator"]["total_s"]),
                load,
            ),
            (f"{x['items']}-item map, engine alone, total s", fmt(x["engine"]["total_s"]), load),
            ("  ratio operator/engine, total (medians)", f"{x['ratio_total']:.2f}", load),
            (
                "  after cluster up: operator s / engine s",
                f"{fmt(x['operator']['after_cluster_up_s'])} / "
                f"{fmt(x['engine']['after_cluster_up_s'])}",
                load,
            ),
            (
                "  ratio operator/engine, after cluster up (medians)",
                f"{x['ratio_after_cluster_up']:.2f}",
                load,
            ),
            (
                "  same, per repetition (operator/engine of each pair)",
                " ".join(f"{v:.2f}" for v in x["ratio_after_cluster_up_per_rep"]),
                load,
            ),
        ]
    if "patches" in r:
        x = r["patches"]
        load = f"{x['load_before'][0]:.2f}->{x['load_after'][0]:.2f}"
        rows += [
            (
                f"status patches/s per FlowRun ({x['items']}x{x['item_seconds']:g}s map, "
                f"interval {x['status_interval']:g}s)",
                f"{x['patches_per_s']:.2f} "
                f"({x['status_patches']} in {x['running_to_done_s']:.1f}s)",
                load,
            ),
            (
                "  max status patches in any 1 s / min gap s",
                f"{x['max_patches_in_1s']} / {x['min_gap_between_patches_s']}",
                load,
            ),
            (
                "  daskflow_status_patches_total delta",
                f"{x['metric_status_patches_delta']:g}",
                load,
            ),
        ]
    if "status" in r:
        x = r["status"]
        load = f"{x['load_before'][0]:.2f}->{x['load_after'][0]:.2f}"
        rows += [
            (
                f"largest .status, {x['tasks']} tasks x {x['result_bytes']} B results, bytes",
                f"{x['largest_status_bytes']} ({x['largest_status_results_kept']} results, "
                f"{x['shape']})",
                load,
            ),
            *[
                (
                    f"  largest .status, {k} tasks, bytes (results kept)",
                    f"{v['largest_status_bytes']} ({v['largest_status_results_kept']})",
                    f"{v['load_before'][0]:.2f}->{v['load_after'][0]:.2f}",
                )
                for k, v in x.get("shapes", {}).items()
            ],
            (
                "  final .status compact / as kubectl -o json prints it, bytes",
                f"{x['final_status_bytes']} / {x['final_status_kubectl_json_bytes']}",
                load,
            ),
            (
                "  final object (kubectl get -o json), bytes",
                f"{x['final_object_kubectl_json_bytes']}",
                load,
            ),
            (
                "  final managedFields / last-applied annotation, compact bytes",
                f"{x['final_object_parts_compact_bytes'].get('metadata.managedFields', 0)} / "
                f"{x['final_object_parts_compact_bytes'].get(LAST_APPLIED, 0)}",
                load,
            ),
            (
                "  largest object on the watch, compact bytes (of which managedFields)",
                f"{x['largest_object_compact_bytes']} "
                f"({x['largest_object_parts_compact_bytes']['metadata.managedFields']})",
                load,
            ),
            (
                "  results kept in final status; truncated",
                f"{x['final_results_kept']}/{x['tasks']}; {x['final_truncated']}",
                load,
            ),
            ("  apply -> Succeeded, s", f"{x['apply_to_succeeded_s']:.2f}", load),
        ]
    if "memory" in r:
        x = r["memory"]
        i, b = x["idle"], x["busy"]
        rows += [
            (
                "operator RSS idle (pod mode), MiB",
                fmt(i["rss_mib"]),
                f"{i['load_before'][0]:.2f}->{i['load_after'][0]:.2f}",
            ),
            (
                f"operator RSS with {x['flowruns']} Pending FlowRuns (pod mode), MiB",
                fmt(b["rss_mib"]),
                f"{b['load_before'][0]:.2f}->{b['load_after'][0]:.2f}",
            ),
            (
                f"  operator CPU idle / with {x['flowruns']}, %",
                f"{i['cpu_percent']} / {b['cpu_percent']}",
                "",
            ),
            (
                f"  all {x['flowruns']} with Job+DaskCluster+status after, s",
                f"{b['all_pending_after_s']}",
                "",
            ),
            (
                "  API requests/s meanwhile (all clients)",
                ", ".join(f"{k} {v:g}" for k, v in b["api_requests_per_s"].items()),
                "",
            ),
            (
                "  kube-apiserver / etcd CPU meanwhile, %",
                f"{b['control_plane_cpu_percent'].get('kube-apiserver')} / "
                f"{b['control_plane_cpu_percent'].get('etcd')}",
                "",
            ),
        ]
        for rd in x["rounds"]:
            rows += [
                (
                    f"  round {rd['round']}: RSS with them / after deleting them, MiB",
                    f"{fmt(rd['rss_mib'])} / {fmt(rd['after_delete']['rss_mib'])}",
                    f"{rd['load_before'][0]:.2f}->{rd['after_delete']['load'][0]:.2f}",
                ),
                (
                    f"  round {rd['round']}: operator threads idle / with them",
                    f"{i['threads']} / {rd['threads']['max']:g}",
                    "",
                ),
            ]
        if "inprocess_rss" in r:
            y = r["inprocess_rss"]
            rows.append(
                (
                    "operator RSS idle (in-process mode), MiB",
                    f"{y['idle']['rss_mib']}",
                    f"{y['idle']['load'][0]:.2f}",
                )
            )
    elif "inprocess_rss" in r:
        y = r["inprocess_rss"]
        rows.append(
            (
                "operator RSS idle (in-process mode), MiB",
                f"{y['idle']['rss_mib']}",
                f"{y['idle']['load'][0]:.2f}",
            )
        )
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    head = f"{'measure':<{w0}}  {'median (min-max) / value':<{w1}}  load1"
    print(head)
    print("-" * len(head))
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")
    print(
        "load1 = 1-min load average (median (min-max) around the runs, or before->after); "
        f"{report['environment']['cpus']} CPUs"
    )


def main(args: argparse.Namespace) -> int:
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    unknown = only - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}")
    # The flows call bench_tasks (this folder): the operator's LocalCluster workers get the
    # operator's PYTHONPATH (daskflow.engine.local.worker_pythonpath), the operator ours.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
    )
    logs = Path(args.keep_logs) if args.keep_logs else None
    started = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "label": args.label,
        "started": started.isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_operator.py " + " ".join(sys.argv[1:]),
        "status_interval": args.status_interval,
        "load_at_start": loadavg(),
        "results": {},
    }
    results = report["results"]
    kube = ControlPlane()
    t0 = time.perf_counter()
    kube.start()
    log(f"control plane up in {time.perf_counter() - t0:.1f}s at {kube.server}")
    try:
        install_crds(kube)
        if only & {"latency", "map", "patches", "status"}:
            ns = "bench-inprocess"
            create_namespace(kube, ns)
            with (
                Watcher(kube, ns) as watcher,
                operator(kube, ns, "in-process", "local", args.status_interval, logs) as op,
            ):
                assert op.proc is not None
                time.sleep(5)
                results["inprocess_rss"] = {"idle": {**rss(op.proc.pid), "load": loadavg()}}
                if "latency" in only:
                    results["latency"] = run_latency(kube, ns, watcher, op, args.reps)
                if "map" in only:
                    results["map"] = run_map(kube, ns, watcher, op, args.map_reps, args.map_items)
                if "patches" in only:
                    results["patches"] = run_patches(
                        kube,
                        ns,
                        watcher,
                        op,
                        args.patch_items,
                        args.patch_sleep,
                        args.status_interval,
                    )
                if "status" in only:
                    shapes = {
                        shape: run_status_size(
                            kube, ns, watcher, op, args.wide_tasks, args.result_bytes, shape
                        )
                        for shape in ("independent", "chained")
                    }
                    biggest = max(shapes.values(), key=lambda x: x["largest_status_bytes"])
                    results["status"] = {**biggest, "shapes": shapes}
                results["inprocess_rss"]["end"] = {**rss(op.proc.pid), "load": loadavg()}
        if "memory" in only:
            ns = "bench-pods"
            create_namespace(kube, ns)
            results["memory"] = run_memory(
                kube, ns, args.status_interval, args.pods, args.pod_window, args.pod_rounds, logs
            )
    finally:
        report["environment"] = environment(kube)
        report["operator_log_warnings"] = LOG_WARNINGS
        kube.stop()
    report["load_at_end"] = loadavg()
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"operator-{args.label}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print()
    print_table(report)
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--reps",
        "-R",
        type=int,
        default=5,
        help="repetitions of the 10-task latency run (default 5)",
    )
    p.add_argument(
        "--map-reps", type=int, default=7, help="repetitions per side of the mapped run (default 7)"
    )
    p.add_argument("--map-items", type=int, default=1000, help="items of the mapped run (1000)")
    p.add_argument(
        "--patch-items",
        type=int,
        default=300,
        help="items of the long-ish run that counts status patches (300)",
    )
    p.add_argument(
        "--patch-sleep",
        type=float,
        default=0.2,
        help="seconds each of those items sleeps (0.2: ~30 s on 2 workers)",
    )
    p.add_argument("--wide-tasks", type=int, default=500, help="tasks of the status-size run")
    p.add_argument("--result-bytes", type=int, default=900, help="result size of each of them")
    p.add_argument(
        "--pods",
        type=int,
        default=100,
        help="concurrent FlowRuns for the pod-mode memory figure (100)",
    )
    p.add_argument(
        "--pod-window",
        type=float,
        default=30.0,
        help="seconds to sample the operator with them all Pending (30)",
    )
    p.add_argument(
        "--pod-rounds",
        type=int,
        default=2,
        help="create/sample/delete rounds of them, to see whether RSS keeps growing",
    )
    p.add_argument(
        "--status-interval",
        type=float,
        default=1.0,
        help="the operator's --status-interval (its default, 1.0)",
    )
    p.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--label", default="local", help="names results/operator-<label>.json")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the operators' logs to DIR")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
