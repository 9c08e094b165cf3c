"""Access keys and buckets with per-key permissions, in etcd (low rate: created by users,
read by every request through a short-lived cache).

Keys: ``/cloudless/s3-keys/<key id>`` holds the key's name and its secret sealed with the
cluster's secret box (``security.secretbox``, associated data ``s3-key/<key id>``), so the
store holds no secret in clear. SigV4 needs the secret on the node that checks a signature:
coordinators open it when a storage or gateway node reads the key through the store proxy
(``reveal``), over the node's mutual TLS channel, as they deliver secrets to agents. A key
written before sealing (``secret`` set, ``sealed`` empty) still reads. Buckets:
``/cloudless/s3-buckets/<name>`` holds the owner key and each allowed key's permission, one of
``read`` < ``write`` < ``owner`` (each includes the ones before it).

Grants follow their key: a grant (``allow``, or a bucket created for an owner) is written only
while the key exists (a compare in the same transaction), and ``delete_key`` deletes the key
and removes it from every bucket's ``allow`` in one transaction; buckets granted to it
concurrently, after its listing, are swept right after (no grant can appear once the key is
gone). ``reseal_keys`` re-seals every key's secret under a secrets-key rotation's new
generation (``cloudless secret rotate-key``).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError, Conflict
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.names import check_bucket
from cloudless.security.secretbox import Sealed, SecretBox, SecretUnreadable
from cloudless.store.codec import DataclassCodec, dump, load
from cloudless.store.fence import NO_FENCE, Fence, fenced_txn
from cloudless.store.protocol import Store
from cloudless.store.tables import TableSpec
from cloudless.store.types import Compare, TxnOp

log = logging.getLogger(__name__)
PERMS = ("read", "write", "owner")
CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class AccessKey:
    key_id: str
    secret: str
    """In clear only in memory: the stored record has ``""`` here and the value in ``sealed``."""
    name: str
    created: float
    sealed: str = ""
    """``Sealed.to_dict()`` as JSON (``seal_key``), or ``""`` for a key not sealed."""

    def public(self) -> dict[str, Any]:
        """What listings show: never the secret."""
        return {"key_id": self.key_id, "name": self.name, "created": self.created}


@dataclass(frozen=True)
class Bucket:
    name: str
    created: float
    owner: str
    allow: dict[str, str] = field(default_factory=dict)
    lifecycle: str = ""
    """The bucket's lifecycle rules (``lifecycle.encode``; "" for none)."""
    cors: str = ""
    """The bucket's CORS rules (``s3.cors.encode``; "" for none)."""
    public_read: bool = False
    """Anyone, signed or not, may list the bucket and read its objects (S3's canned ACL
    ``public-read``); nothing else."""

    def permits(self, key_id: str, need: str) -> bool:
        have = self.allow.get(key_id)
        return have is not None and PERMS.index(have) >= PERMS.index(need)


# v2 added ``sealed``: a v1 record reads unchanged (plaintext secret, empty ``sealed``)
KEYS = TableSpec(
    "s3-keys",
    DataclassCodec(AccessKey, kind="s3_access_key", version=2, migrations={1: lambda d: d}),
)
KEYS_PREFIX = KEYS.prefix


def new_key(name: str, now: float) -> AccessKey:
    return AccessKey("CL" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30), name, now)


def _aad(key_id: str) -> str:
    return f"s3-key/{key_id}"


def seal_key(box: SecretBox, key: AccessKey) -> AccessKey:
    """``key`` as stored: its secret sealed under ``box``, bound to its key id."""
    s = box.seal(_aad(key.key_id), key.secret.encode(), now=key.created)
    return replace(key, secret="", sealed=json.dumps(s.to_dict(), sort_keys=True))


def open_key(box: SecretBox, key: AccessKey) -> AccessKey:
    """``key`` with its secret in clear (unchanged if it was not sealed). Raises
    ``SecretUnreadable`` if the seal does not open (another cluster's key, or tampering)."""
    if not key.sealed:
        return key
    # opened under the id of the record it sits in: a seal copied to another key fails
    sealed = replace(Sealed.from_dict(json.loads(key.sealed)), name=_aad(key.key_id))
    return replace(key, secret=box.open(sealed).decode(), sealed="")


def reveal(box: SecretBox, key: str, raw: bytes) -> bytes:
    """The stored bytes of ``key`` as a node should read them: an access key record with its
    secret opened; anything else unchanged (``store_proxy.serve``'s ``reveal``). A record
    that does not decode or open is passed on sealed (logged): signatures made with that key
    then fail to verify, and nothing else is affected."""
    if not key.startswith(KEYS_PREFIX):
        return raw
    codec = KEYS.default_codec
    try:
        return dump(codec, open_key(box, load(codec, key, raw)))
    except CloudlessError as e:
        log.warning("access key %s is not revealed to a node: %s", key, e)
        return raw


BUCKETS = TableSpec(
    "s3-buckets",
    DataclassCodec(
        Bucket,
        kind="s3_bucket",
        ignore_unknown=True,
        omit_default=("lifecycle", "cors", "public_read"),
    ),
)
"""Bucket records. Fields added since the seventh session are written only when set, so a
node of that session (which refuses fields it does not know in a bucket record) still reads
every bucket that uses none of them during a rolling upgrade."""
ATTEMPTS = 16
BATCH = 50  # buckets per transaction: etcd allows 128 compares and operations in all


async def reseal_keys(
    store: Store, box: SecretBox, *, fence: Fence = NO_FENCE
) -> tuple[int, list[str]]:
    """Re-seal every access key's secret under ``box``'s generation (a key stored in clear
    is sealed too). Returns how many were re-sealed and the keys left as they were, each with
    why (a seal that does not open: another cluster's key, or tampering; signatures made with
    it fail already)."""
    table = KEYS.bind(store)
    skipped: list[str] = []
    done = 0
    for rec in (await table.list()).records:

        def reseal(cur: AccessKey | None) -> AccessKey | None:
            if cur is None:
                return None
            return seal_key(box, open_key(box, cur))

        try:
            if await table.update(rec.name, reseal, fence=fence) is not None:
                done += 1
        except (SecretUnreadable, ValueError, KeyError) as e:  # a garbled seal too
            skipped.append(f"access key {rec.name}: {e}")
            log.warning("access key %s not re-sealed: %s", rec.name, e)
    return done, skipped


def _without(b: Bucket, key_id: str) -> Bucket:
    return replace(b, allow={k: p for k, p in b.allow.items() if k != key_id})


class Iam:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.keys = KEYS.bind(store)
        self.buckets = BUCKETS.bind(store)
        self.clock = clock
        self._cache: dict[str, tuple[float, Any]] = {}

    async def _cached(self, kind: str, name: str) -> Any:
        hit = self._cache.get(f"{kind}/{name}")
        now = self.clock.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        table = self.keys if kind == "key" else self.buckets
        rec = await table.get(name)
        value = rec.value if rec else None
        self._cache[f"{kind}/{name}"] = (now + CACHE_SECONDS, value)
        return value

    def _forget(self, kind: str, name: str) -> None:
        self._cache.pop(f"{kind}/{name}", None)

    # ---- keys ------------------------------------------------------------------------------

    async def create_key(self, name: str, box: SecretBox | None = None) -> AccessKey:
        """A new key (its secret in clear, shown once); stored sealed under ``box`` (tests on
        a loopback store may pass none: then stored as is)."""
        key = new_key(name, self.clock.now())
        await self.keys.create(key.key_id, seal_key(box, key) if box else key)
        return key

    def _key_exists(self, key_id: str) -> Compare:
        return Compare.version(self.keys.key(key_id), ">", 0)

    async def delete_key(self, key_id: str, *, fence: Fence = NO_FENCE) -> list[str] | None:
        """Delete the key and its grants (see the module docstring): the buckets it was
        removed from, sorted, or None when there is no such key."""
        revoked: set[str] = set()
        for _ in range(ATTEMPTS):
            rec = await self.keys.get(key_id)
            if rec is None:
                return None
            held = [r for r in (await self.buckets.list()).records if key_id in r.value.allow]
            batch, rest = held[:BATCH], held[BATCH:]
            compares = [self.buckets.unchanged(r.name, r.mod_revision) for r in batch]
            ops: list[TxnOp] = [
                self.buckets.put_op(r.name, _without(r.value, key_id)) for r in batch
            ]
            if not rest:  # the last batch goes with the key itself
                compares.append(self.keys.unchanged(key_id, rec.mod_revision))
                ops.append(self.keys.delete_op(key_id))
            if (await fenced_txn(self.store, fence, compares, ops)).succeeded:
                revoked.update(r.name for r in batch)
                if not rest:
                    break
        else:
            raise Conflict(f"access key {key_id}: its buckets kept changing; retry the delete")
        self._forget("key", key_id)
        # a grant that committed after the listing above, while the key still existed
        for r in (await self.buckets.list()).records:
            if key_id in r.value.allow:
                await self.buckets.update(
                    r.name, lambda b: _without(b, key_id) if b and key_id in b.allow else None
                )
                revoked.add(r.name)
        for name in revoked:
            self._forget("bucket", name)
        return sorted(revoked)

    async def key(self, key_id: str) -> AccessKey | None:
        if not key_id.isalnum() or len(key_id) > 128:
            return None
        k: AccessKey | None = await self._cached("key", key_id)
        return k

    # ---- buckets ---------------------------------------------------------------------------

    async def bucket(self, name: str) -> Bucket | None:
        b: Bucket | None = await self._cached("bucket", name)
        return b

    async def create_bucket(self, name: str, owner: str, *, public_read: bool = False) -> Bucket:
        check_bucket(name)
        b = Bucket(name, self.clock.now(), owner, {owner: "owner"}, public_read=public_read)
        res = await self.store.txn(
            [self.buckets.unchanged(name, 0), self._key_exists(owner)],
            [self.buckets.put_op(name, b)],
        )
        if not res.succeeded:
            existing = await self.buckets.get(name)
            if existing is None:
                raise S3Error(
                    "InvalidAccessKeyId", f"access key {owner!r} does not exist", resource=name
                )
            if existing.value.owner == owner:
                raise S3Error(
                    "BucketAlreadyOwnedByYou", f"you already own bucket {name!r}", resource=name
                )
            raise S3Error(
                "BucketAlreadyExists", f"bucket {name!r} exists; pick another name", resource=name
            )
        self._forget("bucket", name)
        return b

    async def delete_bucket(self, name: str) -> None:
        await self.buckets.delete(name)
        self._forget("bucket", name)

    async def allow(self, name: str, key_id: str, perm: str) -> Bucket:
        if perm not in PERMS:
            raise S3Error("InvalidArgument", f"permission {perm!r}: one of {', '.join(PERMS)}")

        for _ in range(ATTEMPTS):
            cur = await self.buckets.get(name)
            if cur is None:
                raise S3Error("NoSuchBucket", f"bucket {name!r} does not exist", resource=name)
            new = replace(cur.value, allow={**cur.value.allow, key_id: perm})
            res = await self.store.txn(
                [self.buckets.unchanged(name, cur.mod_revision), self._key_exists(key_id)],
                [self.buckets.put_op(name, new)],
            )
            if res.succeeded:
                self._forget("bucket", name)
                return new
            if await self.keys.get(key_id) is None:
                raise S3Error("InvalidAccessKeyId", f"access key {key_id!r} does not exist")
        raise Conflict(f"bucket {name!r} kept changing; retry the grant")

    async def set_lifecycle(self, name: str, rules: str) -> None:
        """Replace the bucket's lifecycle rules (``lifecycle.encode``; "" removes them)."""
        await self._edit(name, lambda b: replace(b, lifecycle=rules))

    async def set_cors(self, name: str, rules: str) -> None:
        """Replace the bucket's CORS rules (``s3.cors.encode``; "" removes them)."""
        await self._edit(name, lambda b: replace(b, cors=rules))

    async def set_public_read(self, name: str, public: bool) -> None:
        """Open the bucket to anonymous listing and reads, or close it."""
        await self._edit(name, lambda b: replace(b, public_read=public))

    async def _edit(self, name: str, edit: Callable[[Bucket], Bucket]) -> None:
        def change(b: Bucket | None) -> Bucket | None:
            if b is None:
                raise S3Error("NoSuchBucket", f"bucket {name!r} does not exist", resource=name)
            new = edit(b)
            return None if new == b else new

        await self.buckets.update(name, change)
        self._forget("bucket", name)

    async def buckets_with_rules(self) -> list[Bucket]:
        """Every bucket that has lifecycle rules, read from the store now (not cached)."""
        return [r.value for r in (await self.buckets.list()).records if r.value.lifecycle]

    async def visible_buckets(self, key_id: str) -> list[Bucket]:
        listing = await self.buckets.list()
        return [r.value for r in listing.records if key_id in r.value.allow]
