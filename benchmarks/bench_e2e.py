#!/usr/bin/env python
"""End-to-end latency on real pods: ``kubectl apply`` of a 10-task chain → first task
Running, and → Succeeded, through the installed chart on hack/cluster.sh's cluster.

The same setup as the e2e tier (harness/hack.py, harness/realcluster.py): ``hack/cluster.sh
up``, the project's image built from this checkout and loaded into the node, charts/daskflow
installed in its default runner-pod mode. Then, alternating, ``--reps`` runs of the chain
with ``spec.cluster.backend: kubernetes`` (a runner pod, and a DaskCluster's scheduler and
2 worker pods) and with ``local`` (a runner pod with a LocalCluster of 2 workers inside).
Moments come from polling the FlowRun every 0.2 s, so they are late by up to that.

The chart is uninstalled at the end; the cluster stays up unless ``--down``.

    .venv/bin/python benchmarks/bench_e2e.py --reps 5 --label mybox
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import yaml  # noqa: E402

from bench_common import git_state  # noqa: E402
from harness.hack import BASE_IMAGE, cluster_sh, docker_engine_running, run_hack  # noqa: E402
from harness.helm import Helm, find_or_build_helm  # noqa: E402
from harness.realcluster import (  # noqa: E402
    IMAGE,
    Kubectl,
    RealCluster,
    install_chart,
    uninstall_chart,
)

POLL = 0.2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def chain(backend: str, length: int = 10) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [
        {"name": "t00", "call": "daskflow.examples.resilience:identity", "args": [0]}
    ]
    tasks += [
        {
            "name": f"t{i:02d}",
            "call": "daskflow.examples.resilience:identity",
            "args": [f"$(tasks.t{i - 1:02d}.result)"],
        }
        for i in range(1, length)
    ]
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": f"chain-{backend[:5]}"},
        "spec": {"cluster": {"backend": backend, "workers": 2}, "tasks": tasks},
    }


def one_run(k: Kubectl, namespace: str, backend: str) -> dict[str, float]:
    doc = chain(backend)
    name = f"{doc['metadata']['name']}-{secrets.token_hex(3)}"
    doc["metadata"] = {"name": name, "namespace": namespace}
    applied_at, applied_wall = time.monotonic(), time.time()
    k.run("apply", "-f", "-", input=yaml.safe_dump(doc))
    running = done = None
    deadline = time.monotonic() + 300
    while done is None and time.monotonic() < deadline:
        status = (k.get("flowrun", namespace, name) or {}).get("status") or {}
        now = time.monotonic() - applied_at
        if running is None and status.get("phase") in ("Running", "Succeeded"):
            running = now
        if status.get("phase") in ("Succeeded", "Failed", "Cancelled"):
            assert status["phase"] == "Succeeded", status
            done = now
        time.sleep(POLL)
    assert running is not None and done is not None, "the run did not finish in 300 s"
    # Status writes are coalesced (1 s), so a fast chain may show no Running task: the
    # first task's own startTime (whole seconds, truncated) says when it started.
    started = dt.datetime.fromisoformat(status["tasks"]["t00"]["startTime"]).timestamp()
    k.run("delete", "flowrun", name, "-n", namespace, "--wait=true")
    return {
        "phase_running_seen": round(running, 2),
        "first_task_started": round(started - applied_wall, 2),
        "succeeded": round(done, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--label", default="e2e")
    parser.add_argument("--down", action="store_true", help="hack/cluster.sh down at the end")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="daskflow-bench-e2e-"))
    kubeconfig = Path(cluster_sh("up").strip().splitlines()[-1])
    cluster = RealCluster(kubeconfig, work)
    log("building and loading the image")
    with docker_engine_running(work / "dockerd.log"):  # only to build and load the image
        run_hack("build-base-image.sh", work / "base.log", 1200)
        image_env = {"IMAGE": IMAGE, "BASE_IMAGE": BASE_IMAGE}
        run_hack("build-image.sh", work / "image.log", 1200, image_env)
        cluster_sh("load", IMAGE, timeout=600)
    (work / "helm").mkdir()
    helm = Helm(find_or_build_helm(), work / "helm")
    install = install_chart(cluster, IMAGE, helm)
    results: dict[str, list[dict[str, float]]] = {"kubernetes": [], "local": []}
    load: list[list[float]] = []
    try:
        for rep in range(args.reps):
            for backend in results:
                load.append([round(x, 2) for x in os.getloadavg()])
                figures = one_run(install.kubectl, install.namespace, backend)
                results[backend].append(figures)
                log(f"rep {rep + 1} {backend}: {figures}")
    finally:
        uninstall_chart(install, helm)
        if args.down:
            cluster_sh("down", timeout=600)
    summary = {
        backend: {
            key: {
                "median": round(statistics.median(r[key] for r in runs), 2),
                "min": min(r[key] for r in runs),
                "max": max(r[key] for r in runs),
            }
            for key in ("phase_running_seen", "first_task_started", "succeeded")
        }
        for backend, runs in results.items()
    }
    commit, dirty = git_state(ROOT)
    out = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": dirty,
        "reps": args.reps,
        "loadavg": load,
        "summary": summary,
        "runs": results,
    }
    path = HERE / "results" / f"e2e-{args.label}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    for backend, figures in summary.items():
        print(
            f"{backend:>10}: apply -> Running {figures['phase_running_seen']['median']} s,"
            f" first task started {figures['first_task_started']['median']} s,"
            f" Succeeded {figures['succeeded']['median']} s (medians of {args.reps})"
        )
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
