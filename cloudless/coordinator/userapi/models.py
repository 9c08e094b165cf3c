"""The user API's JSON bodies as pydantic models: the request models validate what the
handlers accept (unknown fields refused, numbers finite and bounded), and every model is what
``openapi.py`` publishes as the route's schema. Response models describe what the handlers
send; ``tests/integration/cluster/test_api_bad_input.py`` checks real answers against them.

``parse_request(model, data)`` is the one way a handler turns a parsed body into a request model:
a refusal is a ``ValidationError`` whose problems read ``<field path>: <reason>``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictFloat, StrictInt, StrictStr

from cloudless.lib.bounded import path_key, show
from cloudless.lib.errors import ValidationError
from cloudless.model.labels import labels_problems
from cloudless.model.workload_codec import MAX_REPLICAS
from cloudless.security.tokens import MAX_TOKEN_TTL, TokenUse

M = TypeVar("M", bound=BaseModel)

_REQUEST = ConfigDict(extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)
_RESPONSE = ConfigDict(extra="forbid")


def parse_request(model: type[M], data: Any, root: str = "body") -> M:
    """``data`` (plain JSON data) as ``model``, or a ``ValidationError`` naming each field."""
    if not isinstance(data, dict):
        raise ValidationError(f"{root}: expected a JSON object, got {show(data)}")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        problems = []
        for err in e.errors(include_url=False, include_input=False):
            path = ".".join([root, *(path_key(x) for x in err["loc"])])
            problems.append(f"{path}: {err['msg']}")
        raise ValidationError(problems) from None


def _labels(v: dict[str, str]) -> dict[str, str]:
    problems = labels_problems(dict(v), "labels")
    if problems:
        raise ValueError("; ".join(p.removeprefix("labels.") for p in problems))
    return v


# ---- requests ------------------------------------------------------------------------------

Labels = Annotated[
    dict[StrictStr, StrictStr],
    pydantic.AfterValidator(_labels),
    Field(description="label key -> value; keys 1-63 of [A-Za-z0-9._/-], values one line"),
]


class ScaleRequest(BaseModel):
    model_config = _REQUEST
    replicas: StrictInt = Field(ge=0, le=MAX_REPLICAS)


class DrainRequest(BaseModel):
    """``POST /v1/nodes/{id}/drain``, body optional: with ``deadline_s``, replicas still on the
    node then are stopped even if their replacements are not ready."""

    model_config = _REQUEST
    deadline_s: float | None = Field(None, gt=0, le=7 * 86400, allow_inf_nan=False)


class TokenRequest(BaseModel):
    model_config = _REQUEST
    use: TokenUse = TokenUse.NODE_ENROLLMENT
    ttl_seconds: float = Field(24 * 3600, gt=0, le=MAX_TOKEN_TTL, strict=False)
    labels: Labels = Field(default_factory=dict)
    description: StrictStr = Field("", max_length=1024)

    @pydantic.field_validator("ttl_seconds", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError("must be a number of seconds")
        return v


class JoinRequest(BaseModel):
    model_config = _REQUEST
    token: StrictStr = Field(min_length=1, max_length=4096)
    name: StrictStr = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# ---- responses -----------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = _RESPONSE
    code: str = Field(description="stable machine-readable slug: invalid, not_found, ...")
    message: str
    problems: list[str] | None = Field(None, description="every '<field path>: <reason>'")


class ErrorBody(BaseModel):
    model_config = _RESPONSE
    error: ErrorDetail


class Health(BaseModel):
    model_config = _RESPONSE
    ok: bool
    is_leader: bool
    leader: str | None


class CaInfo(BaseModel):
    model_config = _RESPONSE
    ca_bundle_pem: str
    ca_digest: str
    agent_endpoints: list[str]
    enroll_endpoints: list[str]


class ResourcesView(BaseModel):
    model_config = _RESPONSE
    cpu_millis: int
    memory_bytes: int
    disk_bytes: int
    bandwidth_bps: int


class NodeConditionsView(BaseModel):
    model_config = _RESPONSE
    memory_pressure: bool
    disk_pressure: bool
    pid_pressure: bool
    network_unavailable: bool
    on_battery: bool


class ReplicaView(BaseModel):
    model_config = _RESPONSE
    id: str
    workload: str
    node_id: str
    desired: str
    observed: str
    reason: str
    exit_code: int | None
    restarts: int
    spec_version: int
    created_at: float
    updated_at: float
    started_at: float | None
    endpoint: str
    trace: str = ""  # W3C traceparent of the decision that created it ("" untraced)
    ready: bool = False
    health: str = ""
    volume_bytes: dict[str, int] = Field(default_factory=dict)
    volume_quota: dict[str, str] = Field(default_factory=dict)
    observed_version: int = 0


class DepartureView(BaseModel):
    model_config = _RESPONSE
    kind: Literal["leave", "drain", "reserved"]
    reason: str
    announced_at: float
    deadline: float


class NodeView(BaseModel):
    model_config = _RESPONSE
    id: str
    name: str
    labels: dict[str, str]
    region: str
    zone: str
    arch: str
    os: str
    device_class: str
    capacity: ResourcesView
    allocatable: ResourcesView
    usage: ResourcesView
    conditions: NodeConditionsView
    state: Literal[
        "enrolling", "ready", "draining", "cordoned", "offline", "failed", "departed", "removed"
    ]
    last_heartbeat: float
    address: str
    reliability: float
    public: bool
    nat: bool
    cost_per_hour: float
    enrolled_at: float
    metrics_address: str = ""
    departure: DepartureView | None = None
    reserved_hours: list[int] = Field(default_factory=list)
    nebula_public_key: str = ""


class HourForecast(BaseModel):
    model_config = _RESPONSE
    hour_of_week: int
    p_online: float


class AvailabilityModelView(BaseModel):
    model_config = _RESPONSE
    availability_week: float
    p_online_now: float
    availability_next_24h: float
    mean_session_h: float | None  # None: no session has ended yet
    p_stay_up_next_1h: float
    history_h: float
    next_hours: list[HourForecast]
    sessions: int


class NodeAvailabilityView(BaseModel):
    """The node's learned availability (``cloudless.churn.keeper.describe_node``)."""

    model_config = _RESPONSE
    reserved_hours: list[str]
    departure: DepartureView | None
    model: AvailabilityModelView | None


class OverlayPathView(BaseModel):
    model_config = _RESPONSE
    peer: str
    peer_name: str
    path: Literal["direct", "relayed"]
    via: str


class NodeOverlayView(BaseModel):
    """The node's overlay as the coordinators observe it (``network.observer``)."""

    model_config = _RESPONSE
    overlay_ip: str
    nat: Literal["none", "cone", "symmetric", "nat", "unknown"]
    nat_reason: str
    reachable: bool | None
    reach_reason: str
    paths: list[OverlayPathView]
    summary: str


class NodeDetail(NodeView):
    replicas: list[ReplicaView]
    availability: NodeAvailabilityView | None = None
    overlay: NodeOverlayView | None = None


class NodeList(BaseModel):
    model_config = _RESPONSE
    nodes: list[NodeView]
    problems: list[str]


class NodeRemoved(BaseModel):
    model_config = _RESPONSE
    removed: str


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


Scalar = StrictStr | StrictInt | StrictFloat
Strings = list[Scalar] | StrictStr | None  # a lone string is a list of one
Quantity = StrictStr | StrictInt | StrictFloat | None  # 500m, 2, 0.5; 512Mi, 1G; 100Mbps


class PortDoc(BaseModel):
    """A container port, optionally published on the device (CNI portmap)."""

    model_config = _REQUEST
    port: Annotated[StrictInt, Field(ge=1, le=65535)]
    publish: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None


class WorkloadSpecDoc(BaseModel):
    """A workload spec as ``POST /v1/workloads`` takes it (YAML or JSON) and as answers carry
    it (``spec``). The server's parser (``cloudless.model.workload_codec``) is the validator:
    this schema takes everything it takes (``test_openapi`` checks that property) and is
    stricter only where it can say so simply; ``placement`` and ``restart`` are described in
    ``docs/scheduler.md``."""

    model_config = _REQUEST
    name: StrictStr = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    image: StrictStr = Field(
        min_length=1, max_length=512, description="OCI reference: [host[:port]/]path[:tag][@digest]"
    )
    command: Strings = None
    args: Strings = None
    env: dict[StrictStr, Scalar] | None = None
    resources: dict[Literal["cpu", "memory", "disk", "bandwidth"], Quantity] | None = None
    replicas: Annotated[StrictInt, Field(ge=0, le=MAX_REPLICAS)] | None = 1
    restart: dict[str, Any] | StrictStr | None = Field(
        None, description="always | on-failure | never, or {policy, max_restarts, backoff, ...}"
    )
    placement: dict[str, Any] | None = None
    labels: dict[StrictStr, Scalar] | None = None
    ports: list[Annotated[StrictInt, Field(ge=1, le=65535)] | PortDoc] | None = Field(
        None,
        description="container ports: a number, or {port, publish} to also publish it on the "
        "device's port publish (docs/workloads.md)",
    )
    stop_timeout: Annotated[StrictInt | StrictFloat, Field(ge=0, le=3600)] | None = 10.0
    namespace: StrictStr | None = Field(
        None, description="the namespace the workload lives in (default: default)"
    )
    health: dict[str, Any] | None = Field(
        None, description="liveness and readiness probes (docs/workloads.md)"
    )
    volumes: list[dict[str, Any]] | None = Field(
        None, description="persistent volumes: name, mount_path, size, read_only"
    )
    on_node_loss: Literal["wait", "recreate"] | None = None
    secrets: list[dict[str, Any]] | None = Field(
        None, description="secret references: name, and a file path or an env name"
    )
    update: dict[str, Any] | None = Field(
        None, description="roll-out policy: max_unavailable, batch, progress deadline..."
    )
    image_pull_secret: StrictStr | None = Field(
        None, description="a registry secret holding credentials for the image's registry"
    )
    configs: list[dict[str, Any]] | None = Field(
        None, description="config references: name, and a file path (mode 0444) or an env name"
    )


class WorkloadView(BaseModel):
    model_config = _RESPONSE
    name: str
    version: int
    deleted: bool
    replicas_wanted: int
    unplaced: int
    unplaced_reason: str
    created_at: float
    updated_at: float
    spec: WorkloadSpecDoc
    replicas: list[ReplicaView] | None = None
    replicas_running: int | None = None
    rollout: dict[str, Any] | None = None


class WorkloadList(BaseModel):
    model_config = _RESPONSE
    workloads: list[WorkloadView]


class Applied(BaseModel):
    model_config = _RESPONSE
    result: Literal["created", "configured"]
    workload: WorkloadView


class WorkloadDeleted(BaseModel):
    model_config = _RESPONSE
    deleted: str


class Explanation(BaseModel):
    model_config = _RESPONSE
    workload: str
    summary: str
    rejections: dict[str, int]
    best: list[dict[str, Any]]
    notes: list[str]
    text: str


class ReplicaList(BaseModel):
    model_config = _RESPONSE
    replicas: list[ReplicaView]


class TokenView(BaseModel):
    """A join token's record as the API shows it: never its secret or the secret's hash."""

    model_config = _RESPONSE
    token_id: str
    use: TokenUse
    created_at: float
    expires_at: float
    labels: dict[str, str]
    description: str
    used_at: float | None
    used_by: str | None
    used_by_key: str | None
    revoked_at: float | None
    revoked_reason: str | None
    state: Literal["active", "used", "expired", "revoked"] | None = None


class TokenCreated(BaseModel):
    model_config = _RESPONSE
    token: str = Field(description="the secret token: shown once, never stored in clear")
    record: TokenView


class TokenList(BaseModel):
    model_config = _RESPONSE
    tokens: list[TokenView]


class TokenRevoked(BaseModel):
    model_config = _RESPONSE
    record: TokenView


class Joined(BaseModel):
    model_config = _RESPONSE
    ca: dict[str, str]
    etcd_endpoints: list[str]
    trust_domain: str


class CoordinatorView(BaseModel):
    model_config = _RESPONSE
    name: str
    api: str
    agent: str
    enroll: str
    etcd_client: str


class CoordinatorList(BaseModel):
    model_config = _RESPONSE
    coordinators: list[CoordinatorView]
    leader: str | None


class ConsoleLogin(BaseModel):
    model_config = _RESPONSE
    url: str
    expires_in: int


class ScrapeTargetGroup(BaseModel):
    """One group of Prometheus's ``http_sd_configs`` format."""

    model_config = _RESPONSE
    targets: list[str]
    labels: dict[str, str]


class ScrapeTargets(RootModel[list[ScrapeTargetGroup]]):
    pass


class Event(_Open):
    kind: str
    message: str
    at: float
