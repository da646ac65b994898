"""The FlowRun manifest as pydantic models: the public API of daskflow.

Field names are camelCase on the wire, as in every Kubernetes resource. The same models
are the single source of truth for the CRD's OpenAPI schema (see :mod:`daskflow.model.crd`),
so every bound declared here is also enforced by the API server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from .quantity import parse_quantity

API_GROUP = "daskflow.io"
API_VERSION = "v1alpha1"
KIND = "FlowRun"
PLURAL = "flowruns"

MAX_TASKS = 500
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
CALL_PATTERN = rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})?$"
# A Dask scheduler address as distributed parses it: an optional scheme, a host, a port.
SCHEDULER_ADDRESS = r"^((tcp|tls|ws|wss)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$"

Backend = Literal["local", "kubernetes", "address"]
BACKENDS: tuple[str, ...] = get_args(Backend)

TaskName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]


def _quantity(text: str) -> str:
    try:
        parse_quantity(text)
    except ValueError as err:
        raise PydanticCustomError("quantity", str(err)) from None
    return text


Quantity = Annotated[str, Field(max_length=64), AfterValidator(_quantity)]
EnvMap = Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=128)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class TaskSpec(_Model):
    """One node of the flow: a Python callable or a command, run on a Dask worker."""

    name: TaskName = Field(description="Unique within the flow, DNS-label style.")
    call: str | None = Field(
        default=None,
        max_length=512,
        pattern=CALL_PATTERN,
        description='"module:attr" or "module:Class.attr", imported on the Dask worker.',
    )
    command: list[Annotated[str, Field(max_length=65536)]] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="A process to run on the worker; its result is its stdout.",
    )
    args: list[Any] = Field(default_factory=list, max_length=256)
    kwargs: dict[str, Any] = Field(default_factory=dict, max_length=256)
    env: EnvMap = Field(default_factory=dict, description="Extra environment for a command.")
    map: list[Any] | str | None = Field(
        default=None,
        description="Fan-out: one run per item of a literal list or of a referenced list.",
    )
    when: Any = Field(default=None, description="Run only if truthy, else the task is Skipped.")
    depends_on: list[TaskName] = Field(default_factory=list, max_length=MAX_TASKS)
    retries: int = Field(default=0, ge=0, le=100, description="Extra attempts after the first.")
    retry_delay_seconds: float = Field(default=0.0, ge=0, le=86400)
    retry_backoff: float = Field(default=2.0, ge=1, le=10)
    retry_jitter: float = Field(
        default=0.0, ge=0, le=1, description="Random extra delay, as a fraction of the delay."
    )
    timeout_seconds: float | None = Field(default=None, gt=0, le=7 * 86400)


class Resources(_Model):
    """Kubernetes resources of each Dask worker; locally only ``limits.memory`` applies."""

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16)

    @field_validator("limits")
    @classmethod
    def _memory_above_zero(cls, limits: dict[str, str]) -> dict[str, str]:
        if "memory" in limits and parse_quantity(limits["memory"]) < 1:
            raise PydanticCustomError("quantity", "memory: must be at least 1 byte")
        return limits


class Adaptive(_Model):
    minimum: int = Field(default=0, ge=0, le=1000)
    maximum: int = Field(default=4, ge=1, le=1000)


class ClusterSpec(_Model):
    """Where the flow's Dask cluster comes from and how big it is."""

    backend: Backend | None = Field(
        default=None, description="local, kubernetes or address; the operator has a default."
    )
    workers: int = Field(default=2, ge=0, le=1000)
    threads_per_worker: int = Field(default=1, ge=1, le=256)
    address: str | None = Field(default=None, max_length=512, pattern=SCHEDULER_ADDRESS)
    resources: Resources | None = None
    env: EnvMap = Field(default_factory=dict)
    adaptive: Adaptive | None = None
    startup_timeout_seconds: float = Field(default=300.0, gt=0, le=86400)

    def resolved_backend(self, default: str) -> str:
        """The backend this cluster uses: the one named, else ``address`` when an address
        is given, else ``default`` (the operator's, or the runner's ``local``)."""
        if self.backend:
            return self.backend
        return "address" if self.address else default


class FlowRunSpec(_Model):
    parameters: dict[str, Any] = Field(default_factory=dict, max_length=256)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    image: str | None = Field(
        default=None, max_length=512, description="Image of the Dask pods and of the runner."
    )
    service_account_name: str | None = Field(default=None, max_length=253)
    fail_fast: bool = False
    deadline_seconds: float | None = Field(default=None, gt=0, le=30 * 86400)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    cancel: bool = Field(default=False, description="Set true to cancel the run.")
    tasks: list[TaskSpec] = Field(min_length=1, max_length=MAX_TASKS)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(default="flowrun", max_length=253)
    namespace: str | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class FlowRun(_Model):
    api_version: Literal["daskflow.io/v1alpha1"] = Field(default="daskflow.io/v1alpha1")
    kind: Literal["FlowRun"] = "FlowRun"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: FlowRunSpec
    status: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"
