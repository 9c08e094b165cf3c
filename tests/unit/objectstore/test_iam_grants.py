"""Grants follow their access key (``s3.iam``): deleting a key removes it from every bucket's
``allow`` in the transaction that deletes it, grants racing the delete are swept, a grant or
bucket for a key that is gone is refused by the store; a secrets-key rotation re-seals keys."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.iam import (
    BATCH,
    BUCKETS,
    KEYS,
    Bucket,
    Iam,
    open_key,
    reseal_keys,
)
from cloudless.security.secretbox import Sealed, SecretBox
from cloudless.store.codec import DataclassCodec
from cloudless.store.memory import MemoryStore
from cloudless.store.types import Compare, Delete, TxnOp, TxnResult

KEY_FOR = lambda g: bytes([g]) * 32  # noqa: E731  (a key per generation, as the CA derives)


async def allows(store: MemoryStore) -> dict[str, dict[str, str]]:
    return {r.name: r.value.allow for r in (await BUCKETS.bind(store).list()).records}


async def test_delete_removes_every_grant_with_the_key() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    iam = Iam(store, clock)
    alice, bob = await iam.create_key("alice"), await iam.create_key("bob")
    for name in ("photos", "docs"):
        await iam.create_bucket(name, alice.key_id)
    await iam.create_bucket("bobs", bob.key_id)
    await iam.allow("photos", bob.key_id, "write")
    await iam.allow("docs", bob.key_id, "read")
    await iam.allow("bobs", alice.key_id, "read")

    assert await iam.delete_key(bob.key_id) == ["bobs", "docs", "photos"]
    assert await allows(store) == {
        "bobs": {alice.key_id: "read"},  # bob's own bucket stays, with the grants of others
        "docs": {alice.key_id: "owner"},
        "photos": {alice.key_id: "owner"},
    }
    assert await KEYS.bind(store).get(bob.key_id) is None
    assert await iam.delete_key(bob.key_id) is None  # gone: nothing to delete
    # the store refuses a grant or a bucket for a key that is gone (no pre-check here)
    with pytest.raises(S3Error) as e:
        await iam.allow("photos", bob.key_id, "read")
    assert e.value.code == "InvalidAccessKeyId"
    with pytest.raises(S3Error) as e:
        await iam.create_bucket("new-one", bob.key_id)
    assert e.value.code == "InvalidAccessKeyId"
    assert "new-one" not in await allows(store)


async def test_more_buckets_than_one_transaction_holds() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    iam = Iam(store, clock)
    alice, bob = await iam.create_key("alice"), await iam.create_key("bob")
    n = 2 * BATCH + 7  # three transactions: 50, 50, then 7 with the key's deletion
    for i in range(n):
        await iam.create_bucket(f"b{i:03d}", alice.key_id)
        await iam.allow(f"b{i:03d}", bob.key_id, "read")
    assert len(await iam.delete_key(bob.key_id) or []) == n
    assert all(a == {alice.key_id: "owner"} for a in (await allows(store)).values())


class GrantDuringDelete(MemoryStore):
    """Commits a grant of ``key`` on ``bucket`` just before the transaction that deletes the
    key: the grant landed after the delete listed the buckets."""

    key = bucket = ""

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        if self.key and any(isinstance(op, Delete) and self.key in op.key for op in success):
            table = BUCKETS.bind(self)
            rec = await table.get(self.bucket)
            assert rec is not None
            new = replace(rec.value, allow={**rec.value.allow, self.key: "write"})
            await table.put(self.bucket, new)
            self.key = ""
        return await super().txn(compares, success, failure)


async def test_a_grant_racing_the_delete_is_swept() -> None:
    clock = FakeClock()
    store = GrantDuringDelete(clock)
    iam = Iam(store, clock)
    alice, bob = await iam.create_key("alice"), await iam.create_key("bob")
    await iam.create_bucket("photos", alice.key_id)
    await iam.create_bucket("docs", alice.key_id)
    await iam.allow("photos", bob.key_id, "read")
    store.key, store.bucket = bob.key_id, "docs"
    # photos was listed and changed in the key's transaction; docs was granted after the
    # listing (the key still existed), and swept once the key was gone
    assert await iam.delete_key(bob.key_id) == ["docs", "photos"]
    assert bob.key_id not in str(await allows(store))


async def test_rotation_reseals_keys_under_the_new_generation() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    iam = Iam(store, clock)
    gen1 = SecretBox(KEY_FOR, 1)
    sealed = await iam.create_key("sealed", gen1)
    legacy = await iam.create_key("legacy")  # stored in clear, as v1 records are
    broken = await iam.create_key("broken", gen1)
    keys = KEYS.bind(store)
    rec = await keys.get(broken.key_id)
    assert rec is not None
    doc = json.loads(rec.value.sealed)
    ct = bytearray(base64.b64decode(doc["ciphertext"]))
    ct[0] ^= 1  # tampered
    doc["ciphertext"] = base64.b64encode(ct).decode()
    await keys.put(broken.key_id, replace(rec.value, sealed=json.dumps(doc)))
    garbled = await iam.create_key("garbled", gen1)
    rec = await keys.get(garbled.key_id)
    assert rec is not None
    await keys.put(garbled.key_id, replace(rec.value, sealed="{not json"))

    done, skipped = await reseal_keys(store, SecretBox(KEY_FOR, 2))
    assert done == 2, skipped
    assert [s.split(":")[0] for s in skipped] == [
        f"access key {k.key_id}" for k in sorted((broken, garbled), key=lambda k: k.key_id)
    ]
    assert "cannot be decrypted" in " ".join(skipped)
    for k in (sealed, legacy):
        r = await keys.get(k.key_id)
        assert r is not None and r.value.secret == ""
        assert Sealed.from_dict(json.loads(r.value.sealed)).generation == 2
        # any box opens it (the generation travels with the seal): the same secret
        assert open_key(gen1, r.value).secret == k.secret
        assert (r.value.name, r.value.created) == (k.name, k.created)
    r = await keys.get(broken.key_id)
    assert r is not None and Sealed.from_dict(json.loads(r.value.sealed)).generation == 1


@dataclass(frozen=True)
class SeventhBucket:
    """A bucket record as the seventh session's nodes read it (strictly: unknown fields are
    refused)."""

    name: str
    created: float
    owner: str
    allow: dict[str, str] = field(default_factory=dict)


UPGRADE = [
    # (bucket written by this code, whether a seventh-session node still reads it)
    (Bucket("b", 1.0, "k", {"k": "owner"}), True),
    (Bucket("b", 1.0, "k", {"k": "owner"}, public_read=True), False),
    (Bucket("b", 1.0, "k", {"k": "owner"}, lifecycle="[]"), False),
    (Bucket("b", 1.0, "k", {"k": "owner"}, cors="[]"), False),
]


@pytest.mark.parametrize(("bucket", "readable"), UPGRADE)
def test_buckets_using_no_new_feature_read_on_older_nodes(bucket: Bucket, readable: bool) -> None:
    """During a rolling upgrade, a node from before lifecycle, CORS and public-read buckets
    reads every bucket that uses none of them; one that does is refused there, naming the
    field."""
    written = BUCKETS.default_codec.encode(bucket)
    older = DataclassCodec(SeventhBucket, kind="s3_bucket")
    if readable:
        assert older.decode(written) == SeventhBucket("b", 1.0, "k", {"k": "owner"})
    else:
        with pytest.raises(ValueError, match="unknown field"):
            older.decode(written)
    assert BUCKETS.default_codec.decode(written) == bucket
