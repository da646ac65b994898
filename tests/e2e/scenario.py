"""Given/When/Then for one FlowRun on the real cluster, in the style of Argo's e2e fixtures.

    (flows.given.flowrun(manifest)
        .when.applied().phase_reached("Running").pod_deleted("worker")
        .then.phase_is("Succeeded").tasks_are({...}).nothing_left())

``given``, ``when`` and ``then`` return the scenario itself: they only make a test read
as the story it tells. Every wait polls the live objects with ``kubectl`` and has a bound;
the FlowRun objects seen along the way are kept (``seen``) for checks on their history,
such as the Argo CD health script's view of a running FlowRun.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import yaml
from tests.argocd.lua import INTERPRETERS, Health, run_health

from daskflow.kube.builders import child_name
from harness.realcluster import Kubectl
from harness.waiting import wait_for

TERMINAL = ("Succeeded", "Failed", "Cancelled")
COMPONENTS = ("runner", "scheduler", "worker")
POLL = 1.0


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` every POLL seconds until it returns something truthy."""
    return wait_for(predicate, timeout, what, interval=POLL)


def pod_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get(
        "deletionTimestamp"
    )


class Scenario:
    """One FlowRun's story: what it is (given), what happens (when), what holds (then)."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.k = kubectl
        self.namespace = namespace
        self.manifest: dict[str, Any] = {}
        self.uid = ""
        self.applied_at = 0.0
        self.seen: list[dict[str, Any]] = []  # every FlowRun object polled, in order
        self.marks: dict[str, float] = {}  # named moments, seconds since apply
        # Pods seen Running while waiting, by component (runner, scheduler, worker): their
        # names, and the most Running at once; the runner pod's environment.
        self.pod_names: dict[str, set[str]] = {c: set() for c in COMPONENTS}
        self.peak: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
        self.runner_env: dict[str, str] = {}

    # -- the three words ---------------------------------------------------------------
    @property
    def given(self) -> Self:
        return self

    @property
    def when(self) -> Self:
        return self

    @property
    def then(self) -> Self:
        return self

    # -- names -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        name: str = self.manifest["metadata"]["name"]
        return name

    @property
    def child(self) -> str:
        """The name of the DaskCluster and of the runner Job."""
        return child_name(self.name, self.uid)

    def selector(self, component: str = "") -> str:
        """Label selector of this run's pods: runner, scheduler, worker or all (``""``).

        The DaskCluster's labels (the FlowRun's uid among them) are copied by the
        dask-kubernetes controller onto its Deployments and pods.
        """
        if component == "runner":
            return f"daskflow.io/flowrun-uid={self.uid},daskflow.io/component=runner"
        if component in ("scheduler", "worker"):
            return f"daskflow.io/flowrun-uid={self.uid},dask.org/component={component}"
        return f"daskflow.io/flowrun-uid={self.uid}"

    @staticmethod
    def component_of(pod: dict[str, Any]) -> str:
        labels = pod["metadata"].get("labels") or {}
        if labels.get("daskflow.io/component") == "runner":
            return "runner"
        return str(labels.get("dask.org/component", "other"))

    # -- given -------------------------------------------------------------------------
    def flowrun(self, manifest: dict[str, Any] | Path, **spec: Any) -> Self:
        """A FlowRun from a dict or a file, with a unique name and ``spec`` merged in."""
        doc = yaml.safe_load(manifest.read_text()) if isinstance(manifest, Path) else manifest
        doc = copy.deepcopy(doc)
        base = doc["metadata"]["name"][:40]
        doc["metadata"] = {"name": f"{base}-{secrets.token_hex(3)}", "namespace": self.namespace}
        for key, value in spec.items():
            if isinstance(value, dict) and isinstance(doc["spec"].get(key), dict):
                doc["spec"][key] = {**doc["spec"][key], **value}
            else:
                doc["spec"][key] = value
        self.manifest = doc
        return self

    # -- when --------------------------------------------------------------------------
    def applied(self) -> Self:
        """``kubectl apply`` of the manifest, as a user does it."""
        self.applied_at = time.monotonic()
        self.k.run("apply", "-f", "-", input=yaml.safe_dump(self.manifest))
        obj = wait_until(self.get, 30, f"FlowRun {self.name} to exist")
        self.uid = obj["metadata"]["uid"]
        return self

    def get(self) -> dict[str, Any] | None:
        obj = self.k.get("flowrun", self.namespace, self.name)
        if obj is not None:
            self.seen.append(obj)
        return obj

    @property
    def status(self) -> dict[str, Any]:
        return (self.get() or {}).get("status") or {}

    def observe(self) -> dict[str, Any]:
        """One poll while waiting: the FlowRun's status, and which pods are Running."""
        running: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
        for pod in self.pods():
            component = self.component_of(pod)
            if component in running and pod_running(pod):
                running[component] += 1
                self.pod_names[component].add(pod["metadata"]["name"])
                if component == "runner" and not self.runner_env:
                    env = pod["spec"]["containers"][0].get("env") or []
                    self.runner_env = {e["name"]: e.get("value", "") for e in env}
        for component, count in running.items():
            self.peak[component] = max(self.peak[component], count)
        return self.status

    @property
    def seen_running(self) -> dict[str, int]:
        """How many distinct pods of each component were seen Running."""
        return {c: len(names) for c, names in self.pod_names.items()}

    def eventually(self, predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        return wait_until(predicate, timeout, what)

    def mark(self, moment: str) -> float:
        self.marks[moment] = round(time.monotonic() - self.applied_at, 1)
        return self.marks[moment]

    def phase_reached(self, *phases: str, timeout: float = 240) -> Self:
        def reached() -> bool:
            return self.observe().get("phase") in phases

        wait_until(reached, timeout, f"FlowRun {self.name} to be {' or '.join(phases)}")
        self.mark(phases[0] if len(phases) == 1 else "terminal")
        return self

    def finished(self, timeout: float = 300) -> Self:
        return self.phase_reached(*TERMINAL, timeout=timeout)

    def task_reached(self, task: str, *states: str, timeout: float = 240) -> Self:
        def reached() -> bool:
            return (self.observe().get("tasks") or {}).get(task, {}).get("state") in states

        wait_until(reached, timeout, f"task {task} of {self.name} to be {' or '.join(states)}")
        self.mark(f"{task} {states[0]}")
        return self

    def pods(self, component: str = "") -> list[dict[str, Any]]:
        return self.k.list("pods", self.namespace, self.selector(component))

    def pods_running(self, component: str, count: int = 1, timeout: float = 240) -> Self:
        def enough() -> list[dict[str, Any]] | None:
            running = [p for p in self.pods(component) if pod_running(p)]
            return running if len(running) >= count else None

        wait_until(enough, timeout, f"{count} {component} pod(s) of {self.name} Running")
        self.mark(f"{component} Running")
        return self

    def pod_deleted(self, component: str) -> Self:
        """Delete one Running pod of a component, at once (no grace period: a crash)."""
        pod = next(p for p in self.pods(component) if pod_running(p))
        self.k.run(
            "delete", "pod", pod["metadata"]["name"], "-n", self.namespace,
            "--grace-period=0", "--force", "--wait=false",
        )  # fmt: skip
        self.mark(f"{component} deleted")
        return self

    def cancelled(self) -> Self:
        self.k.run(
            "patch", "flowrun", self.name, "-n", self.namespace, "--type=merge",
            "-p", '{"spec":{"cancel":true}}',
        )  # fmt: skip
        self.mark("cancel")
        return self

    def deleted(self) -> Self:
        self.k.run("delete", "flowrun", self.name, "-n", self.namespace, "--wait=false")
        self.mark("delete")
        return self

    def gone(self, timeout: float = 60) -> Self:
        """The FlowRun itself has been removed (its finalizer done)."""
        wait_until(
            lambda: self.k.get("flowrun", self.namespace, self.name) is None,
            timeout,
            f"FlowRun {self.name} to be removed",
        )
        self.mark("gone")
        return self

    # -- then --------------------------------------------------------------------------
    def phase_is(self, phase: str, reason: str | None = None) -> Self:
        status = self.status
        assert status.get("phase") == phase, json.dumps(status, indent=1)[:4000]
        if reason is not None:
            assert status.get("reason") == reason, (status.get("reason"), status.get("message"))
        return self

    def tasks_are(self, states: dict[str, str]) -> Self:
        tasks = self.status.get("tasks") or {}
        got = {name: rec.get("state") for name, rec in tasks.items()}
        assert got == states, json.dumps(tasks, indent=1)[:4000]
        return self

    def result_of(self, task: str) -> Any:
        return (self.status.get("tasks") or {})[task].get("result")

    def events(self) -> list[tuple[str, str]]:
        """(reason, note) of the Events about this FlowRun, oldest first."""
        items = self.k.list("events.events.k8s.io", self.namespace)
        mine = [e for e in items if (e.get("regarding") or {}).get("uid") == self.uid]
        mine.sort(key=lambda e: e.get("eventTime") or e["metadata"]["creationTimestamp"])
        return [(e.get("reason", ""), e.get("note", "")) for e in mine]

    def events_include(self, *reasons: str) -> Self:
        got = [r for r, _ in self.events()]
        missing = [r for r in reasons if r not in got]
        assert not missing, f"Events {missing} not posted; got {got}"
        return self

    def nothing_left(self, timeout: float = 60) -> Self:
        """Its DaskCluster, its runner Job and all their pods are gone, within ``timeout``."""

        def leftovers() -> list[str]:
            left = [
                f"{kind} {self.child}"
                for kind in ("daskcluster", "daskautoscaler", "job")
                if self.k.get(kind, self.namespace, self.child) is not None
            ]
            left += [f"pod {p['metadata']['name']}" for p in self.pods()]
            left += [
                f"{kind} {item['metadata']['name']}"
                for kind in ("deployments", "services", "daskworkergroups")
                for item in self.k.list(kind, self.namespace, f"dask.org/cluster-name={self.child}")
            ]
            return left

        left: list[str] = []

        def none_left() -> bool:
            left[:] = leftovers()
            return not left

        try:
            wait_until(none_left, timeout, f"no children of {self.name}")
        except AssertionError:
            raise AssertionError(f"left after {timeout:g}s: {left}") from None
        self.mark("nothing left")
        return self

    def health(self, obj: dict[str, Any]) -> list[Health]:
        """What the Argo CD health script says about a live FlowRun object, per Lua."""
        return [run_health(lua, obj) for lua in INTERPRETERS]

    def argocd_health_was(self, while_running: str, at_the_end: str) -> Self:
        # A short run may be Running for less than one poll (a kubectl call on a busy
        # machine): "while it runs" is the last object seen before a terminal phase, which
        # is Pending or Running (the script says the same of both).
        unfinished = [
            o for o in self.seen if (o.get("status") or {}).get("phase") in ("Pending", "Running")
        ]
        assert unfinished, "the FlowRun was never seen Pending or Running"
        final = self.get()
        assert final is not None
        for obj, want in ((unfinished[-1], while_running), (final, at_the_end)):
            for health in self.health(obj):
                assert health.status == want, (health, obj.get("status"))
        return self
