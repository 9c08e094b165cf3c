"""The console's pure parts: escaping of every user- or device-chosen string, one-time login
links and session tokens (fake clock, memory store)."""

from __future__ import annotations

import jwt
import pytest

from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.coordinator.userapi.console import pages
from cloudless.coordinator.userapi.console.session import LoginLinks, Sessions
from cloudless.lib.clock import FakeClock
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.workload import WorkloadSpec
from cloudless.store.memory import MemoryStore

SCRIPT = "<script>alert(1)</script>"
ATTR = '" onmouseover="alert(1)'

# Each case puts a payload where a device or user controls the text; the page must carry
# it escaped and never as markup.
NODE_CASES = [
    ("name", {"name": SCRIPT}),
    ("zone", {"zone": SCRIPT}),
    ("device class", {"device_class": ATTR}),
    ("id (in a title attribute)", {"id": ATTR}),
]


@pytest.mark.parametrize(("where", "fields"), NODE_CASES, ids=[c[0] for c in NODE_CASES])
def test_node_fields_are_escaped(where: str, fields: dict[str, str]) -> None:
    node_id = fields.pop("id", "n1")
    n = Node.make(node_id, state=NodeState.READY, labels={"owner": SCRIPT}, **fields)  # type: ignore[arg-type]
    view = ClusterView(nodes={n.id: n}, workloads={}, replicas={})
    for html in (pages.nodes_page(view), pages.overview(view)):
        assert "<script>" not in html
        assert '" onmouseover="' not in html
    assert "&lt;script&gt;" in pages.nodes_page(view)  # the label is shown, as text


def test_workload_fields_are_escaped() -> None:
    spec = WorkloadSpec(name="web", image="busybox:latest", replicas=1)
    rec = WorkloadRecord(spec=spec, unplaced=1, unplaced_reason=SCRIPT)
    r = Replica(
        id="web-1",
        workload="web",
        node_id="n1",
        observed=ReplicaState.FAILED,
        reason=SCRIPT,
        endpoint=ATTR,
    )
    view = ClusterView(nodes={}, workloads={"web": rec}, replicas={r.id: r})
    for html in (
        pages.workloads_page(view),
        pages.workload_page(rec, [r], {}, explain=SCRIPT),
        pages.layout(SCRIPT, "/ui/x", "", who=SCRIPT),
        pages.error_page(401, SCRIPT),
        pages.logs_page(ATTR),
    ):
        assert SCRIPT not in html
        assert ATTR not in html


def test_layout_has_one_script_and_live_source() -> None:
    html = pages.layout("Nodes", "/ui/nodes?fragment=1", "<p>x</p>", who="u")
    assert html.count("<script>") == 1
    assert 'data-src="/ui/nodes?fragment=1"' in html
    assert "data-src" not in pages.layout("Logs", "", "", who="u").split("<script>")[0]


def test_login_links_are_one_time_and_expire() -> None:
    clock = FakeClock()
    links = LoginLinks(clock, ttl_s=60)
    a, b = links.issue("spiffe://c/user/admin"), links.issue("spiffe://c/user/bob")
    assert links.redeem(a) == ("spiffe://c/user/admin", "")
    assert links.redeem(a)[0] is None  # second use
    clock.advance(61)
    assert links.redeem(b) == (None, "this login link has expired (60 s): run `cloudless ui` again")
    c = links.issue("u")
    clock.advance(61)
    links.issue("v")  # issuing sweeps expired links: c is forgotten
    assert links.redeem(c)[1].startswith("this login link is unknown or was already used")
    assert links.redeem("x" * 200)[0] is None


async def test_sessions() -> None:
    clock = FakeClock(start=1_000_000.0)
    store = MemoryStore(clock)
    one, two = Sessions(store, clock, ttl_s=100), Sessions(store, clock, ttl_s=100)
    token = await one.sign("spiffe://c/user/admin")
    session, _ = await two.check(token)  # another coordinator: same key from the store
    assert session is not None and session.who == "spiffe://c/user/admin"
    assert session.issued_at == 1_000_000.0
    clock.advance(101)
    assert (await two.check(token))[1].startswith("session expired")

    forged = jwt.encode({"sub": "x", "iat": 1, "exp": 2**40, "aud": "console"}, b"k" * 32)
    none_alg = jwt.encode({"sub": "x", "iat": 1, "exp": 2**40, "aud": "console"}, None, "none")
    wrong_aud = jwt.encode(
        {"sub": "x", "iat": 1, "exp": 2**40, "aud": "api"}, await one.key(), "HS256"
    )
    no_sub = jwt.encode({"iat": 1, "exp": 2**40, "aud": "console"}, await one.key(), "HS256")
    for bad, why in [
        ("", "not logged in"),
        ("garbage", "session not valid"),
        (forged, "session not valid"),  # signed with another key
        (none_alg, "session not valid"),  # unsigned
        (wrong_aud, "session not valid"),
        (no_sub, "session names nobody"),
        ("a" * 5000, "too long"),
    ]:
        session, reason = await one.check(bad)
        assert session is None and why in reason, (bad[:20], reason)
