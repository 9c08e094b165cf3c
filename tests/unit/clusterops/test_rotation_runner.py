"""``rotation_runner`` on the in-memory store and a fake clock: a whole rotation driven by the
real ``follow`` and ``lead`` loops, the coordinator's own renewal at 2/3 of its life, the
endorsement a client checks, and the advice agents get in their acks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.clusterops.rotation_runner import AgentTrust, RootRotation, rotation_table
from cloudless.coordinator.state.coordinators import CoordinatorInfo, register
from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import Conflict
from cloudless.security.bundle import certificate_digest, load_pem_certificates
from cloudless.security.ca import CertificateAuthority, new_root
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.root_rotation import endorse, endorsed_roots
from cloudless.security.rotation import DEFAULT_FRACTION, DEFAULT_JITTER
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore

OWN_TTL = 30 * 86400


class Own:
    """The coordinator's own certificate file, re-issued by ``reissue``."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.pem = b""
        self.reloads = 0
        self.reissue()

    def reissue(self) -> None:
        sid = SpiffeId.service("coordinator-c1", self.ca.trust_domain)
        _, self.pem = self.ca.issue(sid, CertKind.SERVICE, ttl_seconds=OWN_TTL)

    def reload(self) -> None:
        self.reloads += 1


def _rotation(tmp: Path, clock: FakeClock) -> tuple[RootRotation, Own, MemoryStore]:
    ca = CertificateAuthority.init(tmp / "ca", clock=clock, root_key_size=2048)
    own = Own(ca)
    store = MemoryStore(clock=clock)
    rot = RootRotation(
        store,
        ca,
        "c1",
        clock,
        reissue_own=own.reissue,
        reload=own.reload,
        own_certificate=lambda: own.pem,
        poll_s=0.5,
    )
    return rot, own, store


async def _spin(clock: FakeClock, seconds: float) -> None:
    for _ in range(int(seconds / 0.5)):
        clock.advance(0.5)
        for _ in range(20):
            await asyncio.sleep(0)


async def test_a_rotation_runs_to_done_and_keeps_secrets_readable(tmp_path: Path) -> None:
    clock = FakeClock()
    rot, own, store = _rotation(tmp_path, clock)
    ca = rot.ca
    await register(store, CoordinatorInfo("c1", "https://a", "a:1", "a:2"))
    old_digest, secrets_before, tokens_before = ca.digest, ca.secrets_key(1), ca.token_signing_key()
    started = await rot.start(overlap_s=2.0)
    with pytest.raises(Conflict, match="in phase trust"):
        await rot.start()
    async with asyncio.TaskGroup() as tg:
        follow = tg.create_task(rot.follow())
        lead = tg.create_task(rot.lead(NO_FENCE))
        phases = [started.phase]
        for _ in range(40):
            await _spin(clock, 0.5)
            cur = await rot.current()
            assert cur is not None
            if not phases or phases[-1] != cur.phase:
                phases.append(cur.phase)
            if cur.phase == "done":
                break
        await _spin(clock, 1.0)  # the follower records that it saw done
        follow.cancel()
        lead.cancel()
    assert phases == ["trust", "issue", "retire", "done"]
    assert ca.digest == started.new_digest != old_digest
    assert ca.trust_bundle.digests == (started.new_digest,)
    assert own.reloads == 3  # one per applied phase
    issuer = x509.load_pem_x509_certificate(own.pem).issuer
    assert issuer == ca.root.subject  # re-issued from the new root
    # secrets sealed before stay readable (their key is pinned to the first root), in memory
    # and after a restart; join-token keys follow the new root
    assert ca.secrets_key(1) == secrets_before
    reloaded = CertificateAuthority.load(tmp_path / "ca", clock=clock)
    assert reloaded.digest == started.new_digest
    assert reloaded.secrets_key(1) == secrets_before
    assert reloaded.token_signing_key() != tokens_before
    applied = await rotation_table(store).get("applied-c1")
    assert applied is not None and applied.value == {"id": started.id, "phase": "done"}


async def test_own_certificate_renews_at_two_thirds_of_its_life(tmp_path: Path) -> None:
    clock = FakeClock()
    rot, own, _ = _rotation(tmp_path, clock)
    first = own.pem
    life = OWN_TTL + 300  # issued back-dated by 5 minutes
    task = asyncio.create_task(rot.keep_own_certificate())
    # earliest possible renewal: 2/3 - 5 % of the life after notBefore (= now - 300 s)
    earliest = life * (DEFAULT_FRACTION - DEFAULT_JITTER) - 300
    while clock.now() - 1_700_000_000.0 < earliest - 3600:
        clock.advance(3600)
        await asyncio.sleep(0)
    assert (own.pem, rot.own_renewals) == (first, 0)
    latest = life * DEFAULT_FRACTION - 300
    while clock.now() - 1_700_000_000.0 < latest + 1:
        clock.advance(600)
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    assert rot.own_renewals == 1 and own.pem != first and own.reloads == 1
    old, new = (x509.load_pem_x509_certificate(p) for p in (first, own.pem))
    # renewed inside the window: notBefore (back-dated 300 s) between earliest and latest
    renewed_at = new.not_valid_before_utc.timestamp() + 300 - 1_700_000_000.0
    assert earliest <= renewed_at <= latest + 600
    assert new.not_valid_after_utc > old.not_valid_after_utc


def test_endorsement_admits_the_new_root_and_nothing_else(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", root_key_size=2048)
    _, nxt = new_root(ca.trust_domain, ca.clock.now(), 2048)
    _, impostor = new_root(ca.trust_domain, ca.clock.now(), 2048)
    cross = endorse(ca, nxt)
    trusted = [ca.root]
    digests = [certificate_digest(c) for c in endorsed_roots([ca.root, nxt], trusted, cross)]
    assert digests == [ca.digest, certificate_digest(nxt)]
    # a root nobody we trust endorsed, or endorsed only by itself, is dropped
    assert endorsed_roots([impostor], trusted, cross) == []
    other = CertificateAuthority.init(tmp_path / "other", root_key_size=2048)
    assert endorsed_roots([nxt], trusted, endorse(other, nxt)) == []
    # a retired root the server no longer offers drops out of the client's bundle
    assert endorsed_roots([nxt], [ca.root, nxt], b"") == [nxt]
    assert len(load_pem_certificates(cross)) == 1


@pytest.mark.parametrize(
    ("trusted", "issuer", "bundle_sent", "renew"),
    [
        ([], "", False, False),  # an older agent reports nothing and is told nothing
        (["ISSUING"], "ISSUING", False, False),  # in step
        (["ISSUING", "EXTRA"], "ISSUING", True, False),  # trusts a retired root: new bundle
        (["OLD"], "OLD", True, True),  # after the switch: new bundle and renew now
    ],
)
def test_agent_advice(
    tmp_path: Path, trusted: list[str], issuer: str, bundle_sent: bool, renew: bool
) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", root_key_size=2048)
    names = {"ISSUING": ca.digest, "OLD": "o" * 64, "EXTRA": "e" * 64}
    hb = pb.Heartbeat(trusted_roots=[names[t] for t in trusted], cert_issuer=names.get(issuer, ""))
    reply = pb.HeartbeatAck()
    AgentTrust(MemoryStore(), ca, FakeClock()).advise("n1", hb, reply)
    assert bool(reply.ca_bundle_pem) == bundle_sent
    assert reply.renew_now == renew
    if bundle_sent:
        assert reply.ca_bundle_pem == ca.bundle_pem


async def test_agent_reports_are_written_once_per_change(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", root_key_size=2048)
    store = MemoryStore()
    trust = AgentTrust(store, ca, FakeClock())
    hb = pb.Heartbeat(trusted_roots=[ca.digest], cert_issuer=ca.digest)
    await trust.record("n1", hb, NO_FENCE)
    rev = (await rotation_table(store).get("node-n1")).mod_revision  # type: ignore[union-attr]
    await trust.record("n1", hb, NO_FENCE)
    assert (await rotation_table(store).get("node-n1")).mod_revision == rev  # type: ignore[union-attr]
    await trust.record("n1", pb.Heartbeat(trusted_roots=["x" * 64], cert_issuer=""), NO_FENCE)
    rec = await rotation_table(store).get("node-n1")
    assert rec is not None and rec.value == {"trusted": ["x" * 64], "issuer": ""}


def test_renewals_are_paced(tmp_path: Path) -> None:
    """4 per second, each agent told once per 30 s: 10 agents asking at once get 4 tells,
    then one more per 0.25 s; a told agent is not told again until 30 s have passed."""
    clock = FakeClock()
    ca = CertificateAuthority.init(tmp_path / "ca", root_key_size=2048)
    trust = AgentTrust(MemoryStore(), ca, clock, renewals_per_s=4, retell_s=30)
    hb = pb.Heartbeat(trusted_roots=[ca.digest], cert_issuer="o" * 64)

    def told(node: str) -> bool:
        reply = pb.HeartbeatAck()
        trust.advise(node, hb, reply)
        return reply.renew_now

    assert [told(f"n{i}") for i in range(10)] == [True] * 4 + [False] * 6  # bucket of 4
    clock.advance(0.25)  # one token back
    assert [told(f"n{i}") for i in range(4, 10)] == [True] + [False] * 5
    assert not told("n0")  # told 0.25 s ago: its renewal is under way
    clock.advance(30)
    assert told("n0")  # not renewed within 30 s: told again


async def _run_until(rot: RootRotation, clock: FakeClock, final: str) -> list[str]:
    """Drive the real follow and lead loops until the record reaches ``final``; the phases
    seen, in order."""
    phases: list[str] = []
    async with asyncio.TaskGroup() as tg:
        follow = tg.create_task(rot.follow())
        lead = tg.create_task(rot.lead(NO_FENCE))
        for _ in range(60):
            await _spin(clock, 0.5)
            cur = await rot.current()
            assert cur is not None
            if not phases or phases[-1] != cur.phase:
                phases.append(cur.phase)
            if cur.phase == final:
                break
        await _spin(clock, 1.0)
        follow.cancel()
        lead.cancel()
    return phases


async def test_abort_in_issue_goes_back_to_the_old_root(tmp_path: Path) -> None:
    clock = FakeClock()
    rot, own, store = _rotation(tmp_path, clock)
    ca = rot.ca
    await register(store, CoordinatorInfo("c1", "https://a", "a:1", "a:2"))
    old_digest, tokens_before = ca.digest, ca.token_signing_key()
    # a long overlap keeps the rotation in issue
    started = await rot.start(overlap_s=3600.0)
    assert (await _run_until(rot, clock, "issue"))[-1] == "issue"
    assert ca.digest == started.new_digest
    assert (ca.directory / "previous-ca.key").exists()  # kept for an abort
    aborted = await rot.abort()
    assert (aborted.phase, aborted.aborted_from) == ("revert", "issue")
    with pytest.raises(Conflict, match="being aborted already"):
        await rot.abort()
    # revert waits the overlap from the abort (3600 s) before dropping the new root
    assert (await _run_until(rot, clock, "untrust"))[-1] == "revert"
    cur = await rot.current()
    assert cur is not None and cur.phase == "revert" and "dropped in" in cur.waiting
    assert ca.digest == old_digest and set(ca.trust_bundle.digests) == {old_digest, cur.new_digest}
    clock.advance(3600)
    assert (await _run_until(rot, clock, "aborted"))[-2:] == ["untrust", "aborted"]
    assert ca.digest == old_digest and ca.trust_bundle.digests == (old_digest,)
    assert x509.load_pem_x509_certificate(own.pem).issuer == ca.root.subject
    assert ca.token_signing_key() == tokens_before  # join tokens from before work again
    for name in ("previous-ca.key", "previous-ca.crt", "next-ca.key", "next-ca.crt"):
        assert not (ca.directory / name).exists(), name
    reloaded = CertificateAuthority.load(tmp_path / "ca", clock=clock)
    assert reloaded.digest == old_digest and reloaded.trust_bundle.digests == (old_digest,)
    applied = await rotation_table(store).get("applied-c1")
    assert applied is not None and applied.value == {"id": started.id, "phase": "aborted"}
    with pytest.raises(Conflict, match="was aborted already"):
        await rot.abort()
    # a new rotation may start after an aborted one
    assert (await rot.start()).phase == "trust"


async def test_abort_in_trust_drops_the_new_root(tmp_path: Path) -> None:
    clock = FakeClock()
    rot, _, store = _rotation(tmp_path, clock)
    ca = rot.ca
    await register(store, CoordinatorInfo("c1", "https://a", "a:1", "a:2"))
    old_digest = ca.digest
    started = await rot.start()
    await rot.apply(started)  # trusts the new root; the leader has not moved on
    assert started.new_digest in ca.trust_bundle.digests
    assert (await rot.abort()).phase == "untrust"
    assert (await _run_until(rot, clock, "aborted"))[-1] == "aborted"
    assert ca.digest == old_digest and ca.trust_bundle.digests == (old_digest,)


async def test_abort_refused_when_too_late_and_wins_over_the_leader(tmp_path: Path) -> None:
    clock = FakeClock()
    rot, _, store = _rotation(tmp_path, clock)
    await register(store, CoordinatorInfo("c1", "https://a", "a:1", "a:2"))
    with pytest.raises(Conflict, match="no root rotation has been started"):
        await rot.abort()
    started = await rot.start()
    table = rotation_table(store)
    for phase, fragment in (("retire", "too late to go back"), ("done", "too late to abort")):
        await table.put("rotation", {**started.to_dict(), "phase": phase})
        with pytest.raises(Conflict, match=fragment):
            await rot.abort()
        cur = await rot.current()
        assert cur is not None and cur.phase == phase  # nothing changed
    # the leader read the record in trust, then the abort landed: the leader's advance to
    # issue must not overwrite it (compare-and-swap on the record's revision)
    await table.put("rotation", started.to_dict())
    await rot.apply(started)
    real_get = rot.table.get
    aborted_once = False

    async def get_then_abort(name: str):  # type: ignore[no-untyped-def]
        nonlocal aborted_once
        rec = await real_get(name)
        if name == "rotation" and not aborted_once:
            aborted_once = True
            await rot.abort()
        return rec

    rot.table.get = get_then_abort  # type: ignore[method-assign]
    lead = asyncio.create_task(rot.lead(NO_FENCE))
    await _spin(clock, 1.0)
    lead.cancel()
    await asyncio.gather(lead, return_exceptions=True)
    rot.table.get = real_get  # type: ignore[method-assign]
    cur = await rot.current()
    assert cur is not None and cur.phase == "untrust", cur
