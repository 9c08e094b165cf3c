"""What agents report, checked like a user's spec before it reaches the store.

An agent is authenticated, not trusted to be bug-free: the facts it reports become node
records every user reads and the scheduler matches against, so they obey the same rules as
a spec (``cloudless.model.labels``, bounded quantities). Pure functions, no I/O.

* ``enrollment_problems``: every ``<field path>: <reason>`` of an ``EnrollRequest``'s node
  name and facts; any problem refuses the enrollment (``INVALID_ARGUMENT``) and spends no
  token.
* ``heartbeat_problems``: a usage figure out of bounds refuses the heartbeat (the stream
  ends with ``INVALID_ARGUMENT``).
* ``clean_statuses``: replica statuses carry free text from the container runtime (an
  image pull's error); it is cut to ``MAX_REASON`` characters and control characters other
  than line breaks and tabs become spaces, in place; a negative restart count or a start
  time that is not a finite non-negative number is a status dropped, as is one whose
  endpoint or replica id is not one short printable line (the replica keeps its last known
  status). ``clean_goodbye`` cuts a goodbye's reason the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableSequence

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.bounded import show
from cloudless.model.labels import MAX_TEXT, labels_problems, text_problem
from cloudless.model.resources import MAX_BPS, MAX_BYTES, MAX_CPU_MILLIS
from cloudless.network.nebula_keys import public_key_problem

MAX_REASON = 1024
MAX_SHORT = 64  # arch, os, device class, kernel
MAX_COST_PER_HOUR = 1e9
MAX_CORES = 1_000_000
_LIMITS = (
    ("cpu_millis", MAX_CPU_MILLIS),
    ("memory_bytes", MAX_BYTES),
    ("disk_bytes", MAX_BYTES),
    ("bandwidth_bps", MAX_BPS),
)


def resources_problems(r: pb.Resources, path: str) -> list[str]:
    out = []
    for name, hi in _LIMITS:
        v = getattr(r, name)
        if not 0 <= v <= hi:
            out.append(f"{path}.{name}: {v} is out of range [0, {hi}]")
    return out


def enrollment_problems(node_name: str, facts: pb.NodeFacts) -> list[str]:
    out = []
    if node_name and (why := text_problem(node_name, what="node name")):
        out.append(f"node_name: {why}")
    for field, limit in (
        ("hostname", 253),
        ("address", 253),
        ("region", 63),
        ("zone", 63),
        ("arch", MAX_SHORT),
        ("os", MAX_SHORT),
        ("device_class", MAX_SHORT),
        ("kernel", 253),
    ):
        v = getattr(facts, field)
        if v and (why := text_problem(v, limit, what=field)):
            out.append(f"facts.{field}: {why}")
    out += labels_problems(dict(facts.labels), "facts.labels")
    out += resources_problems(facts.capacity, "facts.capacity")
    out += resources_problems(facts.allocatable, "facts.allocatable")
    if not 0 <= facts.cpu_cores <= MAX_CORES:
        out.append(f"facts.cpu_cores: {facts.cpu_cores} is out of range [0, {MAX_CORES}]")
    c = facts.cost_per_hour
    if not (math.isfinite(c) and 0 <= c <= MAX_COST_PER_HOUR):
        out.append(f"facts.cost_per_hour: {c} is out of range [0, {MAX_COST_PER_HOUR:g}]")
    if facts.nebula_public_key and (why := public_key_problem(facts.nebula_public_key)):
        out.append(f"facts.nebula_public_key: {why}")
    return out


def heartbeat_problems(hb: pb.Heartbeat) -> list[str]:
    u = hb.usage
    if (
        0 <= u.cpu_millis <= MAX_CPU_MILLIS
        and 0 <= u.memory_bytes <= MAX_BYTES
        and 0 <= u.disk_bytes <= MAX_BYTES
        and 0 <= u.bandwidth_bps <= MAX_BPS
    ):
        return []  # every heartbeat: checked inline, without building a list per field
    return resources_problems(u, "heartbeat.usage")


def _clean_text(text: str) -> str:
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in "\n\t" else " " for c in text)


def _fine(st: pb.ReplicaStatus) -> bool:
    """The common case, checked cheaply: nothing to clean or drop."""
    reason, endpoint, rid = st.reason, st.endpoint, st.replica_id
    return (
        len(reason) <= MAX_REASON
        and len(endpoint) <= MAX_TEXT
        and len(rid) <= MAX_TEXT
        and reason.isprintable()
        and endpoint.isprintable()
        and rid.isprintable()
        and st.restarts >= 0
        and 0 <= st.started_at < math.inf
    )


def clean_statuses(statuses: MutableSequence[pb.ReplicaStatus]) -> list[str]:
    """Clean ``statuses`` in place (see the module docstring); what was dropped, and why."""
    if all(_fine(st) for st in statuses):
        return []
    dropped = []
    i = 0
    while i < len(statuses):
        st = statuses[i]
        if len(st.reason) > MAX_REASON or not st.reason.isprintable():
            st.reason = _clean_text(st.reason)
        why = None
        if st.restarts < 0:
            why = f"restarts {st.restarts} is negative"
        elif not (math.isfinite(st.started_at) and st.started_at >= 0):
            why = f"started_at {st.started_at} is not a time"
        elif st.endpoint:
            why = text_problem(st.endpoint, what="endpoint")
        if not why and st.replica_id:
            why = text_problem(st.replica_id, what="replica id")
        if why:
            dropped.append(f"replica status {show(st.replica_id, 40)}: {why}")
            del statuses[i]
            continue
        i += 1
    return dropped


def clean_goodbye(bye: pb.Goodbye) -> None:
    """Cut a goodbye's reason (it goes into an event) like a status's, in place."""
    if len(bye.reason) > MAX_REASON or not bye.reason.isprintable():
        bye.reason = _clean_text(bye.reason)


# The longest an agent may ask the coordinator to wait for its replicas to move before it
# leaves (``Leave.deadline_s``); a longer or non-finite ask is cut to this.
MAX_LEAVE_S = 3600.0


def clean_leave(leave: pb.Leave) -> None:
    """Cut a leave's reason like a goodbye's and bound its deadline to [0, MAX_LEAVE_S], in
    place."""
    if len(leave.reason) > MAX_REASON or not leave.reason.isprintable():
        leave.reason = _clean_text(leave.reason)
    d = leave.deadline_s
    leave.deadline_s = min(max(d, 0.0), MAX_LEAVE_S) if not math.isnan(d) else 0.0


def reserved_problems(hours: Iterable[int]) -> list[str]:
    """Owner-reserved hours outside the week's 168 bins."""
    bad = sorted({h for h in hours if not 0 <= h < 168})
    return [f"facts.reserved_hours: {bad[:5]} outside 0..167"] if bad else []
