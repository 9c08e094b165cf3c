"""Access keys and buckets with per-key permissions, in etcd (low rate: created by users,
read by every request through a short-lived cache).

Keys: ``/cloudless/s3-keys/<key id>`` holds the key's name and secret (SigV4 needs the secret
on the server; etcd is reachable only over the cluster's mutual TLS). Buckets:
``/cloudless/s3-buckets/<name>`` holds the owner key and each allowed key's permission, one of
``read`` < ``write`` < ``owner`` (each includes the ones before it).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from cloudless.lib.clock import Clock
from cloudless.lib.errors import Conflict
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.names import check_bucket
from cloudless.store.codec import DataclassCodec
from cloudless.store.protocol import Store
from cloudless.store.tables import TableSpec

PERMS = ("read", "write", "owner")
CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class AccessKey:
    key_id: str
    secret: str
    name: str
    created: float


@dataclass(frozen=True)
class Bucket:
    name: str
    created: float
    owner: str
    allow: dict[str, str] = field(default_factory=dict)

    def permits(self, key_id: str, need: str) -> bool:
        have = self.allow.get(key_id)
        return have is not None and PERMS.index(have) >= PERMS.index(need)


KEYS = TableSpec("s3-keys", DataclassCodec(AccessKey, kind="s3_access_key"))
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

    async def create_key(self, name: str) -> AccessKey:
        key = AccessKey(
            key_id="CL" + secrets.token_hex(9).upper(),
            secret=secrets.token_urlsafe(30),
            name=name,
            created=self.clock.now(),
        )
        await self.keys.create(key.key_id, key)
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
