"""Typed store errors. Every message names the key or lease involved and what to do about it."""

from __future__ import annotations

from cloudless.lib.errors import CloudlessError


class StoreError(CloudlessError):
    """Base of all store errors."""

    code = "store_error"


class Unavailable(StoreError):
    """The store could not be reached (no quorum, member down). Nothing was applied; retry."""

    code = "store_unavailable"


class OutcomeUnknown(StoreError):
    """A write was sent but no answer came back: it may or may not have been applied.

    Callers must re-read (e.g. compare the key's mod revision) before retrying a
    compare-and-swap; blind retries of non-idempotent writes are not safe.
    """

    code = "store_outcome_unknown"


class Compacted(StoreError):
    """The requested revision is older than the store's compaction point: history is gone.

    Watchers must re-list (see ``watch_with_resync``) and resume from the listing's revision.
    """

    code = "store_compacted"

    def __init__(self, requested: int, compact_revision: int | None = None) -> None:
        point = "" if compact_revision is None else f" {compact_revision}"
        super().__init__(
            f"revision {requested} is older than the store's compaction point{point}; "
            "re-list and watch from the listing's revision"
        )
        self.requested = requested
        self.compact_revision = compact_revision


class LeaseNotFound(StoreError):
    """The lease does not exist (never granted, revoked, or expired)."""

    code = "store_lease_not_found"

    def __init__(self, lease_id: int) -> None:
        super().__init__(
            f"lease {lease_id:x} not found: it expired or was revoked; grant a new lease"
        )
        self.lease_id = lease_id


class DecodeError(StoreError):
    """A stored value does not decode under the table's schema. Names the key; never retried."""

    code = "store_decode_error"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"value at {key!r} does not decode: {reason}")
        self.key = key
        self.reason = reason


class Fenced(StoreError):
    """A leader-only write was refused because this process no longer holds leadership."""

    code = "store_fenced"


class InvalidRequest(StoreError):
    """A request the store refuses outright (e.g. the same key twice in one transaction)."""

    code = "store_invalid_request"
