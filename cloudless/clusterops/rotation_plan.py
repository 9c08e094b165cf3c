"""When a root rotation may take its next step: one pure function over a view of the cluster.

A rotation (``cloudless ca rotate``) moves through four phases, one record in the store
(``ca/rotation``) that the leader advances and every coordinator follows:

=========  =====================================================  ==========================
phase      every coordinator, on seeing it                        leader advances when
=========  =====================================================  ==========================
trust      trusts the new root too (both roots in every bundle);  every coordinator applied
           agents get the two-root bundle in their next ack       it and every ready node
                                                                  reports trusting the new
                                                                  root
issue      issues from the new root; re-issues its own            every coordinator applied
           certificate; agents are told to renew now              it, every ready node's
                                                                  certificate comes from the
                                                                  new root and ``overlap_s``
                                                                  has passed since the switch
retire     stops trusting the old root; agents get the one-root  every coordinator applied
           bundle                                                 it and no ready node
                                                                  reports trusting the old
                                                                  root
done       nothing left to do                                     (final)
=========  =====================================================  ==========================

An abort (``cloudless ca rotate --abort``, ``aborting``) is possible while the old root is
still trusted everywhere, i.e. in ``trust`` or ``issue``, and takes the rotation back:

=========  =====================================================  ==========================
phase      every coordinator, on seeing it                        leader advances when
=========  =====================================================  ==========================
revert     (from ``issue``) issues from the old root again,       every coordinator applied
           re-issues its own certificate; both roots trusted;     it, every ready node's
           agents are told to renew (their certificate is not     certificate comes from the
           from the issuing root)                                 old root and ``overlap_s``
                                                                  has passed since the abort
untrust    stops trusting the new root; agents get the            every coordinator applied
           one-root bundle                                        it and no ready node trusts
                                                                  the new root
aborted    nothing left to do                                     (final)
=========  =====================================================  ==========================

An abort from ``trust`` goes straight to ``untrust`` (nothing was issued from the new root).
From ``retire`` on it is refused (``abort_refusal``): some coordinators and nodes have dropped
the old root already, so certificates it signed are being refused.

Rules:

1. A coordinator that applied a later phase of the same rotation has applied the earlier
   ones (phases only move forward along the rotation's ``path``).
2. Only nodes in state ``ready`` hold a step back; others are listed in the reason. A node
   that stays away until the old root is retired must re-enrol with a join token.
3. Every wait says what it waits for, naming at most five coordinators or nodes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from cloudless.lib.errors import ValidationError

PHASES = ("trust", "issue", "retire", "done", "revert", "untrust", "aborted")
FORWARD = ("trust", "issue", "retire", "done")
FINAL = ("done", "aborted")
ABORTABLE = ("trust", "issue")
ROTATION_KEY = "rotation"
APPLIED_PREFIX = "applied-"


@dataclass(frozen=True)
class Rotation:
    """The shared record. ``sealed_key`` is the new root's key, AES-GCM sealed under a key
    derived from the *old* root key, which only coordinators hold."""

    id: str
    phase: str
    old_digest: str
    new_digest: str
    new_cert_pem: str
    sealed_key: str  # base64(nonce || ciphertext)
    started_at: float
    overlap_s: float = 0.0
    cross_pem: str = ""  # the new root's key and subject, certified by the old root
    issued_at: float = 0.0  # when the leader moved to ``issue``
    updated_at: float = 0.0
    waiting: str = ""
    aborted_from: str = ""  # "" or the phase the rotation was aborted in (trust, issue)
    aborted_at: float = 0.0

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValidationError(f"rotation.phase: {self.phase!r} is not one of {PHASES}")
        if self.aborted_from not in ("", *ABORTABLE):
            raise ValidationError(
                f"rotation.aborted_from: {self.aborted_from!r} is not one of {ABORTABLE}"
            )
        if self.phase not in self.path:
            raise ValidationError(
                f"rotation.phase: {self.phase!r} is not on this rotation's path {self.path}"
            )

    @property
    def path(self) -> tuple[str, ...]:
        """The phases this rotation moves through, in order."""
        if self.aborted_from == "trust":
            return ("trust", "untrust", "aborted")
        if self.aborted_from == "issue":
            return ("trust", "issue", "revert", "untrust", "aborted")
        return FORWARD

    def index(self, phase: str) -> int:
        """Position of ``phase`` on this rotation's path (-1: not on it)."""
        return self.path.index(phase) if phase in self.path else -1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rotation:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        try:
            return cls(**known)
        except TypeError as e:
            raise ValidationError(f"rotation record is incomplete ({e})") from None

    @property
    def active(self) -> bool:
        return self.phase not in FINAL

    def sealed_bytes(self) -> bytes:
        return base64.b64decode(self.sealed_key)


def abort_refusal(rot: Rotation | None) -> str | None:
    """Why ``rot`` cannot be aborted now (``None``: it can)."""
    if rot is None:
        return "no root rotation has been started: nothing to abort"
    if rot.phase in ABORTABLE:
        return None
    if rot.phase == "done":
        return (
            f"root rotation {rot.id} is done and the old root retired: too late to abort; "
            "run `cloudless ca rotate` again to move to another root"
        )
    if rot.phase == "retire":
        return (
            f"root rotation {rot.id} is retiring the old root: coordinators and nodes are "
            "dropping it and certificates it signed are refused, so it is too late to go back; "
            "let it finish (`cloudless ca status`) and rotate again"
        )
    if rot.phase == "aborted":
        return f"root rotation {rot.id} was aborted already: the old root is the only one"
    return f"root rotation {rot.id} is being aborted already (phase {rot.phase})"


def aborting(rot: Rotation, now: float) -> Rotation:
    """The record of ``rot`` aborted at ``now`` (check ``abort_refusal`` first)."""
    if rot.phase == "trust":
        nxt, why = "untrust", "aborted before any certificate came from the new root"
    else:
        nxt, why = "revert", "aborted: the old root issues again; certificates are renewed"
    return replace(
        rot, phase=nxt, aborted_from=rot.phase, aborted_at=now, waiting=why, updated_at=now
    )


@dataclass(frozen=True)
class NodeTrust:
    """What a node last reported: the roots it trusts and the root that signed its cert."""

    node_id: str
    ready: bool
    trusted: tuple[str, ...] = ()
    issuer: str = ""


@dataclass(frozen=True)
class RotationView:
    rotation: Rotation
    now: float
    coordinators: tuple[str, ...]
    applied: Mapping[str, tuple[str, str]]  # coordinator -> (rotation id, phase)
    nodes: tuple[NodeTrust, ...]


@dataclass(frozen=True)
class Step:
    advance_to: str | None  # the next phase, or None: wait
    reason: str


def _names(items: list[str]) -> str:
    head = ", ".join(sorted(items)[:5])
    return head + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def next_step(view: RotationView) -> Step:
    rot = view.rotation
    if not rot.active:
        return Step(None, "rotation finished")
    here = rot.index(rot.phase)
    behind = [
        c
        for c in view.coordinators
        if view.applied.get(c, ("", ""))[0] != rot.id or rot.index(view.applied[c][1]) < here
    ]
    if behind:
        return Step(
            None,
            f"{len(behind)} of {len(view.coordinators)} coordinators have not applied "
            f"{rot.phase} yet: {_names(behind)}",
        )
    ready = [n for n in view.nodes if n.ready]
    away = [n.node_id for n in view.nodes if not n.ready]
    note = f"; not ready, not waited for: {_names(away)}" if away else ""
    if rot.phase == "trust":
        lagging = [n.node_id for n in ready if rot.new_digest not in n.trusted]
        if lagging:
            return Step(
                None,
                f"{len(lagging)} of {len(ready)} ready nodes do not trust the new root yet: "
                f"{_names(lagging)}{note}",
            )
        return Step("issue", f"every coordinator and ready node trusts the new root{note}")
    if rot.phase == "issue":
        lagging = [n.node_id for n in ready if n.issuer != rot.new_digest]
        if lagging:
            return Step(
                None,
                f"{len(lagging)} of {len(ready)} ready nodes still hold a certificate from the "
                f"old root: {_names(lagging)}{note}",
            )
        left = rot.issued_at + rot.overlap_s - view.now
        if left > 0:
            return Step(None, f"every certificate renewed; the old root is retired in {left:.0f}s")
        return Step("retire", f"every coordinator and ready node renewed{note}")
    if rot.phase == "revert":
        lagging = [n.node_id for n in ready if n.issuer != rot.old_digest]
        if lagging:
            return Step(
                None,
                f"aborting: {len(lagging)} of {len(ready)} ready nodes hold a certificate from "
                f"the new root: {_names(lagging)}{note}",
            )
        left = rot.aborted_at + rot.overlap_s - view.now
        if left > 0:
            return Step(
                None, f"aborting: every certificate renewed; the new root is dropped in {left:.0f}s"
            )
        return Step("untrust", f"every coordinator and ready node is back on the old root{note}")
    if rot.phase == "untrust":
        lagging = [n.node_id for n in ready if rot.new_digest in n.trusted]
        if lagging:
            return Step(
                None,
                f"aborting: {len(lagging)} of {len(ready)} ready nodes still trust the new "
                f"root: {_names(lagging)}{note}",
            )
        return Step("aborted", f"every coordinator and ready node dropped the new root{note}")
    lagging = [n.node_id for n in ready if rot.old_digest in n.trusted]
    if lagging:
        return Step(
            None,
            f"{len(lagging)} of {len(ready)} ready nodes still trust the old root: "
            f"{_names(lagging)}{note}",
        )
    return Step("done", f"every coordinator and ready node stopped trusting the old root{note}")


def advanced(rot: Rotation, step: Step, now: float) -> Rotation:
    """The record after ``step`` (the same phase with a new reason when it waits)."""
    if step.advance_to is None:
        return replace(rot, waiting=step.reason, updated_at=now)
    issued_at = now if step.advance_to == "issue" else rot.issued_at
    return replace(
        rot, phase=step.advance_to, waiting=step.reason, updated_at=now, issued_at=issued_at
    )
