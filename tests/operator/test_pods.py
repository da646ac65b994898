"""Reading why a FlowRun's pods cannot start (daskflow.kube.pods), without any I/O."""

from __future__ import annotations

from typing import Any

from daskflow.kube.pods import IMAGE_PULL_GRACE, ImagePullWatch, image_pull_failures


def pod(name: str, *waiting: tuple[str, str | None], init: bool = False) -> dict[str, Any]:
    statuses = [
        {
            "name": f"c{i}",
            "image": "flows:missing",
            "state": {"waiting": {"reason": reason, **({"message": msg} if msg else {})}},
        }
        for i, (reason, msg) in enumerate(waiting)
    ]
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": name}, "status": {"phase": "Pending", key: statuses}}


def test_only_image_pull_reasons_count() -> None:
    pods = [
        pod("a", ("ContainerCreating", None)),
        pod("b", ("CrashLoopBackOff", "back-off 10s")),
        {"metadata": {"name": "c"}, "status": {"phase": "Pending"}},  # not scheduled yet
    ]
    assert image_pull_failures(pods) == {}


def test_failures_name_pod_image_and_kubelet_reason() -> None:
    failures = image_pull_failures(
        [
            pod(
                "runner-x", ("ErrImageNeverPull", 'Container image "flows:missing" is not present')
            ),
            pod("worker-y", ("ImagePullBackOff", None), init=True),
        ]
    )
    assert failures == {
        "runner-x/c0": (
            True,
            "pod runner-x cannot start: image 'flows:missing': ErrImageNeverPull: "
            'Container image "flows:missing" is not present',
        ),
        "worker-y/c0": (
            False,
            "pod worker-y cannot start: image 'flows:missing': ImagePullBackOff",
        ),
    }


def test_a_permanent_reason_fails_at_once() -> None:
    watch = ImagePullWatch()
    problem = watch.problem([pod("p", ("InvalidImageName", None))], now=100.0)
    assert problem is not None and "InvalidImageName" in problem


def test_a_retried_reason_fails_only_once_it_lasts() -> None:
    watch = ImagePullWatch()
    stuck = [pod("p", ("ErrImagePull", "dial tcp: i/o timeout"))]
    assert watch.problem(stuck, now=100.0) is None
    assert (
        watch.problem([pod("p", ("ImagePullBackOff", None))], now=100.0 + IMAGE_PULL_GRACE - 1)
        is None
    )
    problem = watch.problem([pod("p", ("ImagePullBackOff", None))], now=100.0 + IMAGE_PULL_GRACE)
    assert problem is not None and "ImagePullBackOff" in problem


def test_a_pull_that_recovers_starts_the_clock_again() -> None:
    watch = ImagePullWatch()
    assert watch.problem([pod("p", ("ErrImagePull", None))], now=0.0) is None
    assert watch.problem([pod("p", ("ContainerCreating", None))], now=10.0) is None
    assert watch.problem([pod("p", ("ErrImagePull", None))], now=IMAGE_PULL_GRACE + 5) is None
