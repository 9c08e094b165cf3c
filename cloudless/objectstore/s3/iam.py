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
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError, Conflict
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.names import check_bucket
from cloudless.security.secretbox import Sealed, SecretBox
from cloudless.store.codec import DataclassCodec, dump, load
from cloudless.store.protocol import Store
from cloudless.store.tables import TableSpec

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


BUCKETS = TableSpec("s3-buckets", DataclassCodec(Bucket, kind="s3_bucket"))


class Iam:
    def __init__(self, store: Store, clock: Clock) -> None:
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

    async def key(self, key_id: str) -> AccessKey | None:
        if not key_id.isalnum() or len(key_id) > 128:
            return None
        k: AccessKey | None = await self._cached("key", key_id)
        return k

    # ---- buckets ---------------------------------------------------------------------------

    async def bucket(self, name: str) -> Bucket | None:
        b: Bucket | None = await self._cached("bucket", name)
        return b

    async def create_bucket(self, name: str, owner: str) -> Bucket:
        check_bucket(name)
        b = Bucket(name, self.clock.now(), owner, {owner: "owner"})
        try:
            await self.buckets.create(name, b)
        except Conflict:
            existing = await self.buckets.get(name)
            if existing is not None and existing.value.owner == owner:
                raise S3Error(
                    "BucketAlreadyOwnedByYou", f"you already own bucket {name!r}", resource=name
                ) from None
            raise S3Error(
                "BucketAlreadyExists", f"bucket {name!r} exists; pick another name", resource=name
            ) from None
        self._forget("bucket", name)
        return b

    async def delete_bucket(self, name: str) -> None:
        await self.buckets.delete(name)
        self._forget("bucket", name)

    async def allow(self, name: str, key_id: str, perm: str) -> Bucket:
        if perm not in PERMS:
            raise S3Error("InvalidArgument", f"permission {perm!r}: one of {', '.join(PERMS)}")

        def change(b: Bucket | None) -> Bucket | None:
            if b is None:
                raise S3Error("NoSuchBucket", f"bucket {name!r} does not exist", resource=name)
            return replace(b, allow={**b.allow, key_id: perm})

        rec = await self.buckets.update(name, change)
        self._forget("bucket", name)
        assert rec is not None
        return rec.value

    async def visible_buckets(self, key_id: str) -> list[Bucket]:
        listing = await self.buckets.list()
        return [r.value for r in listing.records if key_id in r.value.allow]
