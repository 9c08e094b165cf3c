"""The store proxy: what a node may read and write (a table of refusals naming the key and
rule), and the object store's etcd users (layout, registry, IAM) running unchanged over
``ProxyStore`` -> JSON -> ``serve`` -> ``MemoryStore``."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import pytest

from cloudless.lib.clock import SystemClock
from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.layout_store import LayoutStore
from cloudless.objectstore.members import NODES, StorageNode
from cloudless.objectstore.s3.iam import KEYS, Iam, open_key, reveal
from cloudless.objectstore.store_proxy import (
    ProxyRefused,
    ProxyStore,
    check,
    decode,
    encode,
    serve,
)
from cloudless.security.secretbox import SecretBox, SecretUnreadable
from cloudless.store.errors import InvalidRequest
from cloudless.store.memory import MemoryStore
from cloudless.store.types import Get, GetResult

REFUSED = [
    # (id, request from node "n1", words the refusal must contain)
    ("read elsewhere", {"op": "get", "key": "/cloudless/nodes/n1"}, "nodes may read only"),
    ("list elsewhere", {"op": "list", "key": "/cloudless/"}, "'/cloudless/': nodes may read"),
    ("mint a key", {"op": "txn", "compares": [], "success": [
        {"put": "/cloudless/s3-keys/X", "value": ""}], "failure": []},
     "node n1 may write only"),
    ("another's registration", {"op": "txn", "compares": [], "success": [
        {"put": "/cloudless/objectstore-nodes/n2", "value": ""}], "failure": []},
     "'/cloudless/objectstore-nodes/n2'"),
    ("delete by prefix", {"op": "txn", "compares": [], "success": [
        {"delete": "/cloudless/s3-buckets/", "prefix": True}], "failure": []},
     "may not delete by prefix"),
    ("compare elsewhere", {"op": "txn", "compares": [
        {"key": "/cloudless/workloads/x", "target": "version", "op": "==", "i": 0}],
        "success": [], "failure": []}, "'/cloudless/workloads/x'"),
    ("unknown op", {"op": "watch", "key": "/cloudless/objectstore/"}, "op 'watch'"),
    ("not an object", [], "op None"),
]  # fmt: skip


@pytest.mark.parametrize("request_,words", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refusals_name_the_key_and_rule(request_: Any, words: str) -> None:
    with pytest.raises(ProxyRefused) as e:
        check("n1", request_)
    assert words in str(e.value)


ALLOWED = [
    {"op": "get", "key": "/cloudless/objectstore/layout"},
    {"op": "list", "key": "/cloudless/s3-keys/"},
    {"op": "txn", "compares": [], "success": [
        {"put": "/cloudless/objectstore-nodes/n1", "value": ""},
        {"put": "/cloudless/objectstore/layout", "value": ""},
        {"delete": "/cloudless/s3-buckets/photos", "prefix": False}], "failure": []},
]  # fmt: skip


@pytest.mark.parametrize("request_", ALLOWED)
def test_allowed(request_: Any) -> None:
    check("n1", request_)


def proxied(backing: MemoryStore, node: str) -> ProxyStore:
    async def send(request: Any) -> Any:
        # through JSON both ways, as over gRPC
        return decode(encode(await serve(backing, node, decode(encode(request)))))

    return ProxyStore(send)


async def test_layout_registry_and_iam_run_over_the_proxy() -> None:
    clock = SystemClock()
    backing = MemoryStore(clock)
    node = proxied(backing, "n1")
    layouts = LayoutStore(node)
    await layouts.stage_replication(1)
    hist, plan = await layouts.apply_change({"n1": NodeRole("z1", 1 << 30)}, None, 0)
    assert hist.version() == 1 and plan.counts() == {"n1": 256}
    assert (await LayoutStore(backing).show()) == hist  # the same record, seen directly
    acked = await layouts.ack_synced("n1", 1)
    assert acked.synced["n1"] == 1

    reg = NODES.bind(node)
    await reg.put("n1", StorageNode("n1", "z1", 1, "https://a:1", "http://a:2", 7))
    got = await NODES.bind(backing).get("n1")
    assert got is not None and got.value.beat == 7
    with pytest.raises(Exception, match="may write only"):
        await reg.put("n2", StorageNode("n2", "z1", 1, "https://b:1", "", 1))

    admin_key = await Iam(backing, clock).create_key("admin")  # keys: created on etcd only
    iam = Iam(node, clock)
    assert await iam.key(admin_key.key_id) == admin_key
    b = await iam.create_bucket("photos", admin_key.key_id)  # S3 CreateBucket from a node
    assert (await Iam(backing, clock).bucket("photos")) == b
    assert [x.name for x in await iam.visible_buckets(admin_key.key_id)] == ["photos"]
    await iam.delete_bucket("photos")
    assert await Iam(backing, clock).bucket("photos") is None
    with pytest.raises(InvalidRequest, match="watches are not proxied"):
        node.watch("/cloudless/objectstore/")
    await backing.close()


async def test_access_keys_are_sealed_in_the_store_and_opened_for_nodes() -> None:
    """A key created with the cluster's box holds no secret in the store; a node reading it
    through the proxy (get, list, txn get) gets the secret; a seal copied onto another key id
    or made by another cluster does not open (the node then sees it sealed: no secret)."""
    clock = SystemClock()
    backing = MemoryStore(clock)
    box = SecretBox(lambda g: bytes([g]) * 32)
    key = await Iam(backing, clock).create_key("alice", box)
    raw = await backing.get(KEYS.prefix + key.key_id)
    assert raw is not None and key.secret.encode() not in raw.value
    stored = await Iam(backing, clock).key(key.key_id)
    assert stored is not None and stored.secret == "" and stored.sealed

    async def send(request: Any) -> Any:
        answer = await serve(backing, "n1", decode(encode(request)), partial(reveal, box))
        return decode(encode(answer))

    node = ProxyStore(send)
    assert await Iam(node, clock).key(key.key_id) == key  # get: secret opened, seal dropped
    listed = await KEYS.bind(node).list()
    assert [r.value.secret for r in listed.records] == [key.secret]
    res = await node.txn((), [Get(KEYS.prefix + key.key_id)])
    got = res.results[0]
    assert isinstance(got, GetResult) and key.secret.encode() in got.kvs[0].value

    # the same seal under another key id: AES-GCM's associated data names the key id
    moved = replace(stored, key_id="CLMOVED")
    await KEYS.bind(backing).put("CLMOVED", moved)
    assert (await Iam(node, clock).key("CLMOVED")) == moved  # still sealed, no secret
    other = SecretBox(lambda g: bytes([g + 1]) * 32)  # another cluster's key
    with pytest.raises(SecretUnreadable):
        open_key(other, stored)
    assert open_key(box, key) == key  # an unsealed (older) record reads as it is
    await backing.close()
