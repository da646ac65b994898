"""What the operator needs before it can act, checked at startup and while it runs.

kopf stays silent when its surroundings are incomplete: without its peering object it
pauses forever, without the peering CRD it never starts watching, and a missing DaskCluster
CRD only shows later, as 404s. This module names each missing piece in the log, once, with
the command that fixes it; creates the peering object when the operator's account may; and
keeps ``/readyz`` (:mod:`.endpoints`) at 503, listing what is missing, until everything
required is there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from .api import DASKAUTOSCALERS, DASKCLUSTERS, FLOWRUNS, KubeApi, KubeApiError, Resource

log = logging.getLogger(__name__)

DASKWORKERGROUPS = Resource("kubernetes.dask.org", "v1", "daskworkergroups")
KOPFPEERINGS = Resource("kopf.dev", "v1", "kopfpeerings")
CLUSTERKOPFPEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings")
DASK_KUBERNETES = {
    DASKCLUSTERS: "DaskCluster",
    DASKWORKERGROUPS: "DaskWorkerGroup",
    DASKAUTOSCALERS: "DaskAutoscaler",
}

INSTALL_CRDS = "install the CRDs: `kubectl apply -R -f crds/` (from the daskflow repository)"
INSTALL_DASK_KUBERNETES = (
    f"{INSTALL_CRDS} and run the dask-kubernetes controller, "
    "or install the Helm chart (charts/daskflow, daskKubernetes.enabled=true), which does both"
)
STANDALONE = "or start the operator with --standalone (one replica only)"
RECHECK_MISSING = 10.0  # seconds between checks while something is missing
RECHECK_READY = 60.0


@dataclass(frozen=True)
class Need:
    """A CRD the operator uses: ``required`` ones hold /readyz at 503 while missing."""

    resource: Resource
    kind: str
    required: bool
    why: str
    fix: str


def needed_crds(*, default_backend: str, peering: str | None, all_namespaces: bool) -> list[Need]:
    """The CRDs an operator with this configuration uses, and which of them it cannot do
    without. The dask-kubernetes ones are required only when ``kubernetes`` is the default
    backend; otherwise only FlowRuns that ask for that backend need them (and fail without).
    """
    needs = [Need(FLOWRUNS, "FlowRun", True, "the operator watches FlowRuns", INSTALL_CRDS)]
    k8s_default = default_backend == "kubernetes"
    why = "FlowRuns with cluster.backend kubernetes" + (
        " (the default: --default-backend kubernetes)" if k8s_default else ""
    )
    why += " fail without dask-kubernetes"
    needs += [
        Need(res, kind, k8s_default, why, INSTALL_DASK_KUBERNETES)
        for res, kind in DASK_KUBERNETES.items()
    ]
    if peering is not None:
        res, kind = (
            (CLUSTERKOPFPEERINGS, "ClusterKopfPeering")
            if all_namespaces
            else (KOPFPEERINGS, "KopfPeering")
        )
        why = f"kopf peering (--peering {peering}) pauses the operator without it"
        needs.append(Need(res, kind, True, why, f"{INSTALL_CRDS}, {STANDALONE}"))
    return needs


class DaskKubernetesMissing(Exception):
    """A FlowRun needs a dask-kubernetes resource whose CRD is not installed."""

    reason = "DaskKubernetesMissing"

    def __init__(self, res: Resource) -> None:
        kind = DASK_KUBERNETES.get(res, res.plural)
        super().__init__(
            f"cluster.backend kubernetes needs dask-kubernetes, but the {kind} CRD ({res}) "
            f"is not installed: {INSTALL_DASK_KUBERNETES}"
        )


def peering_manifest(kind: str, name: str) -> dict[str, object]:
    return {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}


class Preflight:
    """Checks what the operator needs; ``ok`` once every required piece is there."""

    def __init__(
        self,
        api: KubeApi,
        *,
        default_backend: str,
        namespaces: list[str],
        all_namespaces: bool,
        peering: str | None,
    ) -> None:
        self.api = api
        self.namespaces = namespaces
        self.all_namespaces = all_namespaces
        self.peering = peering
        self.needs = needed_crds(
            default_backend=default_backend, peering=peering, all_namespaces=all_namespaces
        )
        self.missing: list[str] | None = None  # None until the first check
        self._reported: dict[str, str] = {}

    @property
    def ok(self) -> bool:
        return self.missing == []

    async def check(self) -> None:
        """One round of checks; logs what changed since the last round."""
        found: dict[str, tuple[int, str]] = {}  # what is missing -> (log level, message)
        try:
            await self._check_crds(found)
        except KubeApiError as err:
            found["API access"] = (logging.ERROR, f"cannot check what the operator needs: {err}")
        was_ok = self.ok
        self.missing = [what for what, (level, _) in found.items() if level >= logging.ERROR]
        for what, (level, message) in found.items():
            if self._reported.get(what) != message:
                log.log(level, "%s", message)
        for what in sorted(self._reported.keys() - found.keys()):
            log.info("%s: found now", what)
        if self.ok and not was_ok:
            log.info(
                "ready: the required CRDs are installed%s",
                "" if self.peering is None else f" and the peering object {self.peering!r} exists",
            )
        self._reported = {what: message for what, (_, message) in found.items()}

    async def _check_crds(self, found: dict[str, tuple[int, str]]) -> None:
        missing: dict[tuple[str, str, bool], list[Need]] = {}  # one log line per fix
        for need in self.needs:
            if not await self.api.served(need.resource):
                missing.setdefault((need.why, need.fix, need.required), []).append(need)
            elif need.resource in (KOPFPEERINGS, CLUSTERKOPFPEERINGS):
                await self._check_peering(need.kind, need.resource, found)
        for (why, fix, required), needs in missing.items():
            kinds = ", ".join(n.kind for n in needs)
            names = ", ".join(str(n.resource) for n in needs)
            several = len(needs) > 1
            found[f"CRD{'s' if several else ''} {names}"] = (
                logging.ERROR if required else logging.WARNING,
                f"the {kinds} CRD{'s' if several else ''} ({names}) "
                f"{'are' if several else 'is'} not installed: {why}; {fix}",
            )

    async def _check_peering(
        self, kind: str, res: Resource, found: dict[str, tuple[int, str]]
    ) -> None:
        assert self.peering is not None
        for namespace in [None] if self.all_namespaces else self.namespaces:
            where = f"{namespace}/{self.peering}" if namespace else self.peering
            if await self.api.get(res, namespace, self.peering) is not None:
                continue
            body = peering_manifest(kind, self.peering)
            try:
                await self.api.create(res, namespace, body)
            except KubeApiError as err:
                if err.status == 409:  # created meanwhile
                    continue
                if err.status != 403:
                    raise
                create = (
                    f"echo '{json.dumps(body)}' | kubectl apply"
                    + (f" -n {namespace}" if namespace else "")
                    + " -f -"
                )
                found[f"{kind} {where}"] = (
                    logging.ERROR,
                    f"{kind} {where} does not exist, and kopf pauses the operator until it "
                    f"does (the operator may not create it: {err.status} {err.reason}). "
                    f"Create it: {create} ; {STANDALONE}",
                )
            else:
                log.info(
                    "created %s %s: kopf peering needs it (replicas agree through it on which "
                    "one is active)",
                    kind,
                    where,
                )

    async def watch(self) -> None:
        """Check again and again: often while something is missing, rarely after."""
        while True:
            await asyncio.sleep(RECHECK_READY if self.ok else RECHECK_MISSING)
            await self.check()
