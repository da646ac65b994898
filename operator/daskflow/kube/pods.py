"""Why a FlowRun's pods cannot start, read from their container statuses. No I/O here.

While a run is Pending, the operator lists its pods (runner and Dask pods all carry the
FlowRun's uid label). A pod whose image cannot be pulled never starts, and neither does
the run: failing it at once with the kubelet's reason says more than a cluster start
timeout minutes later.
"""

from __future__ import annotations

from typing import Any

# The kubelet never retries these: the image name is wrong, or pulling is not allowed.
PERMANENT_PULL_REASONS = frozenset({"ErrImageNeverPull", "InvalidImageName"})
# These it retries with a back-off; a registry hiccup can cause them, so they count only
# once they have lasted IMAGE_PULL_GRACE seconds.
RETRIED_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff"})
IMAGE_PULL_GRACE = 30.0


def image_pull_failures(pods: list[dict[str, Any]]) -> dict[str, tuple[bool, str]]:
    """``{pod/container: (permanent, message)}`` for every container stuck on its image."""
    found: dict[str, tuple[bool, str]] = {}
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        ):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason not in PERMANENT_PULL_REASONS | RETRIED_PULL_REASONS:
                continue
            detail = (waiting.get("message") or "").strip()
            found[f"{name}/{cs.get('name', '?')}"] = (
                reason in PERMANENT_PULL_REASONS,
                f"pod {name} cannot start: image {cs.get('image', '?')!r}: {reason}"
                + (f": {detail[:300]}" if detail else ""),
            )
    return found


class ImagePullWatch:
    """Remembers since when each container has been stuck; says when the run must fail."""

    def __init__(self, grace: float = IMAGE_PULL_GRACE) -> None:
        self.grace = grace
        self.since: dict[str, float] = {}

    def problem(self, pods: list[dict[str, Any]], now: float) -> str | None:
        failures = image_pull_failures(pods)
        self.since = {key: self.since.get(key, now) for key in failures}
        for key, (permanent, message) in sorted(failures.items()):
            if permanent or now - self.since[key] >= self.grace:
                return message
        return None
