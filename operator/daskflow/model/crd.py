"""The FlowRun CustomResourceDefinition, generated from the pydantic models.

The models in :mod:`daskflow.model.spec` are the one source of truth: this module turns
their JSON schema into a structural OpenAPI v3 schema, adds the rules a schema alone
cannot say (CEL ``x-kubernetes-validations``), and declares the status that
:class:`daskflow.model.status.StatusBook` writes, so the API server prunes nothing.
``crds/`` holds its output, and a test keeps the two from drifting.
"""

from __future__ import annotations

from typing import Any

from .spec import API_GROUP, API_VERSION, KIND, MAX_TASKS, PLURAL, FlowRun
from .states import PHASE_TERMINAL, TASK_TERMINAL, Phase, TaskState
from .status import ITEM_COUNTS

_KEEP = {
    "type",
    "properties",
    "items",
    "required",
    "description",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "additionalProperties",
    "format",
}
_ANY: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline refs and rewrite pydantic's JSON schema into a structural OpenAPI schema."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(options) == 1:
            return _structural({**options[0], **rest}, defs)
        # Several types (map: list or reference string): leave it to daskflow's validator.
        anything = dict(_ANY)
        if "description" in schema:
            anything["description"] = schema["description"]
        return anything
    if not schema.get("type"):
        return {
            **_ANY,
            **({"description": schema["description"]} if "description" in schema else {}),
        }
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key in _KEEP:
            out[key] = value
    if "properties" in out:
        out["properties"] = {k: _structural(v, defs) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _structural(out["items"], defs)
    additional = out.pop("additionalProperties", None)
    if isinstance(additional, dict):
        out["additionalProperties"] = _structural(additional, defs)
    elif additional is True and out.get("type") == "object" and "properties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "array" and not out.get("items"):
        out["items"] = dict(_ANY)
    return out


def spec_schema() -> dict[str, Any]:
    raw = FlowRun.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    spec = _structural(defs["FlowRunSpec"], defs)
    tasks = spec["properties"]["tasks"]
    tasks["x-kubernetes-list-type"] = "map"  # task names are unique: the list is keyed by name
    tasks["x-kubernetes-list-map-keys"] = ["name"]
    tasks["x-kubernetes-validations"] = [
        {"rule": "self == oldSelf", "message": "spec.tasks is immutable once created"}
    ]
    task = tasks["items"]
    task["required"] = ["name"]
    task["x-kubernetes-validations"] = [
        {
            "rule": "has(self.call) != has(self.command)",
            "message": "set exactly one of call or command",
        },
    ]
    spec["properties"]["parameters"]["x-kubernetes-validations"] = [
        {"rule": "self == oldSelf", "message": "spec.parameters is immutable once created"}
    ]
    return spec


def _terminal_rule(field: str, terminal: list[str]) -> str:
    return (
        f"!has(oldSelf.{field}) || !(oldSelf.{field} in {terminal})"
        f" || self.{field} == oldSelf.{field}"
    )


def status_schema() -> dict[str, Any]:
    """The status written by :class:`StatusBook`, with terminal states frozen by the server."""
    string = {"type": "string", "maxLength": 65536}
    timestamp = {"type": "string", "format": "date-time"}
    task_states = [str(s) for s in TaskState]
    items = {
        "type": "object",
        "properties": {k: {"type": "integer"} for k in ITEM_COUNTS},
    }
    task = {
        "type": "object",
        "properties": {
            "state": {"type": "string", "enum": task_states},
            "attempts": {"type": "integer"},
            "retries": {"type": "integer"},
            "startTime": timestamp,
            "completionTime": timestamp,
            "message": string,
            "result": dict(_ANY),
            "items": items,
            "failedItems": {"type": "array", "maxItems": 1000, "items": {"type": "integer"}},
            "reason": {"type": "string", "maxLength": 128},
            "lostAttempts": {"type": "integer"},
        },
        "x-kubernetes-validations": [
            {
                "rule": _terminal_rule("state", sorted(str(s) for s in TASK_TERMINAL)),
                "message": "a finished task's state never changes",
            }
        ],
    }
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": [str(p) for p in Phase]},
            "reason": {"type": "string", "maxLength": 128},
            "message": string,
            "startTime": timestamp,
            "completionTime": timestamp,
            "duration": {"type": "string", "maxLength": 64},
            "observedGeneration": {"type": "integer"},
            "truncated": {"type": "boolean"},
            "runner": {
                "type": "object",
                "properties": {
                    "job": {"type": "string"},
                    "cluster": {"type": "string"},
                    "backend": {"type": "string"},
                    "mode": {"type": "string"},
                    "restarts": {"type": "integer"},
                    "clusterStartupSeconds": {"type": "number"},
                },
            },
            "summary": {
                "type": "object",
                "properties": {
                    "total": {"type": "integer"},
                    "succeeded": {"type": "integer"},
                    "failed": {"type": "integer"},
                    "progress": {"type": "string", "maxLength": 32},
                },
            },
            "conditions": {
                "type": "array",
                "maxItems": 16,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": {"type": "string", "maxLength": 64},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "reason": {"type": "string", "maxLength": 128},
                        "message": {"type": "string", "maxLength": 4096},
                        "lastTransitionTime": timestamp,
                    },
                },
            },
            "tasks": {"type": "object", "maxProperties": MAX_TASKS, "additionalProperties": task},
            "kopf": dict(_ANY),
        },
        "x-kubernetes-validations": [
            {
                "rule": _terminal_rule("phase", sorted(str(p) for p in PHASE_TERMINAL)),
                "message": "a finished FlowRun's phase never changes",
            }
        ],
    }


def flowrun_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": "flowrun",
                "listKind": f"{KIND}List",
                "shortNames": ["fr"],
                "categories": ["daskflow"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {
                            "name": "Tasks",
                            "type": "string",
                            "jsonPath": ".status.summary.progress",
                            "description": "succeeded/total tasks",
                        },
                        {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A run of a flow: Python or command tasks on Dask.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }
