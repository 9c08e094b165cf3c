from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Resources(_message.Message):
    __slots__ = ("cpu_millis", "memory_bytes", "disk_bytes", "bandwidth_bps")
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    cpu_millis: int
    memory_bytes: int
    disk_bytes: int
    bandwidth_bps: int
    def __init__(self, cpu_millis: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., bandwidth_bps: _Optional[int] = ...) -> None: ...

class NodeConditions(_message.Message):
    __slots__ = ("memory_pressure", "disk_pressure", "pid_pressure", "network_unavailable", "on_battery")
    MEMORY_PRESSURE_FIELD_NUMBER: _ClassVar[int]
    DISK_PRESSURE_FIELD_NUMBER: _ClassVar[int]
    PID_PRESSURE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ON_BATTERY_FIELD_NUMBER: _ClassVar[int]
    memory_pressure: bool
    disk_pressure: bool
    pid_pressure: bool
    network_unavailable: bool
    on_battery: bool
    def __init__(self, memory_pressure: _Optional[bool] = ..., disk_pressure: _Optional[bool] = ..., pid_pressure: _Optional[bool] = ..., network_unavailable: _Optional[bool] = ..., on_battery: _Optional[bool] = ...) -> None: ...

class NodeFacts(_message.Message):
    __slots__ = ("hostname", "arch", "os", "kernel", "cpu_cores", "device_class", "capacity", "allocatable", "labels", "region", "zone", "address", "public", "cost_per_hour", "metrics_address", "reserved_hours", "nebula_public_key")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ALLOCATABLE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_HOURS_FIELD_NUMBER: _ClassVar[int]
    NEBULA_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    arch: str
    os: str
    kernel: str
    cpu_cores: int
    device_class: str
    capacity: Resources
    allocatable: Resources
    labels: _containers.ScalarMap[str, str]
    region: str
    zone: str
    address: str
    public: bool
    cost_per_hour: float
    metrics_address: str
    reserved_hours: _containers.RepeatedScalarFieldContainer[int]
    nebula_public_key: str
    def __init__(self, hostname: _Optional[str] = ..., arch: _Optional[str] = ..., os: _Optional[str] = ..., kernel: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., device_class: _Optional[str] = ..., capacity: _Optional[_Union[Resources, _Mapping]] = ..., allocatable: _Optional[_Union[Resources, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., region: _Optional[str] = ..., zone: _Optional[str] = ..., address: _Optional[str] = ..., public: _Optional[bool] = ..., cost_per_hour: _Optional[float] = ..., metrics_address: _Optional[str] = ..., reserved_hours: _Optional[_Iterable[int]] = ..., nebula_public_key: _Optional[str] = ...) -> None: ...

class GetCARequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCAResponse(_message.Message):
    __slots__ = ("ca_bundle_pem",)
    CA_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    ca_bundle_pem: bytes
    def __init__(self, ca_bundle_pem: _Optional[bytes] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("token", "csr_pem", "node_name", "facts")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: bytes
    node_name: str
    facts: NodeFacts
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[bytes] = ..., node_name: _Optional[str] = ..., facts: _Optional[_Union[NodeFacts, _Mapping]] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("node_id", "cert_pem", "ca_bundle_pem", "coordinators")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    COORDINATORS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cert_pem: bytes
    ca_bundle_pem: bytes
    coordinators: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., cert_pem: _Optional[bytes] = ..., ca_bundle_pem: _Optional[bytes] = ..., coordinators: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("replica_id", "workload", "state", "reason", "exit_code", "has_exit_code", "restarts", "started_at", "spec_version", "endpoint", "ready", "health", "volume_bytes", "reports_ready", "volume_quota")
    class VolumeBytesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class VolumeQuotaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    VOLUME_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPORTS_READY_FIELD_NUMBER: _ClassVar[int]
    VOLUME_QUOTA_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    workload: str
    state: str
    reason: str
    exit_code: int
    has_exit_code: bool
    restarts: int
    started_at: float
    spec_version: int
    endpoint: str
    ready: bool
    health: str
    volume_bytes: _containers.ScalarMap[str, int]
    reports_ready: bool
    volume_quota: _containers.ScalarMap[str, str]
    def __init__(self, replica_id: _Optional[str] = ..., workload: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., exit_code: _Optional[int] = ..., has_exit_code: _Optional[bool] = ..., restarts: _Optional[int] = ..., started_at: _Optional[float] = ..., spec_version: _Optional[int] = ..., endpoint: _Optional[str] = ..., ready: _Optional[bool] = ..., health: _Optional[str] = ..., volume_bytes: _Optional[_Mapping[str, int]] = ..., reports_ready: _Optional[bool] = ..., volume_quota: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_id", "facts", "replicas", "agent_version", "services_updates")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVICES_UPDATES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    facts: NodeFacts
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    agent_version: str
    services_updates: bool
    def __init__(self, node_id: _Optional[str] = ..., facts: _Optional[_Union[NodeFacts, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., agent_version: _Optional[str] = ..., services_updates: _Optional[bool] = ...) -> None: ...

class ReplicaUsage(_message.Message):
    __slots__ = ("replica_id", "cpu_millis", "memory_bytes", "memory_limit_bytes", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps", "pids", "sampled_at")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_READ_BPS_FIELD_NUMBER: _ClassVar[int]
    DISK_WRITE_BPS_FIELD_NUMBER: _ClassVar[int]
    NET_RX_BPS_FIELD_NUMBER: _ClassVar[int]
    NET_TX_BPS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    cpu_millis: int
    memory_bytes: int
    memory_limit_bytes: int
    disk_read_bps: int
    disk_write_bps: int
    net_rx_bps: int
    net_tx_bps: int
    pids: int
    sampled_at: float
    def __init__(self, replica_id: _Optional[str] = ..., cpu_millis: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., memory_limit_bytes: _Optional[int] = ..., disk_read_bps: _Optional[int] = ..., disk_write_bps: _Optional[int] = ..., net_rx_bps: _Optional[int] = ..., net_tx_bps: _Optional[int] = ..., pids: _Optional[int] = ..., sampled_at: _Optional[float] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("seq", "sent_at", "usage", "conditions", "replicas", "network_state", "trusted_roots", "cert_issuer", "replica_usage", "usage_gone", "overlay")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_STATE_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_ROOTS_FIELD_NUMBER: _ClassVar[int]
    CERT_ISSUER_FIELD_NUMBER: _ClassVar[int]
    REPLICA_USAGE_FIELD_NUMBER: _ClassVar[int]
    USAGE_GONE_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_FIELD_NUMBER: _ClassVar[int]
    seq: int
    sent_at: float
    usage: Resources
    conditions: NodeConditions
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    network_state: str
    trusted_roots: _containers.RepeatedScalarFieldContainer[str]
    cert_issuer: str
    replica_usage: _containers.RepeatedCompositeFieldContainer[ReplicaUsage]
    usage_gone: _containers.RepeatedScalarFieldContainer[str]
    overlay: OverlayReport
    def __init__(self, seq: _Optional[int] = ..., sent_at: _Optional[float] = ..., usage: _Optional[_Union[Resources, _Mapping]] = ..., conditions: _Optional[_Union[NodeConditions, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., network_state: _Optional[str] = ..., trusted_roots: _Optional[_Iterable[str]] = ..., cert_issuer: _Optional[str] = ..., replica_usage: _Optional[_Iterable[_Union[ReplicaUsage, _Mapping]]] = ..., usage_gone: _Optional[_Iterable[str]] = ..., overlay: _Optional[_Union[OverlayReport, _Mapping]] = ...) -> None: ...

class OverlayTunnel(_message.Message):
    __slots__ = ("peer", "remote", "relays")
    PEER_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    RELAYS_FIELD_NUMBER: _ClassVar[int]
    peer: str
    remote: str
    relays: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, peer: _Optional[str] = ..., remote: _Optional[str] = ..., relays: _Optional[_Iterable[str]] = ...) -> None: ...

class OverlayReport(_message.Message):
    __slots__ = ("tunnels", "lighthouses_missing_s", "error")
    TUNNELS_FIELD_NUMBER: _ClassVar[int]
    LIGHTHOUSES_MISSING_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    tunnels: _containers.RepeatedCompositeFieldContainer[OverlayTunnel]
    lighthouses_missing_s: float
    error: str
    def __init__(self, tunnels: _Optional[_Iterable[_Union[OverlayTunnel, _Mapping]]] = ..., lighthouses_missing_s: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("request_id", "stream", "data", "eof", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream: str
    data: bytes
    eof: bool
    error: str
    def __init__(self, request_id: _Optional[str] = ..., stream: _Optional[str] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("back_within_s", "reason")
    BACK_WITHIN_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    back_within_s: float
    reason: str
    def __init__(self, back_within_s: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class Leave(_message.Message):
    __slots__ = ("deadline_s", "reason")
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deadline_s: float
    reason: str
    def __init__(self, deadline_s: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "log", "goodbye", "leave")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    log: LogChunk
    goodbye: Goodbye
    leave: Leave
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., log: _Optional[_Union[LogChunk, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ..., leave: _Optional[_Union[Leave, _Mapping]] = ...) -> None: ...

class ReplicaAssignment(_message.Message):
    __slots__ = ("replica_id", "workload", "desired", "spec_version", "spec_json", "traceparent", "secrets", "drop_volumes")
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    DROP_VOLUMES_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    workload: str
    desired: str
    spec_version: int
    spec_json: bytes
    traceparent: str
    secrets: _containers.ScalarMap[str, bytes]
    drop_volumes: bool
    def __init__(self, replica_id: _Optional[str] = ..., workload: _Optional[str] = ..., desired: _Optional[str] = ..., spec_version: _Optional[int] = ..., spec_json: _Optional[bytes] = ..., traceparent: _Optional[str] = ..., secrets: _Optional[_Mapping[str, bytes]] = ..., drop_volumes: _Optional[bool] = ...) -> None: ...

class Assignments(_message.Message):
    __slots__ = ("generation", "replicas", "network")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    generation: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaAssignment]
    network: NetworkConfig
    def __init__(self, generation: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaAssignment, _Mapping]]] = ..., network: _Optional[_Union[NetworkConfig, _Mapping]] = ...) -> None: ...

class NetworkServicePort(_message.Message):
    __slots__ = ("port", "protocol", "name")
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    port: int
    protocol: str
    name: str
    def __init__(self, port: _Optional[int] = ..., protocol: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class NetworkEndpoint(_message.Message):
    __slots__ = ("ip", "replica", "node_id")
    IP_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ip: str
    replica: str
    node_id: str
    def __init__(self, ip: _Optional[str] = ..., replica: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class NetworkService(_message.Message):
    __slots__ = ("namespace", "name", "vip", "ports", "endpoints", "stateful", "balance")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VIP_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    STATEFUL_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    vip: str
    ports: _containers.RepeatedCompositeFieldContainer[NetworkServicePort]
    endpoints: _containers.RepeatedCompositeFieldContainer[NetworkEndpoint]
    stateful: bool
    balance: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., vip: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[NetworkServicePort, _Mapping]]] = ..., endpoints: _Optional[_Iterable[_Union[NetworkEndpoint, _Mapping]]] = ..., stateful: _Optional[bool] = ..., balance: _Optional[str] = ...) -> None: ...

class NetworkLighthouse(_message.Message):
    __slots__ = ("overlay_ip", "addresses")
    OVERLAY_IP_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    overlay_ip: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, overlay_ip: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class NetworkConfig(_message.Message):
    __slots__ = ("slot", "overlay_cidr", "container_cidr", "container_prefix", "service_cidr", "nebula_ca", "nebula_cert", "nebula_key", "lighthouses", "services", "reason", "blocklist", "policy_chains", "services_revision")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_CIDR_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_CIDR_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_PREFIX_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CIDR_FIELD_NUMBER: _ClassVar[int]
    NEBULA_CA_FIELD_NUMBER: _ClassVar[int]
    NEBULA_CERT_FIELD_NUMBER: _ClassVar[int]
    NEBULA_KEY_FIELD_NUMBER: _ClassVar[int]
    LIGHTHOUSES_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BLOCKLIST_FIELD_NUMBER: _ClassVar[int]
    POLICY_CHAINS_FIELD_NUMBER: _ClassVar[int]
    SERVICES_REVISION_FIELD_NUMBER: _ClassVar[int]
    slot: int
    overlay_cidr: str
    container_cidr: str
    container_prefix: int
    service_cidr: str
    nebula_ca: bytes
    nebula_cert: bytes
    nebula_key: bytes
    lighthouses: _containers.RepeatedCompositeFieldContainer[NetworkLighthouse]
    services: _containers.RepeatedCompositeFieldContainer[NetworkService]
    reason: str
    blocklist: _containers.RepeatedScalarFieldContainer[str]
    policy_chains: _containers.RepeatedCompositeFieldContainer[NetworkPolicyChain]
    services_revision: int
    def __init__(self, slot: _Optional[int] = ..., overlay_cidr: _Optional[str] = ..., container_cidr: _Optional[str] = ..., container_prefix: _Optional[int] = ..., service_cidr: _Optional[str] = ..., nebula_ca: _Optional[bytes] = ..., nebula_cert: _Optional[bytes] = ..., nebula_key: _Optional[bytes] = ..., lighthouses: _Optional[_Iterable[_Union[NetworkLighthouse, _Mapping]]] = ..., services: _Optional[_Iterable[_Union[NetworkService, _Mapping]]] = ..., reason: _Optional[str] = ..., blocklist: _Optional[_Iterable[str]] = ..., policy_chains: _Optional[_Iterable[_Union[NetworkPolicyChain, _Mapping]]] = ..., services_revision: _Optional[int] = ...) -> None: ...

class NetworkServicesUpdate(_message.Message):
    __slots__ = ("base", "revision", "upserts", "removed")
    BASE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    base: int
    revision: int
    upserts: _containers.RepeatedCompositeFieldContainer[NetworkService]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, base: _Optional[int] = ..., revision: _Optional[int] = ..., upserts: _Optional[_Iterable[_Union[NetworkService, _Mapping]]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class NetworkPolicyChain(_message.Message):
    __slots__ = ("namespace", "workload", "addresses", "lines", "egress")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    EGRESS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    workload: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    lines: _containers.RepeatedCompositeFieldContainer[NetworkPolicyLine]
    egress: bool
    def __init__(self, namespace: _Optional[str] = ..., workload: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., lines: _Optional[_Iterable[_Union[NetworkPolicyLine, _Mapping]]] = ..., egress: _Optional[bool] = ...) -> None: ...

class NetworkPolicyLine(_message.Message):
    __slots__ = ("any_source", "sources", "protocol", "ports", "verdict", "comment")
    ANY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    any_source: bool
    sources: _containers.RepeatedScalarFieldContainer[str]
    protocol: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    verdict: str
    comment: str
    def __init__(self, any_source: _Optional[bool] = ..., sources: _Optional[_Iterable[str]] = ..., protocol: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ..., verdict: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("seq", "interval_s", "coordinators", "ca_bundle_pem", "renew_now")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    COORDINATORS_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    RENEW_NOW_FIELD_NUMBER: _ClassVar[int]
    seq: int
    interval_s: float
    coordinators: _containers.RepeatedScalarFieldContainer[str]
    ca_bundle_pem: bytes
    renew_now: bool
    def __init__(self, seq: _Optional[int] = ..., interval_s: _Optional[float] = ..., coordinators: _Optional[_Iterable[str]] = ..., ca_bundle_pem: _Optional[bytes] = ..., renew_now: _Optional[bool] = ...) -> None: ...

class LogRequest(_message.Message):
    __slots__ = ("request_id", "replica_id", "follow", "tail", "since", "cancel")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    replica_id: str
    follow: bool
    tail: int
    since: float
    cancel: bool
    def __init__(self, request_id: _Optional[str] = ..., replica_id: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ..., since: _Optional[float] = ..., cancel: _Optional[bool] = ...) -> None: ...

class Redirect(_message.Message):
    __slots__ = ("leader_address", "reason")
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    leader_address: str
    reason: str
    def __init__(self, leader_address: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("ack", "assignments", "logs", "redirect", "services_update")
    ACK_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_FIELD_NUMBER: _ClassVar[int]
    SERVICES_UPDATE_FIELD_NUMBER: _ClassVar[int]
    ack: HeartbeatAck
    assignments: Assignments
    logs: LogRequest
    redirect: Redirect
    services_update: NetworkServicesUpdate
    def __init__(self, ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., assignments: _Optional[_Union[Assignments, _Mapping]] = ..., logs: _Optional[_Union[LogRequest, _Mapping]] = ..., redirect: _Optional[_Union[Redirect, _Mapping]] = ..., services_update: _Optional[_Union[NetworkServicesUpdate, _Mapping]] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("cert_pem", "ca_bundle_pem")
    CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    cert_pem: bytes
    ca_bundle_pem: bytes
    def __init__(self, cert_pem: _Optional[bytes] = ..., ca_bundle_pem: _Optional[bytes] = ...) -> None: ...

class StoreProxyRequest(_message.Message):
    __slots__ = ("request_json",)
    REQUEST_JSON_FIELD_NUMBER: _ClassVar[int]
    request_json: bytes
    def __init__(self, request_json: _Optional[bytes] = ...) -> None: ...

class StoreProxyResponse(_message.Message):
    __slots__ = ("response_json",)
    RESPONSE_JSON_FIELD_NUMBER: _ClassVar[int]
    response_json: bytes
    def __init__(self, response_json: _Optional[bytes] = ...) -> None: ...

class WorkloadIdentityRequest(_message.Message):
    __slots__ = ("replica_id", "csr_pem", "ttl_seconds", "workload")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    csr_pem: bytes
    ttl_seconds: int
    workload: str
    def __init__(self, replica_id: _Optional[str] = ..., csr_pem: _Optional[bytes] = ..., ttl_seconds: _Optional[int] = ..., workload: _Optional[str] = ...) -> None: ...

class WorkloadIdentityResponse(_message.Message):
    __slots__ = ("cert_pem", "ca_bundle_pem", "expires_at")
    CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    cert_pem: bytes
    ca_bundle_pem: bytes
    expires_at: float
    def __init__(self, cert_pem: _Optional[bytes] = ..., ca_bundle_pem: _Optional[bytes] = ..., expires_at: _Optional[float] = ...) -> None: ...
