"""The coordinator's side of ``Enroll``: a join token and a CSR in; the node record, its
"enrolled" event and a certificate out. Idempotent for the node that asked, and two store
round trips long.

Contract:

* A request is refused (a ``CloudlessError`` whose message names the problem and the fix)
  for a bad CSR, a bad/expired/revoked token, a token already used by anyone else (another
  node id, or the same node id with another key), or a node id already taken.
* The token redemption, the node record and the event are written in **one** transaction,
  guarded by the token record's mod revision and the node record's absence: either all three
  land or none does, and of concurrent requests for one token exactly one writes.
* A retry by the same node (same node id in the CSR's SPIFFE SAN, same public key) with the
  same token, after an earlier attempt's write landed (its answer lost: ``OutcomeUnknown``, a
  timeout, a dropped connection), gets a certificate and writes nothing. A token redeemed by
  this node whose node record is gone since (the operator removed the node) is refused.
* A store that stays unsure (``StoreError``) is raised as such: the caller answers
  ``UNAVAILABLE`` so the agent retries with the same CSR, which is then safe.

Order, cheapest refusal first and never burning a token on a bad request:
``csr_facts`` (parse only: node id, key fingerprint) -> ``TokenManager.check_signed`` (pure)
-> one read of token and node -> ``TokenManager.check_record`` (state, bcrypt in a worker
thread) -> ``decide`` (pure) -> sign (worker thread; ``sign_csr`` verifies the CSR's
signature, identity and key, so a bad CSR is refused here, before the token is spent) -> one
write. A certificate signed for a write that then fails is dropped, never sent.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloudless.coordinator.state.cluster import ClusterState, event
from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError
from cloudless.lib.ids import is_valid_id
from cloudless.model.node import Node
from cloudless.security.ca import CertificateAuthority
from cloudless.security.errors import TokenNotFound
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.token_store import MarkOutcome, TokenRecord, decide_mark
from cloudless.security.tokens import TokenClaims, TokenManager, TokenUse, check_state
from cloudless.store.errors import OutcomeUnknown, Unavailable
from cloudless.store.table import Record, Table
from cloudless.store.types import Get, GetResult, OpResult

log = logging.getLogger("cloudless.coordinator.agentapi.enrollment")


class NodeIdTaken(CloudlessError):
    code = "node_id_taken"


class NodeRemoved(CloudlessError):
    code = "node_removed"


@dataclass(frozen=True)
class CsrFacts:
    node_id: str
    spiffe: SpiffeId
    key: str  # hex SHA-256 of the CSR's public key (SubjectPublicKeyInfo, DER)


def csr_node_id(csr: x509.CertificateSigningRequest, trust_domain: str) -> str:
    """The node id a CSR's one SPIFFE URI SAN names; refuses anything else with a reason."""
    try:
        uris = csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        raise CloudlessError("the CSR is not a PEM CSR with a SPIFFE URI SAN") from None
    if len(uris) != 1:
        raise CloudlessError("the CSR must carry exactly one SPIFFE URI SAN")
    sid = SpiffeId.parse(uris[0])
    if sid.kind is not CertKind.NODE or sid.trust_domain != trust_domain:
        raise CloudlessError(f"the CSR names {sid}; a node of {trust_domain} must be enrolled")
    if not is_valid_id(sid.name):
        raise CloudlessError(f"node id {sid.name!r} must be a DNS label (a-z, 0-9, '-')")
    return sid.name


def csr_facts(csr_pem: bytes, trust_domain: str) -> CsrFacts:
    """Pure and cheap (parsing only; the CSR's signature is verified when it is signed): the
    node id, its SPIFFE ID and the key fingerprint a CSR asks for; raises with a reason."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CloudlessError("the CSR is not a PEM CSR with a SPIFFE URI SAN") from None
    node_id = csr_node_id(csr, trust_domain)
    der = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CsrFacts(node_id, SpiffeId.node(node_id, trust_domain), hashlib.sha256(der).hexdigest())


class Action(enum.Enum):
    WRITE = "write"  # redeem the token and create the node (and its event)
    DONE = "done"  # a retry: this node already redeemed the token and its record exists


@dataclass(frozen=True)
class Decision:
    action: Action
    token: TokenRecord | None = None  # the redeemed record to write (WRITE)


def decide(
    token: TokenRecord | None, node_exists: bool, *, node_id: str, key: str, at: float
) -> Decision:
    """Pure: what an enrollment of ``node_id`` (holding ``key``) does against these records.
    Raises the refusal (token missing, revoked, used by another; node id taken or removed)."""
    if token is None:
        raise TokenNotFound("the join token is unknown to this cluster")
    if check_state(token, consumer=node_id, key=key):
        if node_exists:
            return Decision(Action.DONE)
        raise NodeRemoved(
            f"node {node_id} enrolled with join token {token.token_id} and was removed since: "
            "enroll again with a new token and a fresh data directory"
        )
    if node_exists:
        raise NodeIdTaken(f"node id {node_id} is taken: enroll with a fresh data directory")
    mark = decide_mark(token, used_by=node_id, at=at, key=key)
    assert mark.outcome is MarkOutcome.WON and mark.record is not None  # check_state passed
    return Decision(Action.WRITE, mark.record)


@dataclass(frozen=True)
class Enrolled:
    node: Node  # as written by this request, or as the first attempt wrote it
    cert_pem: bytes
    claims: TokenClaims
    created: bool  # False: a retry answered from what an earlier attempt wrote


class Enroller:
    """Runs the enrollment against the store; see the module docstring for the contract."""

    def __init__(
        self,
        *,
        state: ClusterState,
        tokens: TokenManager,
        token_table: Table[TokenRecord],
        ca: CertificateAuthority,
        clock: Clock,
        attempts: int = 8,
    ) -> None:
        if token_table.store is not state.store:
            raise ValueError("the token table must live in the cluster store")
        self.state = state
        self.tokens = tokens
        self.token_table = token_table
        self.ca = ca
        self.clock = clock
        self.attempts = attempts

    async def enroll(
        self, token: str, csr_pem: bytes, node_for: Callable[[str, TokenClaims], Node]
    ) -> Enrolled:
        """``node_for(node_id, claims)`` builds the node record to create (pure)."""
        facts = csr_facts(csr_pem, self.ca.trust_domain)
        parsed, claims = self.tokens.check_signed(token, TokenUse.NODE_ENROLLMENT)
        tok, node = await self._read(claims.token_id, facts.node_id)
        await self.tokens.check_record(
            parsed, claims, tok.value if tok else None, consumer=facts.node_id, key=facts.key
        )
        now = self.clock.now()
        decide(tok.value if tok else None, node is not None, node_id=facts.node_id,
               key=facts.key, at=now)  # refuse before spending CPU on a signature  # fmt: skip
        cert = await asyncio.to_thread(self.ca.sign_csr, csr_pem, facts.spiffe, CertKind.NODE)
        new_node = node_for(facts.node_id, claims)
        created, written = await self._commit(claims.token_id, facts, new_node, tok, node, now)
        if not created:
            log.info("node %s retried its enrollment; answered from the first", facts.node_id)
        return Enrolled(written, cert, claims, created)

    async def _commit(
        self,
        token_id: str,
        facts: CsrFacts,
        new_node: Node,
        tok: Record[TokenRecord] | None,
        node: Record[Node] | None,
        now: float,
    ) -> tuple[bool, Node]:
        """One guarded write: (True, the new node) if it landed now, (False, the stored node)
        if an earlier attempt's had."""
        nodes, events = self.state.nodes, self.state.events
        message = f"node {facts.node_id} enrolled ({new_node.name}, {new_node.zone or '-'})"
        ev_name, ev_body = event("node", message, now, node=facts.node_id)
        for _ in range(self.attempts):
            d = decide(
                tok.value if tok else None,
                node is not None,
                node_id=facts.node_id,
                key=facts.key,
                at=now,
            )
            if d.action is Action.DONE:
                assert node is not None
                return False, node.value
            assert tok is not None and d.token is not None
            try:
                res = await self.state.store.txn(
                    [
                        self.token_table.unchanged(token_id, tok.mod_revision),
                        nodes.unchanged(facts.node_id, 0),
                    ],
                    [
                        self.token_table.put_op(token_id, d.token),
                        nodes.put_op(facts.node_id, new_node),
                        events.put_op(ev_name, ev_body),
                    ],
                    [Get(self.token_table.key(token_id)), Get(nodes.key(facts.node_id))],
                )
            except OutcomeUnknown:
                # The guards make a second write safe; the re-read says whether the first
                # landed (then the token names us and the node exists: DONE).
                tok, node = await self._read(token_id, facts.node_id)
                continue
            if res.succeeded:
                log.info(message)
                return True, new_node
            tok, node = self._decode(token_id, facts.node_id, res.results)
        raise Unavailable(
            f"enrollment of {facts.node_id}: the store changed under us {self.attempts} times; "
            "retry"
        )

    async def _read(
        self, token_id: str, node_id: str
    ) -> tuple[Record[TokenRecord] | None, Record[Node] | None]:
        """The token and node records at one revision, in one round trip."""
        res = await self.state.store.txn(
            [], [Get(self.token_table.key(token_id)), Get(self.state.nodes.key(node_id))]
        )
        return self._decode(token_id, node_id, res.results)

    def _decode(
        self, token_id: str, node_id: str, results: tuple[OpResult, ...]
    ) -> tuple[Record[TokenRecord] | None, Record[Node] | None]:
        tok_r, node_r = results[0], results[1]
        assert isinstance(tok_r, GetResult) and isinstance(node_r, GetResult)
        tok = self.token_table.decode(tok_r.kvs[0]) if tok_r.kvs else None
        node = self.state.nodes.decode(node_r.kvs[0]) if node_r.kvs else None
        return tok, node
