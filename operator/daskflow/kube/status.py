"""Writing a run's status to its FlowRun, the same way from the runner pod and in-process.

Each write is a JSON merge patch of only what changed since the last write, sent to the
status subresource, so a 500-task status costs a few hundred bytes per update. The API
server itself refuses to move a finished task or a finished run (CEL rules in the CRD):
when a write is refused that way, someone else ended the run, and the writer stops.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from ..model.states import Phase
from ..model.status import now_iso
from .api import FLOWRUNS, KubeApi, KubeApiError

log = logging.getLogger(__name__)


class RunEndedElsewhere(Exception):
    """The FlowRun was finished (or deleted) by someone else; stop driving it."""


def merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_diff(before, value)
            if sub:
                patch[key] = sub
        elif value != before or key not in old:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def succeeded_condition(status: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """A Tekton-style ``Succeeded`` condition: Unknown while running, then True or False."""
    phase = Phase(status.get("phase") or Phase.PENDING)
    value = "Unknown" if not phase.terminal else ("True" if phase == Phase.SUCCEEDED else "False")
    conditions = previous.get("conditions") or []
    old: dict[str, Any] = next((c for c in conditions if c.get("type") == "Succeeded"), {})
    reason = status.get("reason") or str(phase)
    return {
        "type": "Succeeded",
        "status": value,
        "reason": reason,
        "message": (status.get("message") or str(phase))[:4096],
        "lastTransitionTime": old.get("lastTransitionTime")
        if old.get("status") == value
        else now_iso(),
    }


class StatusWriter:
    """Patches one FlowRun's status; posts Events on phase changes and task failures."""

    def __init__(
        self,
        api: KubeApi,
        flowrun: dict[str, Any],
        component: str,
        extra: dict[str, Any] | None = None,
        may_write: Callable[[], bool] = lambda: True,
    ) -> None:
        self.may_write = may_write
        self.api = api
        self.ref = flowrun
        self.namespace = flowrun["metadata"]["namespace"]
        self.name = flowrun["metadata"]["name"]
        self.component = component
        self.extra = extra or {}
        self.last: dict[str, Any] = dict(flowrun.get("status") or {})

    def _full(self, status: dict[str, Any]) -> dict[str, Any]:
        out = {**status, **copy.deepcopy(self.extra)}
        out["conditions"] = [succeeded_condition(out, self.last)]
        return out

    async def write(self, status: dict[str, Any]) -> None:
        if not self.may_write():
            return
        full = self._full(status)
        # Fields others own (kopf's progress) are left alone: a merge patch only names ours.
        mine = {k: v for k, v in self.last.items() if k != "kopf"}
        patch = merge_diff(mine, full)
        if not patch:
            return
        try:
            await self.api.patch(
                FLOWRUNS, self.namespace, self.name, {"status": patch}, status=True
            )
        except KubeApiError as err:
            if err.status == 404:
                raise RunEndedElsewhere(f"FlowRun {self.namespace}/{self.name} is gone") from None
            if err.status == 422:
                current = await self.api.get(FLOWRUNS, self.namespace, self.name)
                server = (current or {}).get("status") or {}
                if Phase(server.get("phase") or Phase.PENDING).terminal:
                    self.last = server
                    raise RunEndedElsewhere(
                        f"FlowRun {self.namespace}/{self.name} already ended {server.get('phase')}"
                    ) from None
                # A task finished elsewhere (an earlier runner); merge and retry once.
                self.last = server
                patch = merge_diff(server, self._merge_finished(full, server))
                await self.api.patch(
                    FLOWRUNS, self.namespace, self.name, {"status": patch}, status=True
                )
            else:
                raise
        await self._announce(self.last, full)
        self.last = full

    @staticmethod
    def _merge_finished(new: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
        from ..model.states import TaskState

        tasks = dict(new.get("tasks") or {})
        for name, rec in (server.get("tasks") or {}).items():
            if TaskState(rec.get("state", "Pending")).terminal:
                tasks[name] = rec
        return {**new, "tasks": tasks}

    async def _announce(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        phase, before = new.get("phase"), old.get("phase")
        if phase != before and phase:
            warn = phase in (Phase.FAILED, Phase.CANCELLED)
            await self.api.post_event(
                self.ref,
                type_="Warning" if warn else "Normal",
                reason=str(phase),
                note=new.get("message") or f"FlowRun is {phase}",
                component=self.component,
            )
        old_tasks = old.get("tasks") or {}
        for name, rec in (new.get("tasks") or {}).items():
            if (
                rec.get("state") == "Failed"
                and (old_tasks.get(name) or {}).get("state") != "Failed"
            ):
                await self.api.post_event(
                    self.ref,
                    type_="Warning",
                    reason="TaskFailed",
                    note=f"task {name} failed: {(rec.get('message') or '').splitlines()[0][:900]}"
                    if rec.get("message")
                    else f"task {name} failed",
                    component=self.component,
                )
