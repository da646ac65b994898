"""Manifests for the model tests, built as Python data."""

from __future__ import annotations

from typing import Any


def manifest(tasks: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "daskflow.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": "test"},
        "spec": {"tasks": tasks, **spec},
    }


def call(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "call": "mod:fn", **fields}
